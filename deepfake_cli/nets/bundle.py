"""A trained model on disk: a directory holding ``config.json`` and Keras weight files.

Layout (``models/<name>/``)::

    config.json          everything needed to use the model (see BundleConfig)
    cnn.weights.h5       frame classifier (features -> Dropout -> Dense(1, sigmoid)); lstm.weights.h5: the BiLSTM
    cnn.onnx, lstm.onnx  optional: the models for onnxruntime, cam.onnx, onnx.json (`dfd export-onnx`)
    checkpoints/         per-epoch training state, so a killed run can resume

Models are rebuilt from the config with the public Keras API and only their weights are read
(``load_weights``): opening a bundle never runs code from a file. Files are written atomically.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import get_type_hints

import h5py
import numpy as np

from deepfake_cli.errors import DfdError
from deepfake_cli.faces.track_rule import TrackRuleError, recorded_rule
from deepfake_cli.files import atomic_write, atomic_write_text, file_sha256
from deepfake_cli.nets.models import build_classifier, build_lstm_model

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
ENSEMBLE_FILE = "ensemble.json"  # what an ensemble's directory holds instead (deepfake_cli.scoring.ensemble)
CNN_WEIGHTS = "cnn.weights.h5"
LSTM_WEIGHTS = "lstm.weights.h5"
CHECKPOINT_DIR = "checkpoints"
CNN_CHECKPOINTS = "cnn"  # checkpoints/cnn: train-cnn's per-epoch state
LSTM_CHECKPOINTS = "lstm"  # checkpoints/lstm: train-lstm's
CLASSES = ("real", "fake")  # score = P(CLASSES[1])
FEATURE_LAYER = "pooled features before the classifier head"
AGGREGATIONS = ("mean", "median", "max")  # scoring.metrics.aggregate_video_scores; crossval chooses
INPUTS = ("face", "frame")  # what the CNN looks at (deepfake_cli.data.inputs reads each from the store)
# Keys added after format 1 was first written: a config without them takes the default.
OPTIONAL_KEYS = ("test_time_flip", "weights_sha256", "input", "card", "uncertain", "windows")


class BundleError(DfdError):
    """A model bundle is missing, malformed, or does not match its weights."""


def _default_lstm() -> dict:
    return {"units": 128, "dropout": 0.3, "seq_len": 0, "feature_model": "", "trained": False}


@dataclass
class BundleConfig:
    """The contents of config.json. Score = P(fake) = sigmoid output (class order real, fake)."""

    name: str
    backbone: str
    input_size: int
    feature_dim: int
    format_version: int = FORMAT_VERSION
    weights_origin: str = "none"
    input: str = "face"  # what the CNN looks at: face crops, or whole frames letterboxed (deepfake_cli.data.inputs)
    # the stored crops' settings (size, align, margin, detector) and face rule (faces.track_rule) it was trained on
    face: dict = field(default_factory=dict)
    fpv: int = 0
    sampling: str = ""
    feature_layer: str = FEATURE_LAYER
    head_dropout: float = 0.2
    classes: list = field(default_factory=lambda: list(CLASSES))
    score: str = "P(fake): sigmoid output of the classifier head"
    threshold: float = 0.5
    temperature: float = 1.0
    video_aggregation: str = "mean"
    test_time_flip: bool = False  # score each face and its mirror image, average features and scores
    thresholds_at_fpr: dict = field(default_factory=dict)  # {"0.01": threshold, ...} when calibrated
    uncertain: list = field(default_factory=list)  # [lo, hi]: calibrated P in [lo, hi) is "uncertain" (train.calibrate, crossval)
    windows: int = 1  # predict: windows of fpv consecutive frames over the clip (aggregated by video_aggregation)
    weights_sha256: dict = field(default_factory=dict)  # {"cnn.weights.h5": hex digest, ...} as trained
    lstm: dict = field(default_factory=_default_lstm)
    split_ids: dict = field(default_factory=dict)  # {"train": [video ids], "val": [video ids]}
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    card: dict = field(default_factory=dict)  # the model card: training data, terms, use, limits (nets.card)
    commands: list = field(default_factory=list)
    dfd_version: str = ""
    keras_backend: str = ""
    created: str = ""
    updated: str = ""

    def to_json(self) -> str:
        """Serialise as indented JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "config.json") -> "BundleConfig":
        """Parse and validate; raise BundleError saying what is wrong."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BundleError(f"{source} is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise BundleError(f"{source} must hold a JSON object, not {type(data).__name__}")
        _check_format_version(data, source)
        _check_keys(data, source)
        _check_types(data, source)
        config = cls(**data)
        _check_values(config, source)
        return config


def _check_format_version(data: dict, source: str) -> None:
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{source}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise BundleError(f"{source} was written by a newer dfd (bundle format {version}); this dfd "
                          f"reads up to format {FORMAT_VERSION}. Upgrade dfd to use this model.")


def _check_keys(data: dict, source: str) -> None:
    known = [f.name for f in fields(BundleConfig)]
    missing = [k for k in known if k not in data and k not in OPTIONAL_KEYS]
    unknown = sorted(set(data) - set(known))
    if missing:
        raise BundleError(f"{source} is missing key(s): {', '.join(missing)}")
    if unknown:
        raise BundleError(f"{source} has unknown key(s): {', '.join(unknown)}")


def _check_types(data: dict, source: str) -> None:
    for name, kind in get_type_hints(BundleConfig).items():
        if name not in data:  # an optional key (OPTIONAL_KEYS) takes its default
            continue
        value = data[name]
        ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise BundleError(f"{source}: {name} must be of type {kind.__name__}, "
                              f"got {type(value).__name__} ({value!r})")


def _check_values(config: BundleConfig, source: str) -> None:
    problems = []
    if config.classes != list(CLASSES):
        problems.append(f"classes must be {list(CLASSES)}")
    if config.input_size <= 0 or config.feature_dim <= 0:
        problems.append("input_size and feature_dim must be positive")
    if not 0.0 <= config.threshold <= 1.0:
        problems.append("threshold must lie in [0, 1]")
    if config.temperature <= 0:
        problems.append("temperature must be positive")
    if config.input not in INPUTS:
        problems.append(f"input must be one of {list(INPUTS)}")
    if config.uncertain and not (len(config.uncertain) == 2 and 0 <= config.uncertain[0] <= config.threshold <= config.uncertain[1] <= 1):
        problems.append("uncertain must be [lo, hi] with 0 <= lo <= threshold <= hi <= 1")
    if config.video_aggregation not in AGGREGATIONS:
        problems.append(f"video_aggregation must be one of {list(AGGREGATIONS)}")
    try:
        recorded_rule(config.face)
    except TrackRuleError as exc:
        problems.append(f"face: {exc}")
    missing_lstm = [k for k in _default_lstm() if k not in config.lstm]
    if missing_lstm:
        problems.append(f"lstm is missing {', '.join(missing_lstm)}")
    if problems:
        raise BundleError(f"{source}: " + "; ".join(problems))


# ---------------------------------------------------------------------- files
def now_iso() -> str:
    """Local time as an ISO 8601 string (seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def save_config(bundle_dir: Path, config: BundleConfig) -> Path:
    """Write ``config.json`` atomically (stamping ``updated``); return its path."""
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    config.updated = now_iso()
    config.created = config.created or config.updated
    path = bundle_dir / CONFIG_FILE
    atomic_write_text(path, config.to_json())
    return path


def read_config(bundle_dir: Path) -> BundleConfig:
    """Read and validate ``bundle_dir/config.json``."""
    path = Path(bundle_dir) / CONFIG_FILE
    if not Path(bundle_dir).is_dir():
        raise BundleError(f"no model bundle at {bundle_dir} (not a directory)")
    if not path.is_file() and (Path(bundle_dir) / ENSEMBLE_FILE).is_file():
        raise BundleError(f"{bundle_dir} is an ensemble, not a single bundle: only `dfd predict` and "
                          "`dfd evaluate` take ensembles (this command needs one of its members)")
    if not path.is_file():
        raise BundleError(f"{bundle_dir} is not a model bundle: it has no {CONFIG_FILE}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"cannot read {path}: {exc}") from None
    return BundleConfig.from_json(text, source=str(path))


def weights_tag(model_kind: str, config: BundleConfig) -> dict:
    """Attributes written into a weights file to tell which model it belongs to."""
    return {"dfd_model": model_kind, "dfd_backbone": config.backbone,
            "dfd_input_size": int(config.input_size), "dfd_feature_dim": int(config.feature_dim)}


def save_weights_atomic(model, path: Path, tag: dict | None = None) -> None:
    """``model.save_weights`` to a temporary file, tag it, then rename into place."""
    with atomic_write(path, suffix=".weights.h5") as tmp:  # Keras wants the .weights.h5 suffix
        weights_only(model).save_weights(tmp)
        if tag:
            with h5py.File(tmp, "r+") as f:
                for key, value in tag.items():
                    f.attrs[key] = value


def weights_only(model):
    """An uncompiled view of a functional model (same layers): its weight files hold no optimizer."""
    if getattr(model, "optimizer", None) is None:
        return model
    import keras

    return keras.Model(model.inputs, model.outputs, name=model.name)


def read_weights_tag(path: Path) -> dict:
    """The dfd attributes of a weights file (empty when it has none)."""
    try:
        with h5py.File(path, "r") as f:
            return {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()
                    if k.startswith("dfd_")}
    except Exception as exc:  # h5py reports damage as OSError, RuntimeError, KeyError, ValueError...
        raise BundleError(f"{path} is not a readable weights file ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def record_weights_hashes(config: BundleConfig, bundle_dir: Path) -> None:
    """Record the SHA-256 of each weights file the bundle holds now (after training wrote it)."""
    config.weights_sha256 = {name: file_sha256(Path(bundle_dir) / name) for name in (CNN_WEIGHTS, LSTM_WEIGHTS)
                             if (Path(bundle_dir) / name).is_file()}


def check_weights_hash(path: Path, expected: str | None) -> None:
    """Raise BundleError when a weights file differs from the one training recorded."""
    if expected and file_sha256(path) != expected:
        raise BundleError(f"{path}: weights file changed or damaged since training (its SHA-256 differs from "
                          "the one in config.json); restore the bundle, or retrain it")


def load_weights_checked(model, path: Path, expected: dict, sha256: str | None = None) -> None:
    """Load weights into ``model``; raise BundleError if they belong to another model, or differ
    from the file training wrote (``sha256``, when the config records one)."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"missing weights file {path}: this part of the model was not trained "
                          "(or training has not finished)")
    check_weights_hash(path, sha256)
    tag = read_weights_tag(path)
    for key, want in expected.items():
        if key in tag and tag[key] != want:
            raise BundleError(f"{path} holds weights for {key[4:]}={tag[key]!r}, but the bundle "
                              f"declares {key[4:]}={want!r} (backbone {expected.get('dfd_backbone')})")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            weights_only(model).load_weights(path)
        except (ValueError, KeyError, OSError, TypeError) as exc:
            raise BundleError(f"{path} does not fit backbone {expected.get('dfd_backbone')!r}: "
                              f"{str(exc).splitlines()[0]}") from None
        except Exception as exc:  # a damaged file: h5py's RuntimeError ("Unable to synchronously check link
            # existence") and the like, one line naming the file rather than a traceback
            raise BundleError(f"{path} cannot be loaded, it is damaged ({_first_line(exc)}); restore the "
                              "bundle, or retrain it") from None
    skipped = [str(w.message) for w in caught if "Skipping" in str(w.message) or "could not" in str(w.message)]
    if skipped:
        raise BundleError(f"{path} does not fit backbone {expected.get('dfd_backbone')!r}: {skipped[0]}")


def save_optimizer_state(optimizer, path: Path) -> None:
    """Save an optimizer's variables (after building it) as an .npz, atomically."""
    import keras

    arrays = {f"v{i:05d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(optimizer.variables)}
    names = np.array([v.path for v in optimizer.variables])
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, __names__=names, **arrays)


def load_optimizer_state(optimizer, path: Path) -> None:
    """Assign the variables saved by :func:`save_optimizer_state` to a built optimizer."""
    with np.load(path, allow_pickle=False) as data:
        values = [data[f"v{i:05d}"] for i in range(len(data.files) - 1)]
    variables = optimizer.variables
    if len(values) != len(variables):
        raise BundleError(f"{path} holds {len(values)} optimizer variables, expected {len(variables)}")
    for var, value in zip(variables, values):
        if tuple(var.shape) != tuple(value.shape):
            raise BundleError(f"{path}: optimizer variable {var.path} has shape {value.shape}, "
                              f"expected {tuple(var.shape)}")
        var.assign(value.astype(var.dtype))


# ---------------------------------------------------------------------- bundle
@dataclass
class Bundle:
    """An opened bundle: its directory and validated config; builds models on demand."""

    path: Path
    config: BundleConfig

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def cnn_weights(self) -> Path:
        return self.path / CNN_WEIGHTS

    @property
    def lstm_weights(self) -> Path:
        return self.path / LSTM_WEIGHTS

    @property
    def has_lstm(self) -> bool:
        """Whether the config says the LSTM is trained (its file must then be there: build_lstm
        refuses a missing or damaged one rather than falling back to the CNN)."""
        return bool(self.config.lstm.get("trained"))

    @property
    def seq_len(self) -> int:
        return int(self.config.lstm.get("seq_len") or self.config.fpv)

    @property
    def feature_model_name(self) -> str:
        """Name under which this bundle's features are stored (default: directory name)."""
        return self.config.lstm.get("feature_model") or self.path.name

    def build_feature_model(self):
        """One model, image -> [pooled features (D,), P(fake)], with trained weights."""
        classifier, feature_model = build_classifier(self.config.backbone, self.config.input_size,
                                                     "none", self.config.head_dropout)
        load_weights_checked(classifier, self.cnn_weights, weights_tag("cnn", self.config),
                             self.config.weights_sha256.get(CNN_WEIGHTS))
        return feature_model

    def build_lstm(self):
        """The sequence classifier ((seq_len, D) -> P(fake)) with trained weights."""
        lstm = self.config.lstm
        model = build_lstm_model(self.seq_len, self.config.feature_dim, int(lstm["units"]),
                                 float(lstm["dropout"]))
        load_weights_checked(model, self.lstm_weights, weights_tag("lstm", self.config),
                             self.config.weights_sha256.get(LSTM_WEIGHTS))
        return model


def load_bundle(path: Path | str) -> Bundle:
    """Open the bundle directory at ``path`` (config validated; weights read lazily)."""
    path = Path(path)
    return Bundle(path=path, config=read_config(path))


def resolve_bundle(name_or_path: str | Path, models_dir: Path | str) -> Path:
    """The bundle (or ensemble) directory for a path to one, or for a name under ``models_dir``."""
    def is_model(path: Path) -> bool:
        return (path / CONFIG_FILE).is_file() or (path / ENSEMBLE_FILE).is_file()

    candidate = Path(name_or_path)
    if is_model(candidate):
        return candidate
    named = Path(models_dir) / str(name_or_path)
    if is_model(named):
        return named
    available = sorted({p.parent.name for f in (CONFIG_FILE, ENSEMBLE_FILE) for p in Path(models_dir).glob(f"*/{f}")})
    hint = f"; models in {models_dir}: {', '.join(available)}" if available else f"; {models_dir} has no models"
    raise BundleError(f"no model bundle {str(name_or_path)!r} (not a bundle directory, "
                      f"nor a name under {models_dir}){hint}")


def dfd_version() -> str:
    """The installed dfd version string."""
    from deepfake_cli import __version__

    return __version__


def keras_backend() -> str:
    """The active Keras backend name."""
    import keras

    return keras.backend.backend()
