"""What a verdict judged: which frames of the clip, at what times, grouped into windows.

A window is a stretch of the clip the model scores as one piece: for a bundle that samples
consecutive frames (the CNN + BiLSTM of 25 frames), the run of scored frames; for a bundle
that samples frames spread over the whole clip (``sampling: uniform``, each face scored alone
and the clip's score aggregated from theirs), every scored frame. Each window gets its own
calibrated probability, on the scale of the clip's and of the threshold; the most suspicious
one is the window that drove a fake verdict, or would have.
"""

from __future__ import annotations

import numpy as np

from deepfake_cli.scoring.metrics import aggregate_video_scores


def seconds(frame: int, fps: float) -> float | None:
    """The time of a frame in seconds, or None when the clip's frame rate is unknown (an image)."""
    return round(frame / fps, 3) if fps and fps > 0 else None


def judged_windows(frame_indices: list[int], frame_scores: list[float], *, per_frame: bool, fps: float,
                   clip_probability: float, calibrate, aggregation: str = "mean") -> list[dict]:
    """The windows of a clip's reported face track (see the module doc): first and last frame,
    their times, the faces in it and its calibrated probability. ``per_frame``: every face is a
    window, scored as ``calibrate(its frame score)``; else one window of every face, scored
    ``clip_probability``. ``calibrate``: the bundle's temperature scaling."""
    if not frame_indices:
        return []
    if per_frame:
        groups = [[i] for i in range(len(frame_indices))]
    else:
        groups = [list(range(len(frame_indices)))]
    return [window([frame_indices[i] for i in members], fps,
                   calibrate(aggregate_video_scores([frame_scores[i] for i in members], aggregation))
                   if per_frame else clip_probability)
            for members in groups]


def window(frame_numbers, fps: float, probability: float) -> dict:
    """One window of a result: its first and last frame, their times, its faces and probability."""
    first, last = int(frame_numbers[0]), int(frame_numbers[-1])
    return {"first_frame": first, "last_frame": last, "start_s": seconds(first, fps), "end_s": seconds(last + 1, fps),
            "faces": len(frame_numbers), "probability": round(float(probability), 6)}


def most_suspicious(windows: list[dict]) -> int | None:
    """The index of the window with the highest probability (the first of equals), or None."""
    if not windows:
        return None
    return int(np.argmax([w["probability"] for w in windows]))


def describe_judged(result, info, frame_indices, config, scorer, spans: list | None = None) -> None:
    """Fill a PredictResult's account of what it judged: the clip's frames and length, the
    frame numbers of the reported faces, the windows and the most suspicious one. ``spans``:
    (frame numbers, probability) of each of several windows of consecutive frames."""
    fps = float(getattr(info, "fps", 0.0) or 0.0)
    result.clip_frames = int(getattr(info, "frame_count", 0) or 0)
    result.duration_s = round(result.clip_frames / fps, 3) if fps > 0 and result.clip_frames > 1 else None
    result.frame_indices = [int(i) for i in frame_indices]
    if spans:
        result.windows = [window(f, fps, p) for f, p in spans]
    else:
        per_frame = config.sampling == "uniform" and scorer.lstm is None
        result.windows = judged_windows(result.frame_indices, result.frame_scores, per_frame=per_frame, fps=fps,
                                        clip_probability=result.probability, calibrate=scorer.calibrated,
                                        aggregation=config.video_aggregation)
    result.most_suspicious_window = most_suspicious(result.windows)
