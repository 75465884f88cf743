"""Identity tracks: detections of consecutive frames linked into faces that persist.

:func:`build_tracks` links per-frame detections (deepfake_cli.faces.detectors) into identities,
most important first (the first is the "main" face); :func:`detect_sparse` runs the detector
on every n-th frame only and interpolates the tracks between. `crop` and `predict` call them
through the face rule they share (deepfake_cli.faces.track_rule.face_tracks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from deepfake_cli.faces.detectors import Detection, FaceDetector, box_area

# (frame s, its detection, frame t, a detection there) -> whether the latter may continue the
# track of the former (identity.IdentityCheck: not across a hard cut to another person)
SameIdentity = Callable[[int, Detection, int, Detection], bool]


@dataclass
class _Track:
    """An identity being built: its detections by frame position."""

    dets: dict[int, Detection] = field(default_factory=dict)

    def last_positions(self) -> list[int]:
        return list(self.dets)[-2:]  # frames are added in increasing order

    def predict(self, t: int) -> np.ndarray:
        """Box expected at frame ``t``: last box moved at the last observed velocity."""
        pos = self.last_positions()
        last = self.dets[pos[-1]].box.astype(np.float64)
        if len(pos) < 2:
            return last
        prev = self.dets[pos[0]].box.astype(np.float64)
        velocity = (last - prev) / (pos[1] - pos[0])
        return last + velocity * (t - pos[1])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, float(iw)) * max(0.0, float(ih))
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def _affinity(pred: np.ndarray, det: Detection, iou_min: float, max_scale: float,
              max_center: float) -> float | None:
    """How well ``det`` continues a track predicted at ``pred``; None when it cannot.

    Gates: the face side may change by at most ``max_scale`` times, and either the IoU
    is at least ``iou_min`` or the centres are within ``max_center`` face sides.
    """
    pred_area, det_area = box_area(pred), det.area
    if pred_area <= 0 or det_area <= 0:
        return None
    ratio = np.sqrt(det_area / pred_area)
    if not 1.0 / max_scale <= ratio <= max_scale:
        return None
    iou = _iou(pred, det.box)
    shift = np.hypot(*((pred[:2] + pred[2:]) / 2 - (det.box[:2] + det.box[2:]) / 2))
    dist = shift / np.sqrt(pred_area)
    if iou < iou_min and dist > max_center:
        return None
    return iou - 0.01 * dist  # rank by IoU; centre distance breaks ties


def _match(tracks: list[_Track], active: list[int], dets: list[Detection], t: int,
           iou_min: float, max_scale: float, max_center: float,
           same_identity: SameIdentity | None = None) -> dict[int, int]:
    """Greedy one-to-one assignment {detection index: track index} for frame ``t``."""
    pairs = []
    for ti in active:
        pred = tracks[ti].predict(t)
        last = max(tracks[ti].dets)
        for di, det in enumerate(dets):
            aff = _affinity(pred, det, iou_min, max_scale, max_center)
            if aff is not None and (same_identity is None or same_identity(last, tracks[ti].dets[last], t, det)):
                pairs.append((aff, ti, di))
    pairs.sort(key=lambda p: -p[0])
    assigned: dict[int, int] = {}
    used_tracks: set[int] = set()
    for _, ti, di in pairs:
        if di not in assigned and ti not in used_tracks:
            assigned[di] = ti
            used_tracks.add(ti)
    return assigned


def _importance(track: _Track, frame_areas: list[float] | None) -> float:
    """Sum over frames of face area (relative to the frame when known) times score."""
    total = 0.0
    for t, det in track.dets.items():
        area = det.area / frame_areas[t] if frame_areas else det.area
        total += area * det.score
    return total


def build_tracks(
    detections: list[list[Detection]],
    iou_min: float = 0.3,
    max_gap: int = 3,
    max_scale: float = 1.5,
    max_center: float = 1.0,
    frame_shapes: Sequence[Sequence[int]] | None = None,
    same_identity: SameIdentity | None = None,
) -> list[list[Detection | None]]:
    """Link detections into identity tracks, most important first.

    Greedy frame-by-frame matching against each live track's predicted box (constant
    velocity from its last two observations): IoU >= ``iou_min`` or centre shift within
    ``max_center`` face sides, face size within ``max_scale`` times. A track survives up
    to ``max_gap`` frames without a match. Importance = sum of box area x score (area as
    a fraction of the frame when ``frame_shapes`` is given). Each track is returned as a
    per-frame list holding its Detection or None.

    Without appearance cues, two faces of similar size that swap places between two
    sampled frames cannot be told apart; all other splices are gated out. ``same_identity``
    (identity.IdentityCheck) adds that cue: a pair it refuses is never linked.
    """
    n = len(detections)
    tracks: list[_Track] = []
    for t, dets in enumerate(detections):
        active = [i for i, tr in enumerate(tracks) if t - max(tr.dets) <= max_gap + 1]
        assigned = _match(tracks, active, dets, t, iou_min, max_scale, max_center, same_identity)
        for di, det in enumerate(dets):
            if di in assigned:
                tracks[assigned[di]].dets[t] = det
            else:
                tracks.append(_Track({t: det}))
    areas = _frame_areas(frame_shapes, n)
    ranked = sorted(tracks, key=lambda tr: -_importance(tr, areas))
    return [[tr.dets.get(t) for t in range(n)] for tr in ranked]


def _frame_areas(frame_shapes, n: int) -> list[float] | None:
    if frame_shapes is None:
        return None
    if len(frame_shapes) != n:
        raise ValueError(f"got {len(frame_shapes)} frame shapes for {n} frames")
    return [float(max(1, s[0] * s[1])) for s in frame_shapes]


# ------------------------------------------------------------------- sparse detection


def detect_sparse(detector: FaceDetector, frames: list[np.ndarray], every: int = 1,
                  identity: Callable[[list[np.ndarray]], SameIdentity] | None = None) -> list[list[Detection | None]]:
    """Tracks over all frames, detecting only on every ``every``-th frame (and the last).

    Between two detections of the same track, box and landmarks are interpolated linearly:
    faces move little between neighbouring frames, and detection dominates the cost of
    `predict`. ``every=1`` detects on every frame. ``identity`` makes the tracks' identity
    check from the frames detected on (e.g. ``lambda f: IdentityCheck(f, describer)``).
    """
    n = len(frames)
    keys = list(range(n)) if every <= 1 or n <= 2 else sorted(set(range(0, n, every)) | {n - 1})
    key_frames = [frames[k] for k in keys]
    key_tracks = build_tracks(detector.detect(key_frames), frame_shapes=[f.shape[:2] for f in key_frames],
                              same_identity=identity(key_frames) if identity is not None else None)
    if len(keys) == n:
        return key_tracks
    return [_interpolate(track, keys, n) for track in key_tracks]


def _interpolate(track: list[Detection | None], keys: list[int], n: int) -> list[Detection | None]:
    full: list[Detection | None] = [None] * n
    for (a, da), (b, db) in zip(zip(keys, track), zip(keys[1:], track[1:])):
        full[a] = da
        if da is None or db is None:
            continue
        for t in range(a + 1, b):
            w = (t - a) / (b - a)
            full[t] = Detection(box=((1 - w) * da.box + w * db.box).astype(np.float32),
                                landmarks=((1 - w) * da.landmarks + w * db.landmarks).astype(np.float32),
                                score=float(min(da.score, db.score)))
    full[keys[-1]] = track[-1]
    return full
