"""Model bundles on disk: config validation, weights, resolution (deepfake_cli.nets.bundle)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from deepfake_cli.nets.bundle import (FORMAT_VERSION, BundleConfig, BundleError, load_bundle, load_optimizer_state,
                                 read_config, resolve_bundle, save_config, save_optimizer_state, save_weights_atomic, weights_tag)
from deepfake_cli.nets.models import build_classifier, build_lstm_model
from deepfake_cli.scoring.scorer import lstm_probability

BACKBONE = "efficientnet-lite0"
SIZE = 32


def make_config(name: str = "m", backbone: str = BACKBONE) -> BundleConfig:
    return BundleConfig(name=name, backbone=backbone, input_size=SIZE, feature_dim=1280, fpv=8,
                        sampling="uniform", face={"size": 64, "align": True, "margin": 0.3, "detector": "mtcnn"},
                        split_ids={"train": ["a"], "val": ["b"]}, dfd_version="0.1.0", keras_backend="tensorflow")


def write_raw(bundle_dir: Path, data) -> Path:
    bundle_dir.mkdir(parents=True, exist_ok=True)
    (bundle_dir / "config.json").write_text(data if isinstance(data, str) else json.dumps(data))
    return bundle_dir


def test_config_round_trip(tmp_path):
    config = make_config()
    config.metrics = {"cnn": {"val_auc": 0.9}}
    save_config(tmp_path / "m", config)
    loaded = read_config(tmp_path / "m")
    assert loaded == config
    assert loaded.format_version == FORMAT_VERSION
    assert loaded.classes == ["real", "fake"] and loaded.threshold == 0.5 and loaded.temperature == 1.0
    assert loaded.video_aggregation == "mean" and loaded.created and loaded.updated
    assert BundleConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("backbone"), "missing key"),
    (lambda d: d.update(extra=1), "unknown key"),
    (lambda d: d.update(input_size="32"), "input_size must be of type int"),
    (lambda d: d.update(threshold=True), "threshold must be of type float"),
    (lambda d: d.update(format_version=FORMAT_VERSION + 1), "newer dfd"),
    (lambda d: d.update(classes=["fake", "real"]), "classes must be"),
    (lambda d: d.update(temperature=0), "temperature must be positive"),
])
def test_config_validation_errors(tmp_path, mutate, message):
    data = json.loads(make_config().to_json())
    mutate(data)
    with pytest.raises(BundleError, match=message):
        load_bundle(write_raw(tmp_path / "m", data))


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no config.json"):
        load_bundle(tmp_path / "empty")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(write_raw(tmp_path / "bad", "{not json"))
    with pytest.raises(BundleError, match="JSON object"):
        load_bundle(write_raw(tmp_path / "list", "[1, 2]"))
    save_config(tmp_path / "noweights", make_config())
    with pytest.raises(BundleError, match="missing weights file"):
        load_bundle(tmp_path / "noweights").build_feature_model()


def test_resolve_bundle(tmp_path):
    models = tmp_path / "models"
    save_config(models / "alpha", make_config("alpha"))
    assert resolve_bundle("alpha", models) == models / "alpha"
    assert resolve_bundle(models / "alpha", tmp_path / "elsewhere") == models / "alpha"
    with pytest.raises(BundleError, match="alpha"):
        resolve_bundle("beta", models)


@pytest.fixture(scope="module")
def saved_classifier(tmp_path_factory):
    """A bundle with (untrained) CNN weights of efficientnet-lite0 at 32 px."""
    bundle_dir = tmp_path_factory.mktemp("bundle") / "lite"
    config = make_config("lite")
    save_config(bundle_dir, config)
    classifier, _ = build_classifier(BACKBONE, SIZE)
    save_weights_atomic(classifier, bundle_dir / "cnn.weights.h5", weights_tag("cnn", config))
    return bundle_dir, classifier


def test_feature_model_is_one_pass_with_loaded_weights(saved_classifier):
    bundle_dir, classifier = saved_classifier
    bundle = load_bundle(bundle_dir)
    model = bundle.build_feature_model()
    x = np.random.default_rng(0).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
    features, scores = model.predict_on_batch(x)
    assert np.asarray(features).shape == (3, 1280)
    np.testing.assert_allclose(np.asarray(scores), np.asarray(classifier.predict_on_batch(x)), atol=1e-5)


def test_weights_of_another_backbone_are_refused(saved_classifier, tmp_path):
    bundle_dir, classifier = saved_classifier
    other = tmp_path / "other"
    save_config(other, make_config("other", backbone="efficientnet-b0"))
    (other / "cnn.weights.h5").write_bytes((bundle_dir / "cnn.weights.h5").read_bytes())
    with pytest.raises(BundleError, match=r"cnn\.weights\.h5.*efficientnet-b0"):
        load_bundle(other).build_feature_model()
    # Without dfd's tag, Keras itself finds the mismatch.
    save_weights_atomic(classifier, other / "cnn.weights.h5", tag=None)
    with pytest.raises(BundleError, match=r"cnn\.weights\.h5.*efficientnet-b0"):
        load_bundle(other).build_feature_model()


def test_lstm_weights_round_trip(tmp_path):
    config = make_config("seq")
    config.feature_dim = 6
    config.lstm = {"units": 4, "dropout": 0.1, "seq_len": 5, "feature_model": "seq", "trained": True}
    save_config(tmp_path / "seq", config)
    model = build_lstm_model(5, 6, units=4, dropout=0.1)
    save_weights_atomic(model, tmp_path / "seq" / "lstm.weights.h5", weights_tag("lstm", config))
    bundle = load_bundle(tmp_path / "seq")
    assert bundle.has_lstm
    x = np.random.default_rng(1).normal(size=(7, 6)).astype(np.float32)
    direct = float(np.asarray(model.predict_on_batch(np.concatenate([x[:5]])[None])).reshape(-1)[0])
    assert lstm_probability(bundle.build_lstm(), x, bundle.seq_len) == pytest.approx(direct, abs=1e-5)


def test_optimizer_state_round_trip(tmp_path):
    def compiled():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
        model.compile(keras.optimizers.Adam(1e-2), "mse")
        return model

    source = compiled()
    source.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0, epochs=2)
    save_optimizer_state(source.optimizer, tmp_path / "opt.npz")
    target = compiled()
    target.optimizer.build(target.trainable_variables)
    load_optimizer_state(target.optimizer, tmp_path / "opt.npz")
    for a, b in zip(source.optimizer.variables, target.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert int(keras.ops.convert_to_numpy(target.optimizer.iterations)) == 2
    wrong = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    wrong.compile(keras.optimizers.Adam(), "mse")
    wrong.optimizer.build(wrong.trainable_variables)
    with pytest.raises(BundleError, match="optimizer variables"):
        load_optimizer_state(wrong.optimizer, tmp_path / "opt.npz")
