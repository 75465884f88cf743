"""Fixtures several test files share. Plain helpers (clips, tiny stores, damaged segments, the
default model's figures) are in tests/helpers.py.

Tiers: tests that take more than ~20 s on 2 cores are marked `slow`; `python -m pytest -q -m "not slow"`
runs the rest (README, "Run the tests"). Every test has a timeout (pyproject.toml, `timeout`;
PYTEST_TIMEOUT=N overrides it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """skimage's astronaut (Eileen Collins), RGB, read-only: the one real face the tests use."""
    from skimage import data

    image = data.astronaut()
    image.flags.writeable = False
    return image


@pytest.fixture(scope="session")
def astronaut_detection(astronaut):
    """MTCNN's one detection of the astronaut's face (box, 5 landmarks, score), on the CPU."""
    from deepfake_cli.faces.detectors import MTCNNDetector

    dets = MTCNNDetector(device="cpu").detect([astronaut])[0]
    assert len(dets) == 1
    return dets[0]


@pytest.fixture()
def cnn_bundle(tmp_path) -> tuple[Path, object]:
    """An untrained EfficientNet-Lite0 classifier on 32 px faces, saved as bundle `lite`
    (fpv 12, no splits, no LSTM): (its directory, the Keras classifier)."""
    from deepfake_cli.nets.bundle import BundleConfig, save_config, save_weights_atomic, weights_tag
    from deepfake_cli.nets.models import build_classifier

    bundle_dir = tmp_path / "models" / "lite"
    config = BundleConfig(name="lite", backbone="efficientnet-lite0", input_size=32, feature_dim=1280, fpv=12,
                          split_ids={}, face={"size": 32})
    save_config(bundle_dir, config)
    classifier, _ = build_classifier("efficientnet-lite0", 32)
    save_weights_atomic(classifier, bundle_dir / "cnn.weights.h5", weights_tag("cnn", config))
    return bundle_dir, classifier
