"""Class activation maps: exact for dfd's heads, and they light up where the evidence is."""

from __future__ import annotations

import numpy as np
import pytest

from deepfake_cli.report.heatmaps import ActivationMapper, HeatmapError, grid, overlay

SIZE, PATCH = 32, 6


def patch_images(n: int, rng: np.random.Generator):
    """Noise faces; half of them carry a bright square (the planted artefact) at a random place."""
    images = rng.integers(0, 90, (n, SIZE, SIZE, 3)).astype(np.uint8)
    labels = np.arange(n) % 2
    corners = rng.integers(0, SIZE - PATCH, (n, 2))
    for image, label, (y, x) in zip(images, labels, corners):
        if label:
            image[y:y + PATCH, x:x + PATCH] = 255
    return images, labels.astype(np.float32), corners


def tiny_classifier():
    """A small convolutional backbone ending in global average pooling, under one 'score' unit."""
    import keras

    face = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0)(face)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    extractor = keras.Model(face, keras.layers.GlobalAveragePooling2D(name="avg_pool")(x), name="tiny")
    image = keras.Input((SIZE, SIZE, 3))
    score = keras.layers.Dense(1, activation="sigmoid", name="score")(extractor(image))
    return keras.Model(image, score)


@pytest.fixture(scope="module")
def patch_detector():
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images, labels, _ = patch_images(512, rng)
    model = tiny_classifier()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    model.fit(images.astype(np.float32), labels, epochs=8, batch_size=32, verbose=0)
    test, test_labels, corners = patch_images(64, np.random.default_rng(1))
    accuracy = float(np.mean((model.predict(test.astype(np.float32), verbose=0)[:, 0] > 0.5) == test_labels))
    assert accuracy > 0.9, accuracy  # it learnt the patch
    return model, test, test_labels, corners


def test_the_map_lights_up_at_the_planted_artefact(patch_detector):
    model, images, labels, corners = patch_detector
    cams = ActivationMapper(model, SIZE)(images)
    hits = 0
    for cam, (y, x) in zip(cams[labels == 1], corners[labels == 1]):
        py, px = np.unravel_index(np.argmax(cam), cam.shape)
        hits += (y - 2 <= py < y + PATCH + 2) and (x - 2 <= px < x + PATCH + 2)
    assert hits / int(labels.sum()) > 0.9, hits


def test_the_map_decomposes_the_logit_exactly(patch_detector):
    model, images, _, _ = patch_detector
    mapper = ActivationMapper(model, SIZE)
    maps = np.asarray(mapper.maps.predict_on_batch(images.astype(np.float32)))
    logits = (maps @ mapper.weights + mapper.bias).mean(axis=(1, 2))
    p = model.predict(images.astype(np.float32), verbose=0)[:, 0]
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), p, atol=1e-5)


def test_a_model_without_a_pooled_backbone_is_refused():
    import keras

    face = keras.Input((8, 8, 3))
    score = keras.layers.Dense(1, name="score")(keras.layers.Flatten()(face))
    with pytest.raises(HeatmapError, match="class activation maps do not apply"):
        ActivationMapper(keras.Model(face, score), 8)


def test_overlay_and_grid_shapes():
    crop = np.full((16, 16, 3), 128, np.uint8)
    hot = overlay(crop, np.full((16, 16), 3.0, np.float32))
    cold = overlay(crop, np.full((16, 16), -3.0, np.float32))
    assert hot.dtype == np.uint8 and hot[..., 0].mean() > cold[..., 0].mean()  # red: towards fake
    assert grid([crop] * 7, columns=5).shape == (32, 80, 3)


def test_neutral_pixels_stay_as_they_are_and_the_scale_diverges():
    from deepfake_cli.report.heatmaps import colour_bar, diverging_colours

    crop = np.random.default_rng(0).integers(0, 255, (16, 16, 3)).astype(np.uint8)
    cam = np.zeros((16, 16), np.float32)
    cam[:4] = 3.0  # only the top rows push towards fake
    out = overlay(crop, cam)
    np.testing.assert_array_equal(out[4:], crop[4:])  # the background is left alone
    assert out[:4, :, 0].mean() > crop[:4, :, 0].mean() or out[:4, :, 2].mean() < crop[:4, :, 2].mean()
    ends = diverging_colours(np.array([0.0, 0.5, 1.0]))
    assert ends[0][2] > ends[0][0] and ends[2][0] > ends[2][2] and ends[1].min() > 240  # blue, white, red
    bar = colour_bar(100, 5)
    assert bar.shape == (5, 100, 3) and bar[0, 0, 2] > bar[0, 0, 0] and bar[0, -1, 0] > bar[0, -1, 2]


@pytest.mark.slow
def test_onnx_class_activation_maps_match_keras_and_load_no_tensorflow(tmp_path):
    """export-onnx writes cam.onnx; the mapper predict uses then runs on onnxruntime and gives
    the Keras maps."""
    import shutil
    import subprocess
    import sys

    from deepfake_cli.nets.bundle import load_bundle
    from deepfake_cli.report.heatmaps import OnnxActivationMapper, activation_mapper
    from deepfake_cli.train.onnx_export import export_onnx
    from tests.helpers import ROOT

    bundle_dir = tmp_path / "default"
    shutil.copytree(ROOT / "deepfake_cli" / "serve" / "default_model", bundle_dir)
    record = export_onnx(bundle_dir)
    assert record["cam.onnx"]["max_abs_diff"] < 1e-4
    bundle = load_bundle(bundle_dir)
    mapper = activation_mapper(bundle)
    assert isinstance(mapper, OnnxActivationMapper)
    crops = np.random.default_rng(1).integers(0, 255, (3, 160, 160, 3)).astype(np.uint8)
    np.testing.assert_allclose(mapper(crops), ActivationMapper(bundle.build_feature_model(), 160)(crops), atol=1e-3)
    code = ("import sys; from pathlib import Path; from deepfake_cli.nets.bundle import load_bundle; "
            "from deepfake_cli.report.heatmaps import activation_mapper; import numpy as np; "
            f"m = activation_mapper(load_bundle(Path({str(bundle_dir)!r}))); m(np.zeros((1, 160, 160, 3), np.uint8)); "
            "print(sorted(k for k in ('tensorflow', 'keras', 'torch') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
