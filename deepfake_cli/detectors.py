"""Face detectors by name: ``dfd crop --detector mtcnn|dlib`` and the bundle's ``face.detector``.

* ``mtcnn`` (default): facenet-pytorch MTCNN, boxes and 5 landmarks (faces.MTCNNDetector).
* ``dlib``: dlib's HOG + linear SVM frontal-face detector. It gives boxes only; the 5 points
  the alignment needs (eye centres, nose tip, mouth corners) come from the 68 landmarks of
  dlib's shape predictor, which was trained on exactly these boxes. Frontal faces only
  (about ±30° of yaw); CPU only; the frame is upsampled once, so faces down to about 40 px
  (at detection scale) are found.

OpenCV's Haar cascade is not offered: OpenCV 5 (the pinned opencv-python-headless) no longer
ships ``cv2.CascadeClassifier`` or the cascade files in ``cv2.data``.
"""

from __future__ import annotations

import math

import numpy as np

from deepfake_cli.faces import (Detection, FaceDetector, MTCNNDetector, downscale, downscaled_size,
                                resolve_device)
from deepfake_cli.landmarks import Landmarker, five_points

DETECTORS = ("mtcnn", "dlib")


class DlibDetector(FaceDetector):
    """dlib's HOG frontal-face detector on a downscaled copy of each frame, 5 points from 68.

    ``score`` is the logistic of the SVM margin (0.5 at dlib's default threshold).
    """

    name = "dlib"

    def __init__(self, detect_max_side: int = 640, upsample: int = 1, landmarker: Landmarker | None = None):
        import dlib

        if detect_max_side < 32:
            raise ValueError(f"detect_max_side must be >= 32, got {detect_max_side}")
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
    """Raise ValueError unless ``name`` is one of DETECTORS."""
    if name == "haar":
        raise ValueError("the Haar cascade detector is not available: OpenCV 5 dropped cv2.CascadeClassifier; "
                         "use --detector mtcnn or dlib")
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; expected one of {', '.join(DETECTORS)}")


def make_detector(name: str, device: str = "auto", detect_max_side: int = 640,
                  landmarker: Landmarker | None = None) -> FaceDetector:
    """The detector called ``name`` (see DETECTORS); dlib's uses ``landmarker`` when given."""
    check_detector(name)
    if name == "dlib":
        resolve_device(device)  # a bad --device is still an error; dlib runs on the CPU
        return DlibDetector(detect_max_side=detect_max_side, landmarker=landmarker)
    return MTCNNDetector(device=device, detect_max_side=detect_max_side)
