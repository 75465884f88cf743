"""Face detectors by name: ``dfd crop --detector mtcnn|dlib`` and the bundle's ``face.detector``.

* ``mtcnn`` (default): facenet-pytorch MTCNN, boxes and 5 landmarks (MTCNNDetector below).
* ``dlib``: dlib's HOG + linear SVM frontal-face detector. It gives boxes only; the 5 points
  the alignment needs (eye centres, nose tip, mouth corners) come from the 68 landmarks of
  dlib's shape predictor, which was trained on exactly these boxes. Frontal faces only
  (about ±30° of yaw); CPU only; the frame is upsampled once, so faces down to about 40 px
  (at detection scale) are found.

OpenCV's Haar cascade is not offered: OpenCV 5 (the pinned opencv-python-headless) no longer
ships ``cv2.CascadeClassifier`` or the cascade files in ``cv2.data``.
"""


from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from deepfake_cli.errors import MissingExtraError, OptionsError
from deepfake_cli.faces.landmarks import Landmarker, five_points

ENGINES = ("torch", "onnx")  # what runs MTCNN's networks (MTCNNDetector)


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
        return box_area(self.box)


def box_area(box: np.ndarray) -> float:
    """Area in pixels of an x1, y1, x2, y2 box (0 when degenerate)."""
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def resolve_device(device: str) -> str:
    """Map "auto" | "cpu" | "cuda" | "cuda:N" to a torch device string ("cpu" imports no torch)."""
    name = str(device).strip().lower()
    if name == "cpu" or (name == "auto" and not _gpu_device_nodes()):
        return "cpu"  # without importing torch (3-4 s): a machine with no GPU device node has no GPU for it
    if name != "auto" and name != "cuda" and not name.startswith("cuda:"):
        raise OptionsError(f"unknown device {device!r}; expected 'auto', 'cpu' or 'cuda'")
    if name == "auto":  # the plain install has no torch: MTCNN runs on onnxruntime, on the CPU
        try:
            MissingExtraError.check("--device cuda", ("torch",))
        except MissingExtraError:
            return "cpu"
    MissingExtraError.check(f"--device {device}", ("torch",))
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise OptionsError(
                f"device {device!r} was asked for but CUDA is not available "
                "(no GPU, or torch was built without CUDA); use --device cpu or auto"
            )
        return name
    raise OptionsError(f"unknown device {device!r}; expected 'auto', 'cpu' or 'cuda'")


def _gpu_device_nodes() -> bool:
    """Whether this machine has an NVIDIA (/dev/nvidia0...) or AMD ROCm (/dev/kfd) device node."""
    dev = Path("/dev")
    return (dev / "kfd").exists() or any(dev.glob("nvidia[0-9]*"))


def default_engine(device: str) -> str:
    """What runs MTCNN on a resolved device: onnxruntime on the CPU (no PyTorch import; the same
    boxes as facenet-pytorch to 1e-4 px, tests/test_mtcnn_onnx.py), facenet-pytorch on a GPU."""
    if device != "cpu":
        return "torch"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnx"


class FaceDetector(abc.ABC):
    """Finds faces in RGB frames; subclasses wrap one detector (MTCNN, or dlib's HOG detector)."""

    name: str = "base"

    @abc.abstractmethod
    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Per frame (RGB uint8, sizes may differ), the detections sorted by score desc."""


class MTCNNDetector(FaceDetector):
    """MTCNN (facenet-pytorch's weights), run on a downscaled copy of each frame.

    Frames are shrunk (INTER_AREA) so that their longest side is at most
    ``detect_max_side``; boxes and landmarks are mapped back to full resolution. The
    smallest face searched for is ``min_face_frac`` of the downscaled short side (at
    least 20 px, MTCNN's default). Frames of equal size are batched, ``batch_size`` at a
    time. ``engine``: "torch" runs facenet-pytorch itself (CPU or GPU); "onnx" runs the same
    three networks exported to ONNX, and the same steps in numpy, with onnxruntime on the CPU
    (deepfake_cli.faces.mtcnn_onnx; no PyTorch import, for a fast `predict` start). None: the
    :func:`default_engine` of the device, so `crop` and `predict` detect with the same code.
    """

    name = "mtcnn"

    def __init__(
        self,
        device: str = "auto",
        detect_max_side: int = 640,
        min_face_frac: float = 0.05,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        batch_size: int = 16,
        engine: str | None = None,
    ):
        if detect_max_side < 32:
            raise OptionsError(f"--detect-size must be at least 32 pixels, got {detect_max_side}")
        if not 0.0 <= min_face_frac < 1.0:
            raise ValueError(f"min_face_frac must be in [0, 1), got {min_face_frac}")
        self.device = "cpu" if engine == "onnx" else resolve_device(device)
        engine = engine or default_engine(self.device)
        if engine not in ENGINES:
            raise ValueError(f"unknown MTCNN engine {engine!r}; expected one of {', '.join(ENGINES)}")
        if engine == "onnx" and self.device != "cpu":
            raise ValueError(f"the onnx MTCNN engine runs on the CPU, not on {self.device}")
        self.detect_max_side = int(detect_max_side)
        self.min_face_frac = float(min_face_frac)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.batch_size = max(1, int(batch_size))
        self.engine = engine
        if engine == "onnx":
            from deepfake_cli.faces.mtcnn_onnx import OnnxMTCNN

            self._mtcnn = OnnxMTCNN(thresholds=self.thresholds)
            return
        import torch
        from facenet_pytorch import MTCNN

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


DETECTORS = ("mtcnn", "dlib")


class DlibDetector(FaceDetector):
    """dlib's HOG frontal-face detector on a downscaled copy of each frame, 5 points from 68.

    ``score`` is the logistic of the SVM margin (0.5 at dlib's default threshold).
    """

    name = "dlib"

    def __init__(self, detect_max_side: int = 640, upsample: int = 1, landmarker: Landmarker | None = None):
        import dlib

        if detect_max_side < 32:
            raise OptionsError(f"--detect-size must be at least 32 pixels, got {detect_max_side}")
        self.detect_max_side = int(detect_max_side)
        self.upsample = int(upsample)
        self.landmarker = landmarker or Landmarker()
        self._hog = dlib.get_frontal_face_detector()

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Detect faces in every frame; see :meth:`FaceDetector.detect`."""
        return [self._detect_one(i, frame) for i, frame in enumerate(frames)]

    def _detect_one(self, i: int, frame: np.ndarray) -> list[Detection]:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame {i}: expected an RGB uint8 array (H, W, 3), got {frame.dtype} {frame.shape}")
        small_hw = downscaled_size(frame.shape[:2], self.detect_max_side)
        small = np.ascontiguousarray(downscale(frame, small_hw))
        rects, margins, _ = self._hog.run(small, self.upsample, 0.0)
        scale = frame.shape[1] / small_hw[1]
        dets = []
        for rect, margin in zip(rects, margins):
            box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], np.float64) * scale
            points = five_points(self.landmarker(frame, box))
            dets.append(Detection(box=box.astype(np.float32), landmarks=points,
                                  score=1.0 / (1.0 + math.exp(-float(margin)))))
        return sorted(dets, key=lambda d: -d.score)


def check_detector(name: str) -> None:
    """Raise OptionsError (exit 2) unless ``name`` is one of DETECTORS."""
    if name == "haar":
        raise OptionsError("the Haar cascade detector is not available: OpenCV 5 dropped cv2.CascadeClassifier; "
                         "use --detector mtcnn or dlib")
    if name not in DETECTORS:
        raise OptionsError(f"unknown detector {name!r}; expected one of {', '.join(DETECTORS)}")


def make_detector(name: str, device: str = "auto", detect_max_side: int = 640,
                  landmarker: Landmarker | None = None, engine: str | None = None) -> FaceDetector:
    """The detector called ``name`` (see DETECTORS); dlib's uses ``landmarker`` when given;
    MTCNN's runs on ``engine`` (see MTCNNDetector; None: the device's default)."""
    check_detector(name)
    if name == "dlib":
        resolve_device(device)  # a bad --device is still an error; dlib runs on the CPU
        return DlibDetector(detect_max_side=detect_max_side, landmarker=landmarker)
    return MTCNNDetector(device=device, detect_max_side=detect_max_side, engine=engine)
