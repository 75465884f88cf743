"""A bundle's CNN and LSTM served by onnxruntime, so `predict` imports neither TensorFlow nor PyTorch.

`dfd export-onnx` (deepfake_cli.train.onnx_export) writes ``cnn.onnx`` and ``lstm.onnx`` beside the
Keras weights and records in ``onnx.json``, for each, its SHA-256, the SHA-256 of the Keras
weights it was made from, and the largest difference from Keras it showed on check inputs
(a file of its own: config.json, which ensembles fingerprint, is not touched).
The ONNX files are used only while both still match: retraining a part makes its ONNX file
stale, and `predict` then serves that bundle with Keras (``--runtime auto``) or refuses
(``--runtime onnx``).

The models here answer ``predict_on_batch`` like the Keras models they replace, so the one
scoring path (deepfake_cli.scoring.scorer) runs them unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from deepfake_cli.nets.bundle import CNN_WEIGHTS, LSTM_WEIGHTS, Bundle, BundleError
from deepfake_cli.errors import OptionsError
from deepfake_cli.files import file_sha256

ONNX_RECORD = "onnx.json"
CNN_ONNX = "cnn.onnx"
LSTM_ONNX = "lstm.onnx"
CAM_ONNX = "cam.onnx"  # image -> class activation map (report.heatmaps): optional, for --report/--heatmap
ONNX_SOURCES = {CNN_ONNX: CNN_WEIGHTS, LSTM_ONNX: LSTM_WEIGHTS, CAM_ONNX: CNN_WEIGHTS}  # ONNX file -> its Keras weights
RUNTIMES = ("auto", "onnx", "keras")


def needed_onnx_files(bundle: Bundle) -> list[str]:
    """The ONNX files serving this bundle takes: the CNN's, and the LSTM's when it is trained."""
    return [CNN_ONNX] + ([LSTM_ONNX] if bundle.has_lstm else [])


def onnx_problem(bundle: Bundle, files: list[str] | None = None) -> str:
    """Why this bundle cannot be served by onnxruntime ('' when it can); ``files``: these ONNX
    files instead of what scoring needs (needed_onnx_files)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed"
    recorded = onnx_record(bundle.path)
    record_file = bundle.path / ONNX_RECORD
    for name in needed_onnx_files(bundle) if files is None else files:
        entry = recorded.get(name)
        path = bundle.path / name
        if not path.is_file():
            return f"it has no {name} (run `dfd export-onnx {bundle.path}`)"
        if not entry:  # the ONNX file is there, but nothing vouches for it
            what = "is missing" if not record_file.exists() else "is damaged or does not list it"
            return (f"its {ONNX_RECORD}, which records what {name} was made from, {what} "
                    f"(run `dfd export-onnx {bundle.path}`)")
        weights = ONNX_SOURCES[name]
        if entry.get("weights_sha256") != weights_sha256(bundle, weights):
            return f"its {name} was made from an older {weights} (run `dfd export-onnx {bundle.path}` again)"
        if file_sha256(path) != entry.get("sha256"):
            return f"its {name} changed or is damaged since it was exported (run `dfd export-onnx {bundle.path}`)"
    return ""


def weights_sha256(bundle: Bundle, weights: str) -> str:
    """The SHA-256 of a Keras weights file as training recorded it (older bundles: of the file now)."""
    recorded = bundle.config.weights_sha256.get(weights)
    if recorded:
        return recorded
    return file_sha256(bundle.path / weights) if (bundle.path / weights).is_file() else ""


def onnx_record(bundle_dir: Path) -> dict:
    """What onnx.json says of the bundle's ONNX files ({} when there is none, or it is unreadable)."""
    try:
        record = json.loads((Path(bundle_dir) / ONNX_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def choose_runtime(runtime: str, device: str, bundles: list[Bundle]) -> str:
    """'onnx' or 'keras' for ``--runtime`` (auto: onnx on the CPU when every bundle has current ONNX files)."""
    if runtime not in RUNTIMES:
        raise OptionsError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if runtime == "keras":
        return "keras"
    from deepfake_cli.faces.detectors import resolve_device

    gpu = resolve_device(device) != "cpu"  # "auto" asks torch only where a GPU device node exists
    problems = {b.path: onnx_problem(b) for b in bundles}
    if runtime == "onnx":
        if gpu:
            raise BundleError("--runtime onnx runs on the CPU: pass --device cpu or auto, or --runtime keras for a GPU")
        bad = {p: why for p, why in problems.items() if why}
        if bad:
            path, why = next(iter(bad.items()))
            raise BundleError(f"model {path} cannot be served with --runtime onnx: {why}")
        return "onnx"
    return "keras" if gpu or any(problems.values()) else "onnx"


def session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session for ``path`` (``threads``: intra-op threads, None = one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers and the like are not for users
    # idle threads sleep instead of spinning: on a few cores shared with decoding and detection
    # (deepfake_cli.serve.pipeline) spinning only takes CPU from them
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for an unreadable model
        raise BundleError(f"{path} is not a usable ONNX model ({str(exc).splitlines()[0]})") from None


class OnnxModel:
    """An ONNX model with Keras' ``predict_on_batch``: one input array in, the list of outputs
    (one array when the model has a single output)."""

    def __init__(self, path: Path, threads: int | None = None):
        self.path = Path(path)
        self._session = session(self.path, threads)
        self._input = self._session.get_inputs()[0].name
        self.needs_fixed_shapes = False  # any batch size runs without a new trace
        self.input_shape = list(self._session.get_inputs()[0].shape)  # symbolic dimensions are strings

    def predict_on_batch(self, batch: np.ndarray):
        outputs = self._session.run(None, {self._input: np.ascontiguousarray(batch, np.float32)})
        return outputs[0] if len(outputs) == 1 else outputs


def onnx_feature_model(bundle: Bundle, threads: int | None = None) -> OnnxModel:
    """image -> [features, P(fake)], as Bundle.build_feature_model, from ``cnn.onnx``; a config
    whose input size is not the ONNX model's (an edited config.json) is a BundleError."""
    model = OnnxModel(bundle.path / CNN_ONNX, threads)
    sides = [d for d in model.input_shape[1:3] if isinstance(d, int)]  # (batch, S, S, 3)
    size = int(bundle.config.input_size)
    if sides and any(d != size for d in sides):
        raise BundleError(f"{bundle.path / CNN_ONNX} takes {sides[0]} px images but {bundle.path / 'config.json'} "
                          f"says input_size {size}: restore the config, or re-export with `dfd export-onnx`")
    return model


def onnx_lstm(bundle: Bundle, threads: int | None = None) -> OnnxModel:
    """(1, seq_len, D) -> P(fake), as Bundle.build_lstm, from ``lstm.onnx``."""
    return OnnxModel(bundle.path / LSTM_ONNX, threads)
