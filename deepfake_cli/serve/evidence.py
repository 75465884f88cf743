"""Which face tracks of a clip are scored, and what weakens the verdict drawn from them.

`predict` finds every face track of a clip; :func:`judge_tracks` decides which are worth
scoring (and says why the others are not), :func:`evidence_warnings` what makes the verdict
on the reported track weak evidence (:func:`sequence_warnings`: the part frame models share),
:func:`other_face_warnings` which other scored face would have called the clip otherwise, and
:func:`ensemble_warnings` how an ensemble's members' warnings are reported together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deepfake_cli.scoring.scorer import verdict

MIN_TRACK_FRACTION = 0.25  # a track seen in fewer of the sampled frames is a passer-by or a false detection
# A face less than this times the size of the largest one is a bystander, a face on a poster or
# a false detection: the CNN was trained on main faces, and an upscaled 30 px face says nothing.
MIN_RELATIVE_FACE_SIZE = 0.6
# A face at least this big (median box side, px) and seen in half the frames is scored even when
# smaller than that; under it, the verdict carries a warning (an upscaled face holds little detail).
MIN_USEFUL_FACE_SIDE = 64


def ensemble_warnings(names: list[str], warnings: list[list[str]]) -> list[str]:
    """The members' warnings: one every member gave once, as it is; the others named by member."""
    shared = [w for w in warnings[0] if all(w in ws for ws in warnings[1:])]
    own = [f"{name}: {w}" for name, ws in zip(names, warnings) for w in ws if w not in shared]
    return shared + own


@dataclass
class TrackReport:
    """One face track of a clip: where it was, how much of it was seen, and whether it was scored."""

    track: int
    frames_seen: int
    face_side: float  # median side of its boxes, in frame pixels
    median_box: list[float]  # x1, y1, x2, y2 in frame pixels
    scored: bool
    reason: str = ""  # why it was not scored
    probability: float | None = None  # calibrated P(fake) when scored


def judge_tracks(tracks: list[list], n_frames: int, main: bool = False) -> list[TrackReport]:
    """Which face tracks are worth scoring, and why the others are not.

    A track is scored when it is seen in at least MIN_TRACK_FRACTION of the sampled frames and
    its face is either at least MIN_RELATIVE_FACE_SIZE times the largest one, or a usable face
    in its own right (MIN_USEFUL_FACE_SIDE px or more, in at least half the frames): a
    smaller deepfake beside a bigger real face is still scored. The first (most important)
    track is scored when no other is, and with ``main`` always: the face rule reports it
    (track_rule "main"), as `crop` stores it.
    """
    reports = []
    for i, t in enumerate(tracks):
        boxes = np.array([d.box for d in t if d is not None], np.float32)
        sides = [math.sqrt(d.area) for d in t if d is not None]
        reports.append(TrackReport(track=i, frames_seen=len(sides), face_side=round(float(np.median(sides)), 1),
                                   median_box=[round(float(v), 1) for v in np.median(boxes, axis=0)], scored=False))
    seen_enough = max(1, MIN_TRACK_FRACTION * n_frames)
    largest = max((r.face_side for r in reports if r.frames_seen >= seen_enough), default=0.0)
    for r in reports:
        if r.frames_seen < seen_enough:
            r.reason = f"seen in {r.frames_seen} of {n_frames} frames (under {MIN_TRACK_FRACTION:.0%})"
        elif r.face_side >= MIN_RELATIVE_FACE_SIZE * largest:
            r.scored = True
        elif r.face_side >= MIN_USEFUL_FACE_SIDE and r.frames_seen >= 0.5 * n_frames:
            r.scored = True
        else:
            r.reason = (f"{r.face_side:.0f} px, under {MIN_RELATIVE_FACE_SIZE}x the main face ({largest:.0f} px) "
                        f"and under {MIN_USEFUL_FACE_SIDE} px or seen in under half the frames")
    if reports and (main or not any(r.scored for r in reports)):
        reports[0].scored, reports[0].reason = True, ""  # the most important track, whatever it is
    return reports


def other_face_warnings(scored: list[TrackReport], reported: int, threshold: float) -> list[str]:
    """A note for each other scored face that falls on the other side of the threshold than
    the reported one (``scored[reported]``; every report's probability filled in)."""
    chosen = scored[reported]
    return [f"another face (track {r.track + 1}, {r.face_side:.0f} px) scores P(fake) = {r.probability:.3f}, "
            f"{verdict(r.probability, threshold)} at the threshold: the verdict is the main face's, the one the "
            "model was measured on"
            for r in scored if r is not chosen
            and verdict(r.probability, threshold) != verdict(chosen.probability, threshold)]


def evidence_warnings(report: TrackReport, n_frames: int, single_image: bool, seq_len: int) -> list[str]:
    """What makes the verdict on this (the reported) track weak evidence."""
    warnings = []
    if report.face_side < MIN_USEFUL_FACE_SIDE:
        warnings.append(f"small face ({report.face_side:.0f} px, under {MIN_USEFUL_FACE_SIDE} px): it was upscaled "
                        "for the model, so the verdict rests on little detail")
    if not single_image and report.frames_seen < 0.5 * n_frames:
        warnings.append(f"the face was found in only {report.frames_seen} of the {n_frames} sampled frames")
    return warnings + sequence_warnings(n_frames, single_image, seq_len)


def sequence_warnings(n_frames: int, single_image: bool, seq_len: int) -> list[str]:
    """What makes a clip weak evidence for the sequence stage, whatever the model looks at."""
    if single_image:
        return ["a single image: no motion or sequence evidence (the model was made for video clips)"]
    if n_frames < seq_len:
        return [f"only {n_frames} frames, fewer than the {seq_len} the model's sequence stage reads"]
    return []
