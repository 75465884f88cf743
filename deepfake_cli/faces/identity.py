"""Who a face is: dlib's face-recognition ResNet turns a detected face into a 128-d descriptor.

Two faces of one person lie within about 0.6 of each other (Euclidean; dlib's own threshold,
99.38 % on LFW), of two people further apart. `predict` uses it so that a face track cannot
pass from one person to another at a hard cut (tracking.py links by position otherwise). The
model ships in the ``face_recognition_models`` wheel beside the landmark model (no download).
"""

from __future__ import annotations

import numpy as np

from deepfake_cli.faces.detectors import Detection
from deepfake_cli.faces.landmarks import LandmarkError, predictor_box, predictor_path

RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
# Descriptors further apart than this are two people: dlib's threshold. On 6 FF++ c40 clips one
# person's faces were at most 0.46 apart over 25 frames, and the 6 people at least 0.66 apart.
MAX_SAME_PERSON_DISTANCE = 0.6
# A hard cut between two sampled frames: their colour histograms (hue x saturation) are further
# apart than this (Bhattacharyya distance, 0 = same, 1 = disjoint).
CUT_HISTOGRAM_DISTANCE = 0.5


class FaceDescriber:
    """Face -> (128,) float32 descriptor; the dlib models load on first use (~0.5 s)."""

    def __init__(self):
        self._models = None

    def _load(self):
        if self._models is None:
            import dlib

            shape_path = predictor_path()
            recognition_path = shape_path.with_name(RECOGNITION_MODEL)
            if not recognition_path.is_file():
                raise LandmarkError(f"face recognition model {recognition_path} is missing; "
                                    "reinstall face-recognition-models")
            self._models = (dlib.shape_predictor(str(shape_path)), dlib.face_recognition_model_v1(str(recognition_path)))
        return self._models

    def __call__(self, image_rgb: np.ndarray, detection: Detection) -> np.ndarray:
        import dlib

        shapes, recognition = self._load()
        x1, y1, x2, y2 = (int(round(float(v))) for v in predictor_box(detection.landmarks))
        image = np.ascontiguousarray(image_rgb)
        shape = shapes(image, dlib.rectangle(x1, y1, max(x1 + 1, x2 - 1), max(y1 + 1, y2 - 1)))
        return np.asarray(recognition.compute_face_descriptor(image, shape), np.float32)



def same_person(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two descriptors are close enough to be one person."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b))) <= MAX_SAME_PERSON_DISTANCE


def colour_histogram(frame_rgb: np.ndarray) -> np.ndarray:
    """Normalised 16 x 16 hue-saturation histogram of a frame (downscaled first: it is cheap)."""
    import cv2

    small = cv2.resize(frame_rgb, (64, 64), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 16], [0, 180, 0, 256])
    return cv2.normalize(hist, hist).astype(np.float32)


def scene_cuts(frames: list[np.ndarray]) -> set[int]:
    """Positions t whose frame starts a new shot (a hard cut from frame t - 1)."""
    import cv2

    hists = [colour_histogram(f) for f in frames]
    return {t for t in range(1, len(frames))
            if cv2.compareHist(hists[t - 1], hists[t], cv2.HISTCMP_BHATTACHARYYA) > CUT_HISTOGRAM_DISTANCE}


class IdentityCheck:
    """For tracking: whether a detection at frame ``t`` may continue a track last seen at frame
    ``s``. Within a shot, always (position decides); across a hard cut, only when the two faces
    are one person. Descriptors are computed for those faces only (a cut is rare; a descriptor
    took 0.16-0.6 s per face on this project's 2-core CPU, measured while training shared it)."""

    def __init__(self, frames: list[np.ndarray], describer: FaceDescriber):
        self.frames = frames
        self.describer = describer
        self.cuts = scene_cuts(frames)
        self._cache: dict[int, np.ndarray] = {}

    def __call__(self, s: int, previous: Detection, t: int, detection: Detection) -> bool:
        if not any(s < cut <= t for cut in self.cuts):
            return True
        return same_person(self._descriptor(s, previous), self._descriptor(t, detection))

    def _descriptor(self, t: int, detection: Detection) -> np.ndarray:
        key = id(detection)
        if key not in self._cache:
            self._cache[key] = self.describer(self.frames[t], detection)
        return self._cache[key]
