"""Face crops (aligned or plain) of the identity tracks of sampled frames.

Pipeline: a detector (deepfake_cli.faces.detectors) finds the faces of the frames and
deepfake_cli.faces.tracking links them into identities over the frame sequence, most important
first (the first is the "main" face), by the face rule that `crop` and `predict` share
(deepfake_cli.faces.track_rule: detection stride, identity check); :func:`faces_from_track` cuts
one crop per frame of a track, either aligned on the 5 landmarks (:func:`align_face`) or as a
plain square crop (:func:`crop_face`). :func:`extract_faces` does this for the main face
(`crop`); `predict` crops every track it scores. Crops, and every model input made from them,
are resized by :func:`resize_face`.

Crop geometry, shared by both crop kinds: a crop of ``size`` pixels holds a central
"face square" of ``size / (1 + 2 * margin)`` pixels, plus ``margin`` times that square
of context on each side. For :func:`crop_face` the face square is the detection box's
longer side; for :func:`align_face` it is the 112x112 frame of the ArcFace template.
Whatever lies outside the image is filled with zeros (black), never stretched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from deepfake_cli.faces.alignment import inner_size, similarity_matrix
from deepfake_cli.faces.detectors import Detection, FaceDetector
from deepfake_cli.faces.identity import FaceDescriber
from deepfake_cli.faces.track_rule import face_tracks

@dataclass(frozen=True, eq=False)
class FaceTrackResult:
    """Crops of one identity over a frame sequence (n = frames where it was found)."""

    crops: np.ndarray  # (n, S, S, 3) uint8 RGB
    frame_positions: np.ndarray  # (n,) int64 indices into the input frames
    boxes: np.ndarray  # (n, 4) float32
    landmarks: np.ndarray  # (n, 5, 2) float32
    scores: np.ndarray  # (n,) float32
    track_ids: np.ndarray  # (n,) int64, rank of the track in build_tracks order
    missing_positions: list[int] = field(default_factory=list)
    n_tracks: int = 0
    matrices: np.ndarray | None = None  # (n, 2, 3) float32: frame pixels -> crop pixels


# ------------------------------------------------------------------------------- crops


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 160,
               margin: float = 0.2) -> np.ndarray:
    """(size, size, 3) uint8 face warped so its landmarks sit on :func:`template_points`.

    Outside the image is black (BORDER_CONSTANT 0), like :func:`crop_face`. When the face
    is shrunk, it is warped at about its native resolution (at most 16x ``size``) and
    then reduced with INTER_AREA, to avoid aliasing.
    """
    matrix = similarity_matrix(landmarks, size, margin)
    scale = float(np.hypot(matrix[0, 0], matrix[0, 1]))
    work = int(min(16 * size, np.ceil(size / scale))) if scale < 1.0 else size
    if work > size:
        matrix = matrix * (work / size)
    out = cv2.warpAffine(image, matrix, (work, work), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return resize_face(out, size)


def crop_face(image: np.ndarray, box: np.ndarray, size: int = 160,
              margin: float = 0.2) -> np.ndarray:
    """(size, size, 3) uint8 square crop centred on ``box``, side = longer box side x
    (1 + 2 margin); zero padded where it leaves the image, scaled isotropically."""
    left, top, side_px = _crop_window(box, size, margin)
    return resize_face(_padded_window(image, left, top, side_px), size)


def _crop_window(box: np.ndarray, size: int, margin: float) -> tuple[int, int, int]:
    """(left, top, side) in frame pixels of the square that :func:`crop_face` cuts."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box).reshape(4))
    side = max(x2 - x1, y2 - y1, 1.0) * size / inner_size(size, margin)
    side_px = max(1, int(round(side)))
    left = int(round((x1 + x2) / 2 - side_px / 2))
    top = int(round((y1 + y2) / 2 - side_px / 2))
    return left, top, side_px


def crop_matrix(box: np.ndarray, size: int = 160, margin: float = 0.2) -> np.ndarray:
    """(2, 3) map from frame pixels to the pixels of :func:`crop_face`'s crop."""
    left, top, side = _crop_window(box, size, margin)
    k = size / side
    return np.array([[k, 0.0, -left * k], [0.0, k, -top * k]])


def _padded_window(image: np.ndarray, left: int, top: int, side: int) -> np.ndarray:
    """image[top:top+side, left:left+side] with zeros where the window leaves the image."""
    out = np.zeros((side, side) + image.shape[2:], dtype=image.dtype)
    h, w = image.shape[:2]
    sx0, sy0 = max(0, left), max(0, top)
    sx1, sy1 = min(w, left + side), min(h, top + side)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = image[sy0:sy1, sx0:sx1]
    return out


def resize_face(image: np.ndarray, size: int) -> np.ndarray:
    """Square image to (size, size): INTER_AREA to shrink, INTER_CUBIC to enlarge.

    The one resize of dfd: crops are made with it, and so is every model input, in training
    and in serving (deepfake_cli.scoring.scorer.model_input). An image of that size comes back as is.
    """
    if image.shape[0] == size and image.shape[1] == size:
        return image
    interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=interp)


# --------------------------------------------------------------------------- extraction


def extract_faces(
    frames: list[np.ndarray],
    detector: FaceDetector,
    size: int = 160,
    align: bool = True,
    margin: float = 0.2,
    every: int = 1,
    identity: bool = False,
    describer: FaceDescriber | None = None,
) -> FaceTrackResult:
    """Detect, track and crop the main face of ``frames`` (track_rule.face_tracks, as `predict` finds them).

    ``every`` > 1 runs the detector on every ``every``-th frame (and the last) only and
    interpolates the tracks between: for consecutive frames only. ``every=1`` detects on
    every frame. ``identity``: a track goes on across a hard cut with the same person only.
    """
    tracks = face_tracks(detector, frames, every, identity, describer)
    main = tracks[0] if tracks else [None] * len(frames)
    return faces_from_track(frames, main, track_id=0, n_tracks=len(tracks),
                            size=size, align=align, margin=margin)


def faces_from_track(
    frames: list[np.ndarray],
    track: list[Detection | None],
    track_id: int = 0,
    n_tracks: int = 1,
    size: int = 160,
    align: bool = True,
    margin: float = 0.2,
) -> FaceTrackResult:
    """Crops of one track (from tracking.build_tracks); aligned crops fall back to a
    plain crop when the landmarks are degenerate."""
    if len(track) != len(frames):
        raise ValueError(f"track covers {len(track)} frames, got {len(frames)} frames")
    found = [i for i, d in enumerate(track) if d is not None]
    dets = [track[i] for i in found]
    made = [_face_crop(frames[i], d, size, align, margin) for i, d in zip(found, dets)]
    crops = [crop for crop, _ in made]
    return FaceTrackResult(
        crops=np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8),
        frame_positions=np.array(found, dtype=np.int64),
        boxes=np.array([d.box for d in dets], np.float32).reshape(-1, 4),
        landmarks=np.array([d.landmarks for d in dets], np.float32).reshape(-1, 5, 2),
        scores=np.array([d.score for d in dets], np.float32),
        track_ids=np.full(len(found), track_id, dtype=np.int64),
        missing_positions=[i for i, d in enumerate(track) if d is None],
        n_tracks=n_tracks,
        matrices=np.array([m for _, m in made], np.float32).reshape(-1, 2, 3),
    )


def _face_crop(frame: np.ndarray, det: Detection, size: int, align: bool,
               margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The crop and its (2, 3) frame -> crop matrix."""
    if align:
        try:
            return align_face(frame, det.landmarks, size, margin), similarity_matrix(det.landmarks, size, margin)
        except ValueError:
            pass
    return crop_face(frame, det.box, size, margin), crop_matrix(det.box, size, margin)
