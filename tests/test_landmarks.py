"""68-point landmarks (deepfake_cli.faces.landmarks) on skimage's astronaut, checked against MTCNN's 5 points."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deepfake_cli.faces.alignment import similarity_matrix
from deepfake_cli.faces.face_crops import align_face, crop_face, crop_matrix
from deepfake_cli.faces.landmarks import Landmarker, five_points, predictor_box


@pytest.fixture(scope="module")
def detection(astronaut_detection):  # astronaut, astronaut_detection: tests/conftest.py
    return astronaut_detection


@pytest.fixture(scope="module")
def landmarker() -> Landmarker:
    return Landmarker()


def to_crop(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return cv2.transform(np.asarray(points, np.float64)[None], matrix)[0]


def assert_on_mtcnn_points(points68: np.ndarray, points5: np.ndarray, tolerance: float = 0.05) -> None:
    """Eye centres and mouth corners of the 68 points within ``tolerance`` face sizes of MTCNN's."""
    assert points68.shape == (68, 2) and points68.dtype == np.float32
    face = np.ptp(points68[:17, 0])  # jaw width
    np.testing.assert_array_less(np.linalg.norm(five_points(points68) - points5, axis=1)[[0, 1, 3, 4]],
                                 tolerance * face)


def test_landmarker_loads_lazily(landmarker):
    fresh = Landmarker()
    assert fresh._predictor is None


@pytest.mark.parametrize("margin", [0.2, 0.35])
def test_aligned_crop_points_land_on_eyes_and_mouth(astronaut, detection, landmarker, margin):
    crop = align_face(astronaut, detection.landmarks, size=160, margin=margin)
    points = landmarker.for_aligned_crop(crop, margin)
    mtcnn = to_crop(detection.landmarks, similarity_matrix(detection.landmarks, 160, margin))
    assert_on_mtcnn_points(points, mtcnn)
    jaw_width = np.ptp(points[:17, 0])
    assert 0.45 * 160 / (1 + 2 * margin) < jaw_width < 1.1 * 160 / (1 + 2 * margin)


def test_plain_crop_points_land_on_eyes_and_mouth(astronaut, detection, landmarker):
    crop = crop_face(astronaut, detection.box, size=160, margin=0.3)
    mtcnn = to_crop(detection.landmarks, crop_matrix(detection.box, 160, 0.3))
    assert_on_mtcnn_points(landmarker.for_crop(crop, mtcnn), mtcnn)


def test_full_frame_points(astronaut, detection, landmarker):
    points = landmarker(astronaut, predictor_box(detection.landmarks))
    assert_on_mtcnn_points(points, detection.landmarks)


def test_predictor_box_follows_the_face(detection):
    box = predictor_box(detection.landmarks)
    moved = predictor_box(detection.landmarks * 2 + 10)
    np.testing.assert_allclose(moved, box * 2 + 10, atol=1e-3)
    x1, y1, x2, y2 = box
    assert x2 - x1 == pytest.approx(y2 - y1, abs=1e-3)
    eyes_y = detection.landmarks[:2, 1].mean()
    assert y1 < eyes_y < (y1 + y2) / 2 < detection.landmarks[3:, 1].mean() < y2


def test_bad_inputs(landmarker, astronaut):
    with pytest.raises(ValueError, match="RGB uint8"):
        landmarker(astronaut[..., 0], np.array([0, 0, 10, 10]))
    with pytest.raises(ValueError, match="empty face box"):
        landmarker(astronaut, np.array([10, 10, 10, 20]))


@pytest.mark.parametrize("align", [True, False])
def test_crop_stores_landmarks68_in_crop_pixels(tmp_path, astronaut, detection, align):
    from deepfake_cli.faces.crop import CropOptions, crop
    from deepfake_cli.data.store import Frames, Store, VideoEntry

    frames = np.stack([astronaut, np.roll(astronaut, (12, -20), axis=(0, 1))])
    with Store.open(tmp_path / "dfd.h5", write=True) as store:
        store.write_frames(VideoEntry(video_id="a", path="a.mp4", label="real", fpv=2), Frames(np.arange(2), frames))
        summary = crop(store, CropOptions(size=128, margin=0.25, align=align, device="cpu"))
        assert summary.faces == 2
        faces = store.read_faces("a")
    points = faces.landmarks68
    assert points.shape == (2, 68, 2) and points.dtype == np.float32
    assert faces.settings["landmarks68"] == "dlib"
    matrix = (similarity_matrix(detection.landmarks, 128, 0.25) if align
              else crop_matrix(detection.box, 128, 0.25))
    mtcnn = to_crop(detection.landmarks, matrix)
    for p in points:  # the rolled copy of the face lands on the same crop pixels
        assert_on_mtcnn_points(p, mtcnn)
