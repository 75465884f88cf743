"""A batch of `dfd predict` mapped over a Ray cluster: `dfd predict FOLDER --engine ray --workers N`,
or from Python::

    import ray
    from deepfake_cli.serve.ray_batch import RayBatchPrediction

    ray.init(num_cpus=2)                     # or ray.init(address="auto"): a running cluster
    batch = RayBatchPrediction([Path("clips/")], workers=2, csv_path=Path("out.csv"))
    outcome = batch.run(on_result=lambda r: print(r.path, r.verdict or r.error))

It is a :class:`~deepfake_cli.serve.batch.BatchPrediction` (the same options, inputs, result
files, Ctrl-C and exit code) whose inputs are scored by ``workers`` Ray actors, each loading the
model once and scoring one input per call with the code a plain run uses
(:func:`~deepfake_cli.serve.pipeline.predict_many`). Results come back in input order, each
written and reported as soon as it and every input before it are known; an input's error
(a bad file, a bug, its worker dying) is that input's result and the batch goes on.

Ray is the ``ray`` extra (``pip install 'deepfake-cli[ray]'``), imported only here and only when
a batch runs. Without a running Ray (``ray.is_initialized()`` false), :meth:`RayBatchPrediction.run`
calls ``ray.init()`` (which joins the cluster ``RAY_ADDRESS`` names, else starts a local one) and
shuts it down at the end; a Ray the caller started is left running. Each worker takes one CPU.
"""

from __future__ import annotations

import traceback
from collections import deque
from pathlib import Path
from typing import Callable

from deepfake_cli.errors import DfdError, OptionsError
from deepfake_cli.serve.batch import BatchOutcome, BatchPrediction
from deepfake_cli.serve.pipeline import failed_result
from deepfake_cli.serve.predict import PredictResult
from deepfake_cli.serve.result_files import ResultWriter, interrupt_on_sigterm

IN_FLIGHT_PER_WORKER = 2  # one input being scored, one queued: a worker never waits for the driver


class RayMissingError(OptionsError):
    """--engine ray without Ray installed (exit 2)."""


def _ray():
    try:
        import ray
    except ImportError:
        raise RayMissingError("--engine ray needs Ray, which this install lacks: pip install 'deepfake-cli[ray]'") \
            from None
    return ray


class _Scorer:
    """The Ray actor's body: one predictor, loaded once, scoring one input per call."""

    def __init__(self, model_dir: str, runtime: str, options: dict, evidence_wanted: bool):
        from deepfake_cli.serve.predict import EnsemblePredictor, PredictError, open_predictor
        from deepfake_cli.serve.schema import model_identity

        self.error: DfdError | None = None  # why the model cannot serve this batch (a bad option), for load()
        try:
            self.predictor = open_predictor(Path(model_dir), runtime, **options)
            if isinstance(self.predictor, EnsemblePredictor) and evidence_wanted:
                names = ", ".join(b.path.name for b in self.predictor.ensemble.members)
                raise PredictError("--annotate, --heatmap and --report show one model's evidence: pass one "
                                   f"member of the ensemble ({names}) as --model")
            self.identity = model_identity(self.predictor)
        except DfdError as exc:
            self.error = exc

    def model(self):
        """(the model's identity, its threshold, None), or (None, None, the DfdError loading it raised)."""
        if self.error is not None:
            return None, None, self.error
        return self.identity, float(getattr(self.predictor, "threshold", float("nan"))), None

    def predict(self, path: str, evidence: dict) -> tuple[PredictResult, str | None]:
        """(the input's result, the traceback of a bug in dfd or None), as a plain run gives them."""
        from deepfake_cli.serve.pipeline import predict_many

        bugs: list[str] = []

        def bug(_: Path, exc: Exception) -> None:
            bugs.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))

        (result,) = predict_many(self.predictor, [Path(path)], lambda i, p: evidence, on_exception=bug)
        return result, (bugs[0] if bugs else None)


class RayBatchPrediction(BatchPrediction):
    """A BatchPrediction scored by ``workers`` Ray actors (see the module's docstring)."""

    def __init__(self, inputs: list[Path], model: str | Path | None = None, *, workers: int = 2, **options):
        if workers < 1:
            raise OptionsError(f"--workers must be at least 1, not {workers}")
        _ray()  # refused before anything is read
        super().__init__(inputs, model, **options)
        self.workers = workers
        self._actors: list = []
        self._started_ray = False
        self._threshold = float("nan")

    def load(self):
        """Start the workers (once), each loading the model; the model's identity comes from the first.
        A PredictError (or any DfdError) a worker raises while loading is raised here."""
        if self._actors:
            return self._actors
        ray = _ray()
        if not ray.is_initialized():
            ray.init(logging_level="warning", log_to_driver=False)
            self._started_ray = True
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < self.workers:
            self.close()
            raise OptionsError(f"--workers {self.workers} needs {self.workers} CPUs; the Ray cluster has {cpus:g}")
        actor = ray.remote(num_cpus=1)(_Scorer)
        args = (str(self.model_dir), self.runtime, self._predictor_options, self.evidence.wanted)
        self._actors = [actor.remote(*args) for _ in range(self.workers)]
        try:
            self.model, self._threshold, error = ray.get(self._actors[0].model.remote())
        except BaseException:
            self.close()
            raise
        if error is not None:  # the options the plain batch refuses in load(), refused alike
            self.close()
            raise error
        return self._actors

    def close(self) -> None:
        """Stop the workers, and Ray when this batch started it."""
        ray = _ray()
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def run(self, on_result: Callable[[PredictResult], None] | None = None) -> BatchOutcome:
        """As :meth:`BatchPrediction.run`, the inputs scored on the workers; the workers (and a Ray
        this batch started) are stopped at the end."""
        ray = _ray()
        actors = self.load()
        outcome = BatchOutcome(results=[], total=len(self.files), strict=self.strict)
        try:
            with ResultWriter(self.csv_path, self.jsonl_path, append=self.skip_done is not None) as writer, \
                    interrupt_on_sigterm() as signals:
                try:
                    for result, trace in self._results(ray, actors):
                        if trace is not None:
                            outcome.bugs[result.path] = trace
                        self.deliver(result, outcome, writer, signals, on_result)
                except KeyboardInterrupt:
                    outcome.interrupted = True
        finally:
            self.close()
        return outcome

    def _results(self, ray, actors: list):
        """(result, bug traceback or None) of each input, in input order, as the workers finish them."""
        upcoming = deque(enumerate(self.files))
        alive = {id(a): a for a in actors}
        busy = {id(a): 0 for a in actors}  # inputs sent to each worker and not back yet
        running: dict = {}  # object ref -> (input index, path, worker id)
        ready: dict[int, tuple[PredictResult, str | None]] = {}
        nxt = 0  # the next input to hand out, in order

        def failed(path: Path, why: str) -> tuple[PredictResult, None]:
            return failed_result(path, DfdError(why), self._threshold), None

        while upcoming or running:
            for key in sorted(alive, key=busy.get):  # the least busy first
                while upcoming and busy[key] < IN_FLIGHT_PER_WORKER:
                    i, path = upcoming.popleft()
                    options = self.evidence.for_input(i, path, self.several, self.root)
                    running[alive[key].predict.remote(str(path), options)] = (i, path, key)
                    busy[key] += 1
            if not alive:  # every worker died: the rest fail, each on its own line
                while upcoming:
                    i, path = upcoming.popleft()
                    ready[i] = failed(path, f"{path}: no Ray worker left to score it")
            if running:
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    i, path, key = running.pop(ref)
                    busy[key] -= 1
                    try:
                        ready[i] = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # its worker died (killed, out of memory)
                        alive.pop(key, None)
                        ready[i] = failed(path, f"{path}: its Ray worker failed: {str(exc).splitlines()[0]}")
            while nxt in ready:
                yield ready.pop(nxt)
                nxt += 1
