"""The Python API: :class:`Detector`, one model loaded once, scoring clips from files or memory.

::

    from deepfake_cli import Detector

    detector = Detector()                        # the bundled default model (or Detector("my-model"))
    result = detector.predict("examples/astronaut.mp4")
    result["verdict"], result["probability"]     # ('real', 0.3717...)
    detector.predict(frames)                     # a sequence of H x W x 3 uint8 RGB frames, in clip order

A result is the object `dfd predict --json` prints for one input (deepfake_cli.serve.schema,
docs/output.md). An input that cannot be scored (unreadable, no face) raises :class:`InputError`,
a DfdError carrying that input's record (its ``error`` and ``exit_code``), never a guess.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from deepfake_cli.errors import DfdError
from deepfake_cli.serve.model_choice import locate_model, model_runtime
from deepfake_cli.serve.predict import Predictor, PredictError, PredictResult, open_predictor
from deepfake_cli.serve.schema import ModelIdentity, model_identity, result_record

Source = str | os.PathLike | Sequence[np.ndarray] | np.ndarray


class InputError(DfdError):
    """An input that got no verdict; ``record`` is its result object, ``exit_code`` the CLI's code for it."""

    def __init__(self, record: dict):
        super().__init__(record.get("error") or f"{record.get('path')}: no verdict")
        self.record = record
        self.exit_code = int(record.get("exit_code") or 1)


class Detector:
    """A model, loaded once, that scores clips: a video or image file (``str`` or ``Path``) or the
    RGB frames of a clip already in memory.

    ``model``: a bundle or ensemble (a directory, or a name under ``models_dir``); None: the
    default model. ``runtime``: auto (onnxruntime when the model has current ONNX files) | onnx |
    keras. ``threshold``/``max_fpr``: as `dfd predict`'s options.
    """

    def __init__(self, model: str | os.PathLike | None = None, *, models_dir: str | os.PathLike = "models",
                 runtime: str = "auto", device: str = "auto", threshold: float | None = None,
                 max_fpr: float | None = None, detect_every: int | None = None):
        self.path = locate_model(None if model is None else str(model), Path(models_dir))
        self.runtime = model_runtime(self.path, runtime, device)
        self.predictor = open_predictor(self.path, self.runtime, device=device, threshold=threshold,
                                        max_fpr=max_fpr, detect_every=detect_every)
        self.model: ModelIdentity = model_identity(self.predictor)

    @property
    def threshold(self) -> float:
        return float(self.predictor.threshold)

    def __repr__(self) -> str:
        return f"Detector(model={self.model.name!r}, sha256={self.model.sha256[:12]}..., runtime={self.runtime!r})"

    def result(self, source: Source, *, name: str | None = None, fps: float = 0.0,
               report: str | os.PathLike | None = None) -> PredictResult:
        """The PredictResult of one input, failed or not (its ``error`` says why). ``name``: the
        result's path for frames (default ``<frames>``); ``fps``: their frame rate, if known;
        ``report``: also write the HTML evidence page there (needs Keras for the heatmaps)."""
        report = None if report is None else Path(report)
        if isinstance(source, (str, os.PathLike)):
            return self.predictor.predict(Path(source), report=report)
        if not isinstance(self.predictor, Predictor):
            raise PredictError("frames in memory are scored by one model, not an ensemble: pass one of its members")
        prepared = self.predictor.prepare_frames(source, name=name or "<frames>", fps=fps)
        return self.predictor.finish(prepared, report=report)

    def record(self, result: PredictResult) -> dict:
        """A PredictResult as the schema object (docs/output.md)."""
        return result_record(result, self.model)

    def predict(self, source: Source, **options) -> dict:
        """The result object of one input (the one `dfd predict --json` prints); an InputError
        when it gets no verdict. ``options``: those of :meth:`result`."""
        record = self.record(self.result(source, **options))
        if record["error"] or record["exit_code"]:
            raise InputError(record)
        return record
