"""dfd: deepfake detection for face videos (CNN features + bidirectional LSTM).

The library's entry points are imported on first use, so ``import deepfake_cli`` stays cheap
(no model, framework or video library loaded):

- :class:`Detector`: the Python API. ``Detector(model=None).predict(path_or_frames)`` scores a
  video or image file (``str`` or ``Path``) or a sequence of RGB frames (H x W x 3 uint8 NumPy
  arrays) and returns the object `dfd predict --json` prints for one input (docs/output.md);
  :class:`InputError` when an input gets no verdict (deepfake_cli.serve.detector);
- :class:`BatchPrediction`, :func:`predict_batch`, :class:`Evidence`, :class:`BatchOutcome`: what
  `dfd predict` runs (deepfake_cli.serve.batch);
- :class:`DfdError`: the base of every error dfd raises on purpose (deepfake_cli.errors).
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Detector": "deepfake_cli.serve.detector",
    "InputError": "deepfake_cli.serve.detector",
    "BatchPrediction": "deepfake_cli.serve.batch",
    "BatchOutcome": "deepfake_cli.serve.batch",
    "Evidence": "deepfake_cli.serve.batch",
    "predict_batch": "deepfake_cli.serve.batch",
    "DfdError": "deepfake_cli.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deepfake_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
