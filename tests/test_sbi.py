"""Self-blended pseudo-fakes (deepfake_cli.train.sbi) of skimage's astronaut."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deepfake_cli.faces.face_crops import align_face
from deepfake_cli.faces.landmarks import Landmarker
from deepfake_cli.train.sbi import BLEND_RATIOS, mask_reach, self_blend

SIZE, MARGIN = 160, 0.2


@pytest.fixture(scope="module")
def face(astronaut, astronaut_detection) -> tuple[np.ndarray, np.ndarray]:
    """An aligned 160 px crop of the astronaut and its 68 landmarks."""
    crop = align_face(astronaut, astronaut_detection.landmarks, SIZE, MARGIN)
    return crop, Landmarker().for_aligned_crop(crop, MARGIN)


def reach_region(points: np.ndarray, shape) -> np.ndarray:
    """Pixels within mask_reach of the landmarks' convex hull."""
    hull = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.rint(points).astype(np.int32)), 1)
    r = int(np.ceil(mask_reach(points)))
    return cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0


@pytest.mark.parametrize("seed", range(12))
def test_fake_differs_from_its_source_only_inside_the_mask(face, seed):
    crop, points = face
    fake, mask = self_blend(crop, points, np.random.default_rng(seed))
    assert fake.shape == crop.shape and fake.dtype == crop.dtype == np.uint8
    assert mask.shape == crop.shape[:2] and mask.dtype == np.float32
    assert 0.0 <= mask.min() and any(np.isclose(mask.max(), r, atol=1e-6) for r in BLEND_RATIOS)
    changed = np.any(fake != crop, axis=-1)
    assert not np.any(changed & (mask == 0))  # outside the mask: the real face, byte for byte
    assert np.all(mask[~reach_region(points, mask.shape)] == 0)  # the mask stays near the face
    inner = mask >= 0.5 * mask.max()
    assert changed[inner].mean() > 0.5  # inside, the source really was changed
    assert inner.mean() > 0.15  # and the mask covers the face, not a speck


def test_same_seed_same_bytes_other_seeds_differ(face):
    crop, points = face
    a, mask_a = self_blend(crop, points, np.random.default_rng(3))
    b, mask_b = self_blend(crop, points, np.random.default_rng(3))
    assert a.tobytes() == b.tobytes() and mask_a.tobytes() == mask_b.tobytes()
    others = [self_blend(crop, points, np.random.default_rng(s))[0] for s in (4, 5, 6)]
    assert all(o.tobytes() != a.tobytes() for o in others)
    assert len({o.tobytes() for o in others}) == 3


def test_blend_ratios_all_occur(face):
    crop, points = face
    peaks = {round(float(self_blend(crop, points, np.random.default_rng(s))[1].max()), 3) for s in range(40)}
    assert peaks == {0.25, 0.5, 0.75, 1.0}


def test_bad_inputs(face):
    crop, points = face
    with pytest.raises(ValueError, match="RGB uint8"):
        self_blend(crop.astype(np.float32), points, np.random.default_rng(0))
    with pytest.raises(ValueError, match="not finite"):
        self_blend(crop, np.full((68, 2), np.nan), np.random.default_rng(0))
