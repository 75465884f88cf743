"""Many inputs through one model, the stages overlapped: what `dfd predict FOLDER` runs.

While the CNN scores the faces of some clips (the main thread), a worker thread decodes the
next clips and finds and crops their faces (:meth:`Predictor.prepare`; OpenCV's decoder and
onnxruntime release the GIL). The CNN runs on the faces of several clips at once when they
are ready, up to a full batch, so a folder of single face images is scored in batches rather
than one image at a time. Results come out in input order, each as soon as it is known; an
input that fails (unreadable, no face) fails alone. The verdicts are those of
:meth:`Predictor.predict`: the same code scores each clip, only the CNN's batches differ.

An ensemble (EnsemblePredictor) is run one input at a time.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from deepfake_cli.serve.predict import Predictor, Prepared, PredictResult
from deepfake_cli.scoring.scorer import NonFiniteScoreError

LOOKAHEAD = 4  # inputs prepared ahead of the CNN: enough to fill a batch of single images, few frames held


def predict_many(predictor, paths: list[Path], options: Callable[[int, Path], dict] | None = None,
                 lookahead: int = LOOKAHEAD) -> Iterator[PredictResult]:
    """Each input's PredictResult, in input order. ``options(i, path)``: keyword arguments of
    :meth:`Predictor.finish` for that input (annotate, heatmap, report, annotate_heatmap)."""
    options = options or (lambda i, path: {})
    if not isinstance(predictor, Predictor):
        for i, path in enumerate(paths):
            yield predictor.predict(path, **options(i, path))
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dfd-prepare")
    pending: deque[tuple[int, Path, Future]] = deque()
    upcoming = iter(enumerate(paths))

    def refill() -> None:
        for i, path in upcoming:
            pending.append((i, path, pool.submit(predictor.prepare, path)))
            if len(pending) >= max(1, lookahead):
                return

    try:
        refill()
        while pending:
            group = [_take(pending)]
            faces = _faces(group[0][2])
            while pending and pending[0][2].done() and faces < predictor.scorer.batch_size:
                group.append(_take(pending))
                faces += _faces(group[-1][2])
            refill()
            for (i, path, prepared), outputs in zip(group, _score_together(predictor, [g[2] for g in group])):
                yield predictor.finish(prepared, outputs, **options(i, path))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _take(pending: deque) -> tuple[int, Path, Prepared]:
    i, path, future = pending.popleft()
    return i, path, future.result()


def _faces(prepared: Prepared) -> int:
    return 0 if prepared.result.error or prepared.inputs is None else len(prepared.inputs)


def _score_together(predictor: Predictor, group: list[Prepared]) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """The CNN's (features, scores) of each prepared input, computed in shared batches; None for
    an input that failed before the CNN, or for every input when the shared batch gave a NaN
    (each is then scored alone, so only the one at fault fails)."""
    ready = [p for p in group if _faces(p)]
    if len(ready) < 2:
        return [None] * len(group)
    clock = time.perf_counter()
    try:
        features, scores = predictor.scorer.frames(np.concatenate([p.inputs for p in ready]))
    except NonFiniteScoreError:
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
