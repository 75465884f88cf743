"""Which model a command uses, and on which runtime `dfd predict` serves it.

One resolver for every command (:func:`locate_model`): a model is named (a bundle or ensemble,
by directory, or by name under ``--models-dir``) or is the default: a bundle you trained into
``--models-dir``/default, else the one shipped inside the package; the name ``default`` finds
the same model when ``--models-dir`` has none of that name. Commands that write a new bundle
take its directory from :func:`model_dir_to_write` (``--models-dir``/NAME, never the package).

Whether a model runs on onnxruntime or Keras is deepfake_cli.scoring.onnx_serving's rule; this
module applies it to a whole model (every member of an ensemble) and says why an exported model
falls back to Keras.
"""

from __future__ import annotations

from pathlib import Path

from deepfake_cli.nets.bundle import CONFIG_FILE, BundleError, resolve_bundle
from deepfake_cli.nets.weights_trust import require_recorded_hashes
from deepfake_cli.scoring.ensemble import is_ensemble, model_bundles
from deepfake_cli.errors import DfdError
from deepfake_cli.scoring.onnx_serving import choose_runtime

DEFAULT_MODEL_NAME = "default"
PACKAGED_MODEL = Path(__file__).resolve().parent / "default_model"


class NoModelError(DfdError):
    """No default model is installed where predict looks for one."""


def default_bundle_dirs(models_dir: Path) -> list[Path]:
    """Where the default model is looked for: ``--models-dir``/default (one you trained), then the
    bundle shipped inside the package (deepfake_cli/serve/default_model), so any install finds it."""
    return [Path(models_dir) / DEFAULT_MODEL_NAME, PACKAGED_MODEL]


def _is_model(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() or is_ensemble(path)


def locate_model(model: str | Path | None, models_dir: Path = Path("models"), *, packaged: bool = True) -> Path:
    """The directory of the bundle or ensemble a command reads: ``model`` as a directory, else as
    a name under ``models_dir``; None (or the name ``default``, when ``models_dir`` has no model
    of that name): the default model (:func:`default_bundle_dirs`).

    ``packaged=False`` for commands that write into the bundle (train-lstm, export-onnx): the
    model shipped inside the package is then found by its directory only, never by a name.
    A BundleError (or NoModelError) says what was looked for.
    """
    if model is not None:
        try:
            return resolve_bundle(model, models_dir)
        except BundleError:
            if str(model) != DEFAULT_MODEL_NAME:
                raise
    candidates = [d for d in default_bundle_dirs(models_dir) if _is_model(d)]
    if not packaged:
        candidates = [d for d in candidates if d.resolve() != PACKAGED_MODEL]
    if not candidates:
        if not packaged:
            raise BundleError(f"no model bundle {DEFAULT_MODEL_NAME!r} under {models_dir}; the model shipped "
                              f"inside the package is not written to (give its directory, {PACKAGED_MODEL}, "
                              "to mean it)")
        raise NoModelError("no default model is installed (looked in "
                           + ", ".join(str(d) for d in default_bundle_dirs(models_dir))
                           + "); pass --model NAME or train one with `dfd train-cnn`")
    return candidates[0]


def model_dir_to_write(model: str | Path, models_dir: Path = Path("models")) -> Path:
    """Where a command that creates a bundle or ensemble (train-cnn, ensemble) writes it: ``model``
    itself when it is a path (absolute, with a folder, or existing), else ``models_dir``/``model``."""
    path = Path(model)
    return path if (path.is_absolute() or len(path.parts) > 1 or path.exists()) else Path(models_dir) / str(model)


def model_runtime(path: Path, runtime: str = "auto", device: str = "auto") -> str:
    """What serves the model at ``path``: 'onnx' or 'keras' (see onnx_serving.choose_runtime); nothing
    serves a bundle whose config.json records no SHA-256 for a weights file it serves (a BundleError
    saying how to vouch for them: `dfd check-model --trust`), so no weights are served unchecked."""
    bundles = model_bundles(path)
    for bundle in bundles:
        require_recorded_hashes(bundle)
    return choose_runtime(runtime, device, bundles)


def stale_onnx_note(path: Path) -> str:
    """Why a model that was exported to ONNX is served with Keras after all ('' when it is not)."""
    from deepfake_cli.scoring.onnx_serving import CNN_ONNX, LSTM_ONNX, onnx_problem, onnx_record

    for bundle in model_bundles(path):
        exported = onnx_record(bundle.path) or any((bundle.path / n).is_file() for n in (CNN_ONNX, LSTM_ONNX))
        why = onnx_problem(bundle) if exported else ""
        if why:
            return f"model {bundle.path} runs on Keras, with a slower start: {why}"
    return ""
