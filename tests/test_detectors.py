"""Face detectors by name (deepfake_cli.faces.detectors): dlib's HOG detector on skimage's astronaut."""

from __future__ import annotations

import numpy as np
import pytest

from deepfake_cli.faces.detectors import DlibDetector, check_detector, make_detector
from deepfake_cli.faces.detectors import MTCNNDetector

# Eileen Collins' face, as in tests/test_faces.py
ASTRONAUT_FACE = np.array([180, 60, 268, 174], np.float32)


def iou(a, b) -> float:
    iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, iw) * max(0.0, ih)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.fixture(scope="module")
def mtcnn_points(astronaut_detection) -> np.ndarray:  # astronaut, astronaut_detection: tests/conftest.py
    return astronaut_detection.landmarks


@pytest.mark.parametrize("max_side", [640, 256])
def test_dlib_finds_the_astronaut_with_5_points_where_mtcnn_puts_them(astronaut, mtcnn_points, max_side):
    (dets,) = DlibDetector(detect_max_side=max_side).detect([astronaut])
    best = dets[0]
    assert iou(best.box, ASTRONAUT_FACE) > 0.6 and 0.5 < best.score < 1
    assert best.box.dtype == np.float32 and best.landmarks.shape == (5, 2) and best.landmarks.dtype == np.float32
    side = ASTRONAUT_FACE[2] - ASTRONAUT_FACE[0]
    assert np.linalg.norm(best.landmarks - mtcnn_points, axis=1).max() < 0.05 * side
    assert all(d.score <= best.score for d in dets)


def test_dlib_finds_nothing_in_noise():
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert DlibDetector().detect([np.full((240, 320, 3), 128, np.uint8), noise]) == [[], []]


def test_crop_with_the_dlib_detector(tmp_path, astronaut):
    from deepfake_cli.faces.crop import CropOptions, crop
    from deepfake_cli.data.store import Frames, Store, VideoEntry

    with Store.open(tmp_path / "dfd.h5", write=True) as store:
        store.write_frames(VideoEntry(video_id="a", path="a.mp4", label="real", fpv=1), Frames(np.arange(1), astronaut[None]))
        assert crop(store, CropOptions(size=96, detector="dlib", device="cpu")).faces == 1
        faces = store.read_faces("a")
    assert faces.settings["detector"] == "dlib" and iou(faces.boxes[0], ASTRONAUT_FACE) > 0.6
    assert faces.landmarks68.shape == (1, 68, 2)


def test_detector_names():
    with pytest.raises(ValueError, match="Haar cascade detector is not available"):
        check_detector("haar")
    with pytest.raises(ValueError, match="unknown detector 'yolo'"):
        make_detector("yolo")
    assert isinstance(make_detector("dlib", device="cpu"), DlibDetector)
    assert isinstance(make_detector("mtcnn", device="cpu"), MTCNNDetector)
