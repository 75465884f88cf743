"""Many inputs through one model, the stages overlapped: what `dfd predict FOLDER` runs.

While the CNN scores the faces of some clips (the main thread), a worker thread decodes the
next clips and finds and crops their faces (:meth:`Predictor.prepare`; OpenCV's decoder and
onnxruntime release the GIL). The CNN runs on the faces of several clips at once when they
are ready, up to a full batch, so a folder of single face images is scored in batches rather
than one image at a time. Results come out in input order, each as soon as it is known. The
verdicts are those of :meth:`Predictor.predict`: the same code scores each clip, only the CNN's
batches differ.

Each input fails alone: an exception raised while one input is prepared or scored becomes that
input's error (:func:`failed_result`) and the batch goes on; one raised while its evidence files
are written leaves its verdict in place beside the error (:func:`evidence_failed`). A DfdError
gives its message and exit code; any other exception is a bug, reported as such (exit 1) and
handed to ``on_exception`` with its traceback. Ctrl-C (KeyboardInterrupt) still stops the batch.

An ensemble (EnsemblePredictor) is run one input at a time.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from deepfake_cli.errors import EXIT_ERROR, DfdError
from deepfake_cli.serve.predict import Predictor, Prepared, PredictResult

LOOKAHEAD = 4  # inputs prepared ahead of the CNN: enough to fill a batch of single images, few frames held

OnException = Callable[[Path, Exception], None]


def failed_result(path: Path, exc: Exception, threshold: float = float("nan")) -> PredictResult:
    """The result of an input whose preparation or scoring raised ``exc``: a DfdError's message
    (naming the file) and exit code, or, for any other exception, a bug: its type and message, exit 1."""
    if isinstance(exc, DfdError):
        message, code = str(exc), exc.exit_code
    else:
        message, code = f"unexpected {type(exc).__name__} (a bug in dfd): {exc}", EXIT_ERROR
    if not message.startswith(str(path)):
        message = f"{path}: {message}"
    return PredictResult(path=str(path), threshold=threshold, error=message, exit_code=code)


def evidence_failed(result: PredictResult, exc: Exception, on_exception: OnException | None = None) -> PredictResult:
    """An input whose verdict was reached but whose evidence (--report, --heatmap, --annotate) could
    not be written, e.g. a name too long once ``.html.tmp<pid>`` is appended or a folder that turned
    unwritable: the verdict is kept (printed and written), the failure is its error (exit 1), and the
    batch goes on. Predictor.finish sets the verdict only once the scores are final, so an exception
    after it comes from the evidence. An exception that is neither a DfdError nor an OSError is a bug."""
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        message = f"verdict reached, but its evidence could not be written{where}: {exc.strerror or exc}"
    elif isinstance(exc, DfdError):
        message = f"verdict reached, but its evidence could not be written: {exc}"
    else:
        if on_exception is not None:
            on_exception(Path(result.path), exc)
        message = (f"verdict reached, but writing its evidence failed: unexpected {type(exc).__name__} "
                   f"(a bug in dfd): {exc}")
    result.error = message if message.startswith(result.path) else f"{result.path}: {message}"
    result.exit_code = max(result.exit_code, EXIT_ERROR)
    return result


def predict_many(predictor, paths: list[Path], options: Callable[[int, Path], dict] | None = None,
                 lookahead: int = LOOKAHEAD, on_exception: OnException | None = None) -> Iterator[PredictResult]:
    """Each input's PredictResult, in input order. ``options(i, path)``: keyword arguments of
    :meth:`Predictor.finish` for that input (annotate, heatmap, report, annotate_heatmap).

    An exception in one input becomes its result's error (see the module's docstring);
    ``on_exception(path, exc)`` is called first for those that are not a DfdError (bugs).
    """
    options = options or (lambda i, path: {})

    def failed(path: Path, exc: Exception) -> PredictResult:
        if on_exception is not None and not isinstance(exc, DfdError):
            on_exception(path, exc)
        return failed_result(path, exc, float(getattr(predictor, "threshold", float("nan"))))

    if not isinstance(predictor, Predictor):
        for i, path in enumerate(paths):
            try:
                result = predictor.predict(path, **options(i, path))
            except Exception as exc:
                result = failed(path, exc)
            yield result
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dfd-prepare")
    pending: deque[tuple[int, Path, Future]] = deque()
    upcoming = iter(enumerate(paths))

    def refill() -> None:
        for i, path in upcoming:
            pending.append((i, path, pool.submit(predictor.prepare, path)))
            if len(pending) >= max(1, lookahead):
                return

    def take() -> tuple[int, Path, Prepared]:
        i, path, future = pending.popleft()
        try:
            return i, path, future.result()
        except Exception as exc:  # the preparation (decoder, detector, cropping) of this input alone
            return i, path, Prepared(failed(path, exc))

    try:
        refill()
        while pending:
            group = [take()]
            faces = _faces(group[0][2])
            while pending and pending[0][2].done() and faces < predictor.scorer.batch_size:
                group.append(take())
                faces += _faces(group[-1][2])
            refill()
            for (i, path, prepared), outputs in zip(group, _score_together(predictor, [g[2] for g in group])):
                try:
                    result = predictor.finish(prepared, outputs, **options(i, path))
                except Exception as exc:  # its CNN, LSTM or evidence files
                    result = evidence_failed(prepared.result, exc, on_exception) if prepared.result.verdict \
                        else failed(path, exc)
                yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _faces(prepared: Prepared) -> int:
    return 0 if prepared.result.error or prepared.inputs is None else len(prepared.inputs)


def _score_together(predictor: Predictor, group: list[Prepared]) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """The CNN's (features, scores) of each prepared input, computed in shared batches; None for
    an input that failed before the CNN, or for every input when the shared batch failed (a NaN,
    or any exception): each is then scored alone, so only the one at fault fails."""
    ready = [p for p in group if _faces(p)]
    if len(ready) < 2:
        return [None] * len(group)
    clock = time.perf_counter()
    try:
        features, scores = predictor.scorer.frames(np.concatenate([p.inputs for p in ready]))
    except Exception:
        return [None] * len(group)
    seconds = time.perf_counter() - clock
    outputs, offset = [], 0
    for prepared in group:
        n = _faces(prepared)
        outputs.append((features[offset:offset + n], scores[offset:offset + n]) if n else None)
        if n:
            prepared.result.seconds["cnn"] = seconds * n / len(features)  # its share of the shared batches
        offset += n
    return outputs
