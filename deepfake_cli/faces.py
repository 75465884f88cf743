"""Face detection, identity tracking and face crops (aligned or plain) for sampled frames.

Pipeline: a :class:`FaceDetector` finds the faces of the frames (`crop`: every frame;
`predict`: every n-th, :func:`detect_sparse` interpolating between), :func:`build_tracks`
links them into identities over the frame sequence, most important first (the first is the
"main" face), and :func:`faces_from_track` cuts one crop per frame of a track, either aligned
on the 5 landmarks (:func:`align_face`) or as a plain square crop (:func:`crop_face`).
:func:`extract_faces` does this for the main face (`crop`); `predict` crops every track it
scores. Crops, and every model input made from them, are resized by :func:`resize_face`.

Crop geometry, shared by both crop kinds: a crop of ``size`` pixels holds a central
"face square" of ``size / (1 + 2 * margin)`` pixels, plus ``margin`` times that square
of context on each side. For :func:`crop_face` the face square is the detection box's
longer side; for :func:`align_face` it is the 112x112 frame of the ArcFace template.
Whatever lies outside the image is filled with zeros (black), never stretched.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

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
class Detection:
    """One detected face. Compared by identity (it holds arrays).

    ``box`` is (4,) float32 x1, y1, x2, y2 and ``landmarks`` is (5, 2) float32 (left eye,
    right eye, nose, mouth left, mouth right), both in full-frame pixels. Boxes are not
    clipped to the frame.
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float

    @property
    def area(self) -> float:
        """Box area in pixels."""
        return _box_area(self.box)


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


# ---------------------------------------------------------------------------- detection


def resolve_device(device: str) -> str:
    """Map "auto" | "cpu" | "cuda" | "cuda:N" to a torch device string."""
    import torch

    name = str(device).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} was asked for but CUDA is not available "
                "(no GPU, or torch was built without CUDA); use --device cpu or auto"
            )
        return name
    raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu' or 'cuda'")


class FaceDetector(abc.ABC):
    """Finds faces in RGB frames; subclasses wrap one detector (MTCNN here, dlib in detectors.py)."""

    name: str = "base"

    @abc.abstractmethod
    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Per frame (RGB uint8, sizes may differ), the detections sorted by score desc."""


class MTCNNDetector(FaceDetector):
    """facenet-pytorch MTCNN, run on a downscaled copy of each frame.

    Frames are shrunk (INTER_AREA) so that their longest side is at most
    ``detect_max_side``; boxes and landmarks are mapped back to full resolution. The
    smallest face searched for is ``min_face_frac`` of the downscaled short side (at
    least 20 px, MTCNN's default). Frames of equal size are batched, ``batch_size`` at a
    time.
    """

    name = "mtcnn"

    def __init__(
        self,
        device: str = "auto",
        detect_max_side: int = 640,
        min_face_frac: float = 0.05,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        batch_size: int = 16,
    ):
        import torch
        from facenet_pytorch import MTCNN

        if detect_max_side < 32:
            raise ValueError(f"detect_max_side must be >= 32, got {detect_max_side}")
        if not 0.0 <= min_face_frac < 1.0:
            raise ValueError(f"min_face_frac must be in [0, 1), got {min_face_frac}")
        self.device = resolve_device(device)
        self.detect_max_side = int(detect_max_side)
        self.min_face_frac = float(min_face_frac)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.batch_size = max(1, int(batch_size))
        self._mtcnn = MTCNN(
            keep_all=True,
            select_largest=False,
            thresholds=list(self.thresholds),
            device=torch.device(self.device),
        )
        self._mtcnn.eval()

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Detect faces in every frame; see :meth:`FaceDetector.detect`."""
        results: list[list[Detection]] = [[] for _ in frames]
        for shape, positions in _group_by_shape(frames).items():
            for start in range(0, len(positions), self.batch_size):
                chunk = positions[start : start + self.batch_size]
                found = self._detect_same_size([frames[i] for i in chunk], shape)
                for pos, dets in zip(chunk, found):
                    results[pos] = dets
        return results

    def _detect_same_size(
        self, frames: list[np.ndarray], shape: tuple[int, int]
    ) -> list[list[Detection]]:
        """One MTCNN call on equally sized frames."""
        small_hw = downscaled_size(shape, self.detect_max_side)
        batch = np.stack([downscale(f, small_hw) for f in frames])
        self._mtcnn.min_face_size = max(20, int(round(self.min_face_frac * min(small_hw))))
        boxes, probs, points = self._mtcnn.detect(batch, landmarks=True)
        sx = shape[1] / small_hw[1]
        sy = shape[0] / small_hw[0]
        return [
            _to_detections(b, p, l, sx, sy) for b, p, l in zip(boxes, probs, points)
        ]


def _group_by_shape(frames: list[np.ndarray]) -> dict[tuple[int, int], list[int]]:
    """Frame positions grouped by (height, width), after checking frames are RGB uint8."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, frame in enumerate(frames):
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(
                f"frame {i}: expected an RGB uint8 array (H, W, 3), "
                f"got {frame.dtype} {frame.shape}"
            )
        groups.setdefault((frame.shape[0], frame.shape[1]), []).append(i)
    return groups


def downscaled_size(shape: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(h, w) with the longest side at most ``max_side``, aspect kept; never upscaled."""
    h, w = shape
    scale = min(1.0, max_side / max(h, w))
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def downscale(frame: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize ``frame`` to (h, w) with INTER_AREA (no copy when the size is unchanged)."""
    if frame.shape[:2] == hw:
        return frame
    return cv2.resize(frame, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


def _to_detections(boxes, probs, points, sx: float, sy: float) -> list[Detection]:
    """MTCNN output of one frame -> Detections in full-frame pixels, by score desc."""
    if boxes is None or len(boxes) == 0:
        return []
    scale = np.array([sx, sy], dtype=np.float64)
    dets = [
        Detection(
            box=(np.asarray(b, np.float64).reshape(2, 2) * scale).reshape(4).astype(np.float32),
            landmarks=(np.asarray(l, np.float64) * scale).astype(np.float32),
            score=float(p),
        )
        for b, p, l in zip(boxes, probs, points)
    ]
    return sorted(dets, key=lambda d: -d.score)


# ----------------------------------------------------------------------------- tracking


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


def _box_area(box: np.ndarray) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, float(iw)) * max(0.0, float(ih))
    union = _box_area(a) + _box_area(b) - inter
    return inter / union if union > 0 else 0.0


def _affinity(pred: np.ndarray, det: Detection, iou_min: float, max_scale: float,
              max_center: float) -> float | None:
    """How well ``det`` continues a track predicted at ``pred``; None when it cannot.

    Gates: the face side may change by at most ``max_scale`` times, and either the IoU
    is at least ``iou_min`` or the centres are within ``max_center`` face sides.
    """
    pred_area, det_area = _box_area(pred), det.area
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
           iou_min: float, max_scale: float, max_center: float) -> dict[int, int]:
    """Greedy one-to-one assignment {detection index: track index} for frame ``t``."""
    pairs = []
    for ti in active:
        pred = tracks[ti].predict(t)
        for di, det in enumerate(dets):
            aff = _affinity(pred, det, iou_min, max_scale, max_center)
            if aff is not None:
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
) -> list[list[Detection | None]]:
    """Link detections into identity tracks, most important first.

    Greedy frame-by-frame matching against each live track's predicted box (constant
    velocity from its last two observations): IoU >= ``iou_min`` or centre shift within
    ``max_center`` face sides, face size within ``max_scale`` times. A track survives up
    to ``max_gap`` frames without a match. Importance = sum of box area x score (area as
    a fraction of the frame when ``frame_shapes`` is given). Each track is returned as a
    per-frame list holding its Detection or None.

    Without appearance cues, two faces of similar size that swap places between two
    sampled frames cannot be told apart; all other splices are gated out.
    """
    n = len(detections)
    tracks: list[_Track] = []
    for t, dets in enumerate(detections):
        active = [i for i, tr in enumerate(tracks) if t - max(tr.dets) <= max_gap + 1]
        assigned = _match(tracks, active, dets, t, iou_min, max_scale, max_center)
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


def track_main_face(
    detections: list[list[Detection]],
    frame_shapes: Sequence[Sequence[int]] | None = None,
    iou_min: float = 0.3,
) -> tuple[list[Detection | None], list[int]]:
    """The main identity (largest sum of area x score): per frame its Detection or None,
    and per frame its track id (0, the rank in :func:`build_tracks` order) or -1."""
    tracks = build_tracks(detections, iou_min=iou_min, frame_shapes=frame_shapes)
    if not tracks:
        return [None] * len(detections), [-1] * len(detections)
    main = tracks[0]
    return main, [-1 if d is None else 0 for d in main]


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


# ------------------------------------------------------------------- sparse detection


def detect_sparse(detector: FaceDetector, frames: list[np.ndarray], every: int = 1) -> list[list[Detection | None]]:
    """Tracks over all frames, detecting only on every ``every``-th frame (and the last).

    Between two detections of the same track, box and landmarks are interpolated linearly:
    faces move little between neighbouring frames, and detection dominates the cost of
    `predict`. ``every=1`` detects on every frame.
    """
    n = len(frames)
    if every <= 1 or n <= 2:
        return build_tracks(detector.detect(frames), frame_shapes=[f.shape[:2] for f in frames])
    keys = sorted(set(range(0, n, every)) | {n - 1})
    key_tracks = build_tracks(detector.detect([frames[k] for k in keys]),
                              frame_shapes=[frames[k].shape[:2] for k in keys])
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
