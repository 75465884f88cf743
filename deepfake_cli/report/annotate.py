"""What `predict --annotate` draws: the sampled frames with the scored face, its score and the verdict."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from deepfake_cli.errors import DfdError


VERDICT_COLOURS = {"fake": (0, 0, 255), "real": (0, 200, 0), "uncertain": (0, 165, 255)}  # BGR


class AnnotateError(DfdError):
    """The annotated video cannot be written."""


MAX_SIDE = 1280  # the annotated video's longer side: a 4K clip is shown at 1280 px
CRF = 23  # H.264 quality (lower: better)


def write_annotated(out: Path, frames: list[np.ndarray], faces, scores: np.ndarray, result,
                    fps: float, cams: np.ndarray | None = None, source: Path | None = None,
                    kept: np.ndarray | None = None) -> None:
    """An H.264 video (libx264 from the imageio-ffmpeg wheel, which browsers play) of the whole
    clip when ``source`` is given (every frame decoded again in order; ``kept``: the clip frame
    number of each of ``frames``), else of ``frames``: the judged face boxed in the colour of
    the clip's verdict on the frames that were judged, the CNN's score of each such face (a
    label and a grey bar: not on the threshold's scale), the verdict, and along the bottom a
    timeline of the judged windows, coloured by their calibrated probability against the
    threshold, with a cursor. Every label stays inside the frame; written whole or not at all."""
    import imageio_ffmpeg

    from deepfake_cli.data.video import iter_frames
    from deepfake_cli.files import atomic_write

    kept = np.arange(len(frames)) if kept is None else np.asarray(kept, np.int64)
    judged = {int(kept[int(p)]): i for i, p in enumerate(faces.frame_positions)}  # clip frame -> face
    total = max(int(getattr(result, "clip_frames", 0) or 0), int(kept.max()) + 1 if len(kept) else 1)
    height, width = frames[0].shape[:2]
    scale = min(1.0, MAX_SIDE / max(height, width))
    size = (max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2))  # even, for yuv420p
    stream = iter_frames(source) if source is not None else ((int(k), f) for k, f in zip(kept, frames))
    with atomic_write(out, suffix=".mp4") as tmp:
        writer = imageio_ffmpeg.write_frames(str(tmp), size, fps=max(1.0, fps or 1.0), codec="libx264",
                                             macro_block_size=2, output_params=["-crf", str(CRF), "-preset", "veryfast"],
                                             ffmpeg_log_level="error")
        try:
            writer.send(None)
            for index, frame in stream:
                image = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
                i = judged.get(index)
                if i is not None:
                    draw_face(image, faces, i, scores, result, cams)
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if image.shape[1::-1] != size else image
                draw_timeline(image, result, index, total)
                writer.send(np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))
        except Exception as exc:
            raise AnnotateError(f"cannot write {out}: {type(exc).__name__}: {exc}") from None
        finally:
            writer.close()


def draw_face(image: np.ndarray, faces, i: int, scores: np.ndarray, result, cams: np.ndarray | None) -> None:
    """The judged face's box (the verdict's colour), its score label and bar, and its map."""
    height, width = image.shape[:2]
    if cams is not None:
        image[:] = heatmap_on_frame(image, cams[i], faces.matrices[i])
    unit = max(1, min(width, height) // 360)  # line width and font scale grow with the frame
    colour = VERDICT_COLOURS.get(result.verdict, (255, 255, 255))
    x1, y1, x2, y2 = (int(v) for v in faces.boxes[i])
    cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2 * unit)
    put_label(image, f"face score {scores[i]:.2f}", x1, y1, colour, 0.5 * unit, unit)


def draw_timeline(image: np.ndarray, result, index: int, total: int) -> None:
    """The verdict at the top left; along the bottom the windows judged (red: at or above the
    threshold, green: below, orange: uncertain, grey: the rest of the clip) and a cursor."""
    height, width = image.shape[:2]
    unit = max(1, min(width, height) // 360)
    bar = max(6, height // 40)
    top = height - bar
    image[top:] = (image[top:] * 0.3 + np.array([90, 90, 90]) * 0.7).astype(np.uint8)
    for w in getattr(result, "windows", []):
        left = int(w["first_frame"] / total * width)
        right = max(left + 2, int((w["last_frame"] + 1) / total * width))
        if result.verdict == "uncertain" and len(result.windows) == 1:
            colour = VERDICT_COLOURS["uncertain"]
        else:
            colour = VERDICT_COLOURS["fake" if w["probability"] >= result.threshold else "real"]
        cv2.rectangle(image, (left, top), (min(width - 1, right), height - 1), colour, -1)
    cursor = int(index / max(1, total) * width)
    cv2.line(image, (cursor, top - bar // 2), (cursor, height - 1), (255, 255, 255), unit)
    put_label(image, f"clip: {result.verdict} P(fake)={result.probability:.2f} (threshold {result.threshold:.2f})",
              0, 0, VERDICT_COLOURS.get(result.verdict, (255, 255, 255)), 0.5 * unit, unit, above=False)


def put_label(image: np.ndarray, text: str, x: int, y: int, colour, scale: float, thickness: int,
              above: bool = True) -> tuple[int, int, int, int]:
    """Text on a dark box at (x, y) (above that point, or below it when there is no room),
    moved as needed to lie wholly inside the image; returns the box (left, top, right, bottom)."""
    height, width = image.shape[:2]
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, thickness * 2)
    box_h = h + base + 2 * pad
    top = y - box_h if above and y - box_h >= 0 else y
    top = int(min(max(0, top), max(0, height - box_h)))
    left = int(min(max(0, x), max(0, width - w - 2 * pad)))
    cv2.rectangle(image, (left, top), (left + w + 2 * pad, top + box_h), (0, 0, 0), -1)
    cv2.putText(image, text, (left + pad, top + pad + h), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness,
                cv2.LINE_AA)
    return left, top, left + w + 2 * pad, top + box_h


def heatmap_on_frame(image_bgr: np.ndarray, cam: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The frame with a face's CAM (crop pixels; ``matrix``: frame -> crop) blended onto the face."""
    from deepfake_cli.report.heatmaps import CAM_RANGE, diverging_colours

    height, width = image_bgr.shape[:2]
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float32))
    signed = np.clip(cam / CAM_RANGE, -1, 1).astype(np.float32)
    coloured = diverging_colours((signed + 1) / 2)[:, :, ::-1]  # BGR
    warped = cv2.warpAffine(np.ascontiguousarray(coloured), inverse, (width, height))
    # tinted in proportion to the push, as in the report: the background and neutral pixels stay as they are
    mask = cv2.warpAffine(0.6 * np.abs(signed), inverse, (width, height))[..., None]
    return (image_bgr * (1 - mask) + warped * mask).astype(np.uint8)
