"""Face crops (aligned or plain) of the identity tracks of sampled frames.

Pipeline: a detector (deepfake_cli.detectors) finds the faces of the frames (`crop`: every
frame; `predict`: every n-th, deepfake_cli.tracking.detect_sparse interpolating between),
deepfake_cli.tracking.build_tracks links them into identities over the frame sequence, most
important first (the first is the "main" face), and :func:`faces_from_track` cuts one crop per
frame of a track, either aligned on the 5 landmarks (:func:`align_face`) or as a plain square
crop (:func:`crop_face`). :func:`extract_faces` does this for the main face (`crop`); `predict`
crops every track it scores. Crops, and every model input made from them, are resized by
:func:`resize_face`.

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

from deepfake_cli.detectors import Detection, FaceDetector
from deepfake_cli.tracking import build_tracks

# The standard ArcFace 5-point template on a 112x112 crop: left eye, right eye, nose,
# left mouth corner, right mouth corner ("left" = image left).
ARCFACE_5PTS = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
ARCFACE_SIZE = 112.0


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


# ------------------------------------------------------------------------------- crops


def inner_size(size: int, margin: float) -> float:
    """Side of the central face square inside a ``size`` crop with ``margin``."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    return size / (1.0 + 2.0 * margin)


def template_points(size: int = 160, margin: float = 0.2) -> np.ndarray:
    """ARCFACE_5PTS placed in a ``size`` crop: the 112 template fills the face square."""
    inner = inner_size(size, margin)
    return (ARCFACE_5PTS / ARCFACE_SIZE * inner + margin * inner).astype(np.float32)


def similarity_matrix(landmarks: np.ndarray, size: int = 160, margin: float = 0.2) -> np.ndarray:
    """(2, 3) least-squares similarity transform (Umeyama) of the 5 landmarks onto
    :func:`template_points`. Raises ValueError for degenerate landmarks."""
    src = np.asarray(landmarks, np.float64).reshape(5, 2)
    dst = template_points(size, margin).astype(np.float64)
    if not np.all(np.isfinite(src)):
        raise ValueError("landmarks are not finite")
    src_c, dst_c = src - src.mean(0), dst - dst.mean(0)
    var = (src_c**2).sum() / len(src)
    if var < 1e-6:
        raise ValueError("landmarks are degenerate (all at one point)")
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst.mean(0) - scale * rot @ src.mean(0)
    return matrix


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
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box).reshape(4))
    side = max(x2 - x1, y2 - y1, 1.0) * size / inner_size(size, margin)
    side_px = max(1, int(round(side)))
    left = int(round((x1 + x2) / 2 - side_px / 2))
    top = int(round((y1 + y2) / 2 - side_px / 2))
    return resize_face(_padded_window(image, left, top, side_px), size)


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
    and in serving (deepfake_cli.scoring.model_input). An image of that size comes back as is.
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
) -> FaceTrackResult:
    """Detect, track and crop the main face of ``frames``."""
    detections = detector.detect(frames)
    tracks = build_tracks(detections, frame_shapes=[f.shape[:2] for f in frames])
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
    """Crops of one track (from :func:`build_tracks`); aligned crops fall back to a
    plain crop when the landmarks are degenerate."""
    if len(track) != len(frames):
        raise ValueError(f"track covers {len(track)} frames, got {len(frames)} frames")
    found = [i for i, d in enumerate(track) if d is not None]
    dets = [track[i] for i in found]
    crops = [_face_crop(frames[i], d, size, align, margin) for i, d in zip(found, dets)]
    return FaceTrackResult(
        crops=np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8),
        frame_positions=np.array(found, dtype=np.int64),
        boxes=np.array([d.box for d in dets], np.float32).reshape(-1, 4),
        landmarks=np.array([d.landmarks for d in dets], np.float32).reshape(-1, 5, 2),
        scores=np.array([d.score for d in dets], np.float32),
        track_ids=np.full(len(found), track_id, dtype=np.int64),
        missing_positions=[i for i, d in enumerate(track) if d is None],
        n_tracks=n_tracks,
    )


def _face_crop(frame: np.ndarray, det: Detection, size: int, align: bool,
               margin: float) -> np.ndarray:
    if align:
        try:
            return align_face(frame, det.landmarks, size, margin)
        except ValueError:
            pass
    return crop_face(frame, det.box, size, margin)
