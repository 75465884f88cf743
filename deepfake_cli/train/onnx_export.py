"""`dfd export-onnx`: write a bundle's CNN and LSTM as ONNX files, checked against Keras.

Each model is rebuilt from the bundle (deepfake_cli.nets.bundle, weights checked against their
recorded SHA-256), exported with Keras' own ONNX export (tf2onnx under the TensorFlow backend),
and run by onnxruntime on check inputs beside Keras: seeded random images at the bundle's
input size (and any real faces passed in) for the CNN, the CNN's features of those as ordered
sequences, partly padded, for the LSTM. The export is refused when the two differ by more
than :data:`TOLERANCE`. What was written, from which weights, and the measured difference go
to ``onnx.json`` (deepfake_cli.scoring.onnx_serving reads it). Files are written whole or not at all.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from deepfake_cli.nets.bundle import BundleError, load_bundle, now_iso
from deepfake_cli.files import atomic_write, atomic_write_text, file_sha256
from deepfake_cli.scoring.onnx_serving import (CAM_ONNX, CNN_ONNX, LSTM_ONNX, ONNX_RECORD, ONNX_SOURCES, OnnxModel,
                                       needed_onnx_files, weights_sha256)
from deepfake_cli.scoring.scorer import model_input

TOLERANCE = 1e-4  # largest |ONNX - Keras| allowed, on P(fake) and on features scaled to at most 1
CHECK_IMAGES = 8


class OnnxExportError(BundleError):
    """The ONNX export failed or does not reproduce the Keras model."""


def check_images(input_size: int, faces: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """(n, S, S, 3) float32 in [0, 255]: seeded noise images, smooth and rough, plus ``faces``."""
    rng = np.random.default_rng(seed)
    rough = rng.uniform(0, 255, (CHECK_IMAGES // 2, input_size, input_size, 3))
    coarse = rng.uniform(0, 255, (CHECK_IMAGES - len(rough), 8, 8, 3)).astype(np.float32)
    smooth = np.stack([model_input([c.astype(np.uint8)], input_size)[0] for c in coarse])
    images = [rough.astype(np.float32), smooth]
    if faces is not None and len(faces):
        images.append(model_input(faces, input_size))
    return np.concatenate(images)


def _export(model, path: Path, example: np.ndarray) -> None:
    model.predict_on_batch(example[:1])  # Keras exports only a model that has been called
    with atomic_write(path, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Keras' tf2onnx shim probes np.object
        try:
            model.export(str(tmp), format="onnx", verbose=False)
        except Exception as exc:  # tf2onnx and torch.onnx raise many kinds of errors
            raise OnnxExportError(f"exporting {path.name} failed: {type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def _difference(keras_out, onnx_out) -> float:
    """Largest |difference| over the outputs, each scaled by its largest |Keras value| when above 1."""
    worst = 0.0
    for k, o in zip(keras_out if isinstance(keras_out, list) else [keras_out],
                    onnx_out if isinstance(onnx_out, list) else [onnx_out]):
        k, o = np.asarray(k, np.float64), np.asarray(o, np.float64).reshape(np.shape(k))
        worst = max(worst, float(np.max(np.abs(k - o))) / max(1.0, float(np.max(np.abs(k)))))
    return worst


def check_sequences(features: np.ndarray, seq_len: int) -> np.ndarray:
    """(m, seq_len, D): the check features as full, partly padded and one-step sequences."""
    def padded(rows):
        out = np.zeros((seq_len, features.shape[1]), np.float32)
        out[:len(rows)] = rows[:seq_len]
        return out

    tiled = np.resize(features, (max(seq_len, len(features)), features.shape[1]))
    return np.stack([padded(tiled[:seq_len]), padded(tiled[:max(1, seq_len // 2)]), padded(features[:1]),
                     padded(tiled[::-1][:seq_len])])


def export_onnx(bundle_dir: Path, faces: np.ndarray | None = None) -> dict:
    """Write the bundle's ONNX files and onnx.json; return onnx.json's contents."""
    bundle = load_bundle(bundle_dir)
    if bundle.config.input not in ("face", "frame"):
        raise OnnxExportError(f"{bundle.path}: unknown input {bundle.config.input!r}")
    images = check_images(int(bundle.config.input_size), faces)
    record: dict = {"exported": now_iso(), "tolerance": TOLERANCE}

    feature_model = bundle.build_feature_model()
    _export(feature_model, bundle.path / CNN_ONNX, images)
    keras_features = [np.asarray(x, np.float32) for x in feature_model.predict_on_batch(images)]
    onnx_features = OnnxModel(bundle.path / CNN_ONNX).predict_on_batch(images)
    record[CNN_ONNX] = _entry(bundle, CNN_ONNX, _difference(keras_features, onnx_features))
    record[CAM_ONNX] = _export_cam(bundle, feature_model, images)

    if LSTM_ONNX in needed_onnx_files(bundle):
        lstm = bundle.build_lstm()
        sequences = check_sequences(keras_features[0], bundle.seq_len)
        _export(lstm, bundle.path / LSTM_ONNX, sequences)
        difference = _difference(np.asarray(lstm.predict_on_batch(sequences)),
                                 OnnxModel(bundle.path / LSTM_ONNX).predict_on_batch(sequences))
        record[LSTM_ONNX] = _entry(bundle, LSTM_ONNX, difference)
    elif (bundle.path / LSTM_ONNX).exists():
        (bundle.path / LSTM_ONNX).unlink()  # left from an LSTM the config no longer says is trained

    too_far = {name: e["max_abs_diff"] for name, e in record.items() if isinstance(e, dict)
               and e["max_abs_diff"] > TOLERANCE}
    if too_far:
        for name in (CNN_ONNX, LSTM_ONNX, CAM_ONNX):
            (bundle.path / name).unlink(missing_ok=True)
        raise OnnxExportError(f"{bundle.path}: the ONNX export differs from Keras by "
                              + ", ".join(f"{d:.2g} ({n})" for n, d in too_far.items())
                              + f", more than {TOLERANCE}: nothing was kept, predict keeps using Keras")
    atomic_write_text(bundle.path / ONNX_RECORD, json.dumps(record, indent=2) + "\n")
    return record


def _export_cam(bundle, feature_model, images: np.ndarray) -> dict:
    """``cam.onnx``: the class activation maps report.heatmaps.ActivationMapper computes (the
    backbone's last feature maps, the head's unit applied at every position), so `predict
    --report/--heatmap` runs on onnxruntime; checked against the Keras mapper."""
    import keras

    from deepfake_cli.report.heatmaps import ActivationMapper

    mapper = ActivationMapper(feature_model, int(bundle.config.input_size))
    maps = mapper.maps
    channels = int(maps.output.shape[-1])
    head = keras.layers.Dense(1, name="cam_head")
    cam_model = keras.Model(maps.inputs, head(maps.output), name="cam")
    head.set_weights([mapper.weights.reshape(channels, 1), np.array([mapper.bias], np.float32)])
    _export(cam_model, bundle.path / CAM_ONNX, images)
    expected = np.asarray(cam_model.predict_on_batch(images), np.float32)
    got = np.asarray(OnnxModel(bundle.path / CAM_ONNX).predict_on_batch(images), np.float32)
    scale = max(1.0, float(np.abs(expected).max()))
    return _entry(bundle, CAM_ONNX, float(np.abs(expected - got).max()) / scale)


def _entry(bundle, name: str, difference: float) -> dict:
    return {"sha256": file_sha256(bundle.path / name), "weights_sha256": weights_sha256(bundle, ONNX_SOURCES[name]),
            "max_abs_diff": float(difference)}
