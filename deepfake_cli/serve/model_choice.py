"""Which model `dfd predict` serves, and on which runtime.

A model is named (a bundle or ensemble, by name or directory) or is the default: a bundle you
trained into ``--models-dir``/default, else the one shipped inside the package. Whether it runs
on onnxruntime or Keras is deepfake_cli.scoring.onnx_serving's rule; this module applies it to a whole
model (every member of an ensemble) and says why an exported model falls back to Keras.
"""

from __future__ import annotations

from pathlib import Path

from deepfake_cli.nets.bundle import load_bundle, resolve_bundle
from deepfake_cli.scoring.ensemble import is_ensemble, load_ensemble
from deepfake_cli.errors import DfdError
from deepfake_cli.scoring.onnx_serving import choose_runtime


class NoModelError(DfdError):
    """No default model is installed where predict looks for one."""


def default_bundle_dirs(models_dir: Path) -> list[Path]:
    """Where the default model is looked for: ``--models-dir``/default (one you trained), then the
    bundle shipped inside the package (deepfake_cli/serve/default_model), so any install finds it."""
    return [models_dir / "default", Path(__file__).resolve().parent / "default_model"]


def locate_model(model: str | None, models_dir: Path = Path("models")) -> Path:
    """The directory of a bundle or ensemble (by name or directory; None: the default model)."""
    if model is not None:
        return resolve_bundle(model, models_dir)
    candidates = [d for d in default_bundle_dirs(models_dir) if (d / "config.json").exists()]
    if not candidates:
        raise NoModelError("no default model is installed (looked in "
                           + ", ".join(str(d) for d in default_bundle_dirs(models_dir))
                           + "); pass --model NAME or train one with `dfd train-cnn`")
    return candidates[0]


def model_runtime(path: Path, runtime: str = "auto", device: str = "auto") -> str:
    """What serves the model at ``path``: 'onnx' or 'keras' (see onnx_serving.choose_runtime)."""
    bundles = load_ensemble(path).members if is_ensemble(path) else [load_bundle(path)]
    return choose_runtime(runtime, device, bundles)


def stale_onnx_note(path: Path) -> str:
    """Why a model that was exported to ONNX is served with Keras after all ('' when it is not)."""
    from deepfake_cli.scoring.onnx_serving import onnx_problem, onnx_record

    bundles = load_ensemble(path).members if is_ensemble(path) else [load_bundle(path)]
    for bundle in bundles:
        why = onnx_problem(bundle) if onnx_record(bundle.path) else ""
        if why:
            return f"model {bundle.path} runs on Keras, with a slower start: {why}"
    return ""
