"""Batch prediction as a library: what `dfd predict` does, without the terminal.

:class:`BatchPrediction` owns every rule of a batch: which model (deepfake_cli.serve.model_choice)
and runtime, the inputs (folders expanded, those a ``skip_done`` file has a verdict for left out),
where each input's evidence goes, the result files (each verdict written and flushed as soon as
it is known, appended to when resuming), Ctrl-C and SIGTERM (stop after the verdict being
written, keep every verdict reached), per-input errors (any exception in one input is that
input's error; the batch goes on) and the exit code. The command line only parses options,
calls it and renders what it returns::

    from deepfake_cli import BatchPrediction

    batch = BatchPrediction([Path("clips/")], csv_path=Path("out.csv"))
    outcome = batch.run(on_result=lambda r: print(r.path, r.verdict or r.error))
    outcome.exit_code  # the README's exit codes: the worst of the batch, 130 when interrupted

:func:`predict_batch` is the same in one call.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from deepfake_cli.data.shards import Shard
from deepfake_cli.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_WEAK_EVIDENCE
from deepfake_cli.serve.model_choice import locate_model, model_runtime, stale_onnx_note
from deepfake_cli.serve.output_paths import check_output_paths
from deepfake_cli.serve.pipeline import predict_many
from deepfake_cli.serve.predict import EnsemblePredictor, PredictError, PredictResult, expand_inputs, open_predictor
from deepfake_cli.serve.result_files import ResultWriter, done_paths, interrupt_on_sigterm, resume_notes
from deepfake_cli.serve.schema import ModelIdentity, model_identity, result_record


@dataclass(frozen=True)
class Evidence:
    """What a batch writes besides the verdicts (`predict`'s --annotate, --annotate-heatmap,
    --heatmap and --report). They show one model's evidence: an ensemble refuses them."""

    annotate: Path | None = None  # a video with face boxes, scores and the timeline; for several inputs a folder of them
    annotate_heatmap: bool = False  # with annotate: each face's class activation map drawn onto it
    heatmap: Path | None = None  # a folder: the reported track's crops beside their activation maps
    report: Path | None = None  # an HTML page for one input; for several, a folder of one page each

    @property
    def wanted(self) -> bool:
        return self.annotate is not None or self.heatmap is not None or self.report is not None

    @property
    def needs_gradients(self) -> bool:
        """Whether the Keras model is needed whatever serves the scores (activation maps)."""
        return self.heatmap is not None or self.report is not None or self.annotate_heatmap

    def for_input(self, i: int, path: Path, several: bool, root: Path | None = None) -> dict:
        """Keyword arguments of Predictor.finish for the ``i``-th input (its report page's folder made).
        Its evidence files are named after its path below ``root`` (the inputs' common folder; see
        :func:`evidence_name`), so two inputs of one name in two folders never share a page."""
        name = evidence_name(path, root)
        page = None if self.report is None else (self.report / f"{name}.html" if several else self.report)
        if page is not None:
            page.parent.mkdir(parents=True, exist_ok=True)
        annotated = None if self.annotate is None else (self.annotate / f"{name}.mp4" if several else self.annotate)
        if annotated is not None:
            annotated.parent.mkdir(parents=True, exist_ok=True)
        return {"annotate": annotated, "heatmap": self.heatmap, "report": page,
                "annotate_heatmap": self.annotate_heatmap, "evidence_name": name}


def evidence_name(path: Path, root: Path | None) -> str:
    """A file name unique to an input within a batch: its path below ``root`` with the folders
    joined by "__" and its suffix kept (``a/x.jpg`` -> ``a__x.jpg``, beside ``b__x.jpg`` and
    ``a__x.mp4``)."""
    absolute = Path(path).absolute()
    try:
        relative = absolute.relative_to(root) if root is not None else Path(absolute.name)
    except ValueError:
        relative = Path(absolute.name)
    return "__".join(relative.parts) or absolute.name


def common_root(files: list[Path]) -> Path | None:
    """The deepest folder holding every input (None for no inputs)."""
    if not files:
        return None
    return Path(os.path.commonpath([str(Path(f).absolute().parent) for f in files]))


@dataclass
class BatchOutcome:
    """What a batch did: its results in input order (only those reached when interrupted)."""

    results: list[PredictResult]
    total: int  # inputs to score (after skip_done)
    interrupted: bool = False  # stopped by Ctrl-C or SIGTERM
    strict: bool = False  # a verdict with a warning counts as weak evidence (exit 6)
    bugs: dict[str, str] = field(default_factory=dict)  # input -> traceback of an exception that is not a DfdError

    @property
    def exit_code(self) -> int:
        """The README's exit code of the batch: 130 when interrupted, else the worst input's code
        (with ``strict``, 6 when every input got a verdict and one carries a warning or is
        "uncertain"), else 0."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        codes = [r.exit_code for r in self.results if r.exit_code]
        if self.strict and not codes and any(r.warnings or r.verdict == "uncertain" for r in self.results):
            return EXIT_WEAK_EVIDENCE
        return max(codes) if codes else EXIT_OK


class BatchPrediction:
    """One batch of `dfd predict`: built from the options, then :meth:`run`.

    Building it resolves the model (None: the default model) and its runtime (``auto``: ONNX
    when the model has current ONNX files), expands folders and reads ``skip_done``; it loads
    no model, so a caller can report what it found first (:attr:`note`, :attr:`done`,
    :attr:`needs_keras`). :meth:`load` opens the predictor (threshold options checked there);
    :meth:`run` loads it if needed and scores every input. Errors that stop the whole batch
    (no such model, a bad option, an unreadable ``skip_done`` file) are DfdErrors.
    """

    def __init__(self, inputs: list[Path], model: str | Path | None = None, *, models_dir: Path = Path("models"),
                 runtime: str = "auto", device: str = "auto", threshold: float | None = None,
                 max_fpr: float | None = None, detect_every: int | None = None, evidence: Evidence = Evidence(),
                 csv_path: Path | None = None, jsonl_path: Path | None = None, skip_done: Path | None = None,
                 strict: bool = False, windows: int | None = None, shard: Shard | None = None):
        self.model_dir = locate_model(None if model is None else str(model), models_dir)
        self.runtime = model_runtime(self.model_dir, runtime, device)
        # why a model exported to ONNX is served by Keras after all ('' when it is not, or not asked)
        self.note = stale_onnx_note(self.model_dir) if runtime == "auto" and self.runtime == "keras" else ""
        self.evidence = evidence
        self.csv_path, self.jsonl_path, self.skip_done, self.strict = csv_path, jsonl_path, skip_done, strict
        self.files = expand_inputs(list(inputs))
        # evidence is named as one unsharded run names it, whichever shard scores the input
        self.several, self.root = len(self.files) > 1, common_root(self.files)
        if shard is not None:  # --shard K/N: this 1/N of the inputs, by content hash (data/shards.py)
            self.files = [f for f in self.files if shard.holds_file(f)]
        self.done: set[str] = set()  # inputs the skip_done file has a verdict for
        self.resume_notes: list[str] = []  # what resuming drops from the result files and does again
        if skip_done is not None:
            self.done = done_paths(skip_done)
            self.resume_notes = [n for f in (csv_path, jsonl_path) if f is not None for n in resume_notes(f)]
            self.files = [f for f in self.files if str(f) not in self.done]
        # every path written to, checked before any clip is decoded (an OutputPathError, exit 2)
        check_output_paths(csv=csv_path, jsonl=jsonl_path, report=evidence.report, heatmap=evidence.heatmap,
                           annotate=evidence.annotate, several=self.several)
        self._predictor_options = {"device": device, "threshold": threshold, "max_fpr": max_fpr,
                                   "detect_every": detect_every, "windows": windows}
        self.predictor = None
        self.model: ModelIdentity | None = None  # the loaded model's name and weights digest (set by load)

    @property
    def needs_keras(self) -> bool:
        """Whether running the batch imports Keras (a Keras runtime, or activation maps of a model
        without a current cam.onnx, report.heatmaps.activation_mapper)."""
        return self.runtime == "keras" or (self.evidence.needs_gradients and not self._maps_on_onnx())

    def _maps_on_onnx(self) -> bool:
        from deepfake_cli.nets.bundle import load_bundle
        from deepfake_cli.scoring.ensemble import is_ensemble
        from deepfake_cli.scoring.onnx_serving import CAM_ONNX, onnx_problem

        return not is_ensemble(self.model_dir) and not onnx_problem(load_bundle(self.model_dir), [CAM_ONNX])

    def load(self):
        """Open the model's predictor (once); a PredictError for options it cannot serve."""
        if self.predictor is None:
            predictor = open_predictor(self.model_dir, self.runtime, **self._predictor_options)
            if isinstance(predictor, EnsemblePredictor) and self.evidence.wanted:
                names = ", ".join(b.path.name for b in predictor.ensemble.members)
                raise PredictError("--annotate, --heatmap and --report show one model's evidence: pass one "
                                   f"member of the ensemble ({names}) as --model")
            self.predictor = predictor
            self.model = model_identity(predictor)
        return self.predictor

    def record(self, result: PredictResult) -> dict:
        """A result as the schema object every output gives (deepfake_cli.serve.schema, docs/output.md)."""
        return result_record(result, model_identity(self.load()) if self.model is None else self.model)

    def run(self, on_result: Callable[[PredictResult], None] | None = None) -> BatchOutcome:
        """Score every input, in order. Each result is written to the result files, then given to
        ``on_result``, as one step that Ctrl-C or SIGTERM does not cut (a verdict written is a
        verdict reported); the signal then stops the batch and the outcome says ``interrupted``.
        An exception in one input is that input's error (traceback of a bug in ``bugs``)."""
        predictor = self.load()
        outcome = BatchOutcome(results=[], total=len(self.files), strict=self.strict)
        several = self.several

        def bug(path: Path, exc: Exception) -> None:
            outcome.bugs[str(path)] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

        with ResultWriter(self.csv_path, self.jsonl_path, append=self.skip_done is not None) as writer, \
                interrupt_on_sigterm() as signals:
            try:
                root = self.root
                for result in predict_many(predictor, self.files,
                                           lambda i, path: self.evidence.for_input(i, path, several, root),
                                           on_exception=bug):
                    self.deliver(result, outcome, writer, signals, on_result)
            except KeyboardInterrupt:
                outcome.interrupted = True
        return outcome

    def deliver(self, result: PredictResult, outcome: BatchOutcome, writer, signals, on_result) -> None:
        """One result into the outcome and the result files, then to ``on_result``: one step that
        Ctrl-C or SIGTERM does not cut (a verdict written is a verdict reported)."""
        with signals.held():
            outcome.results.append(result)
            writer.write(self.record(result))
            if on_result is not None:
                on_result(result)


def predict_batch(inputs: list[Path], model: str | Path | None = None, *,
                  on_result: Callable[[PredictResult], None] | None = None, **options) -> BatchOutcome:
    """Score ``inputs`` (files or folders) with ``model`` (None: the default model): a
    :class:`BatchPrediction` built with ``options`` (its keyword arguments) and run."""
    return BatchPrediction(inputs, model, **options).run(on_result)
