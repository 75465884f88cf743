"""The model of one worker process, loaded once, and the bounded queue of work in front of it.

The model runs on one thread (the Predictor keeps per-clip state; onnxruntime uses the cores
inside each call), so requests are scored one at a time, in order. At most ``1 + queue_size``
requests are admitted at once (one scored, the others uploading or waiting); one more is answered
503 at once, before its body is read. A request past its timeout is answered 504 and its work
dropped if it has not started; work that has started runs to its end, and only then are its files
deleted and its place in the queue freed, so the queue never holds more than it says.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from deepfake_cli.errors import DfdError
from deepfake_cli.serve.web.settings import ServiceSettings

log = logging.getLogger("dfd.serve")


class ModelWorker:
    def __init__(self, settings: ServiceSettings, detector=None):
        self.settings = settings
        self.capacity = 1 + settings.queue_size
        self.admitted = 0  # requests holding a place (changed on the event loop's thread only)
        self.detector = detector
        self.load_error = ""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dfd-model")
        self._loading: Future | None = None

    # ------------------------------------------------------------------ the model
    def start_loading(self) -> None:
        """Load the model on the model's thread (so work queued behind it waits for it)."""
        if self.detector is None and self._loading is None:
            self._loading = self._executor.submit(self._load)

    def _load(self) -> None:
        from deepfake_cli.serve.detector import Detector

        try:
            self.detector = Detector(self.settings.model, models_dir=self.settings.models_dir,
                                     runtime=self.settings.runtime)
            log.info("model %s (sha256 %s) loaded on %s", self.detector.model.name, self.detector.model.sha256,
                     self.detector.runtime)
        except Exception as exc:  # a bad model: /readyz and every request say so
            self.load_error = f"the model cannot be loaded: {exc}"
            log.error(self.load_error)

    @property
    def ready(self) -> bool:
        return self.detector is not None

    @property
    def state(self) -> str:
        return "ready" if self.ready else ("failed" if self.load_error else "loading")

    # ------------------------------------------------------------------ the queue
    def try_admit(self) -> bool:
        if self.admitted >= self.capacity:
            return False
        self.admitted += 1
        return True

    def release(self) -> None:
        self.admitted = max(0, self.admitted - 1)

    async def run(self, work: Callable, folder: Path, timeout: float):
        """``work(detector)`` on the model's thread; afterwards (also after a timeout or an error)
        ``folder`` is deleted and the place released. asyncio.TimeoutError past ``timeout``."""
        loop = asyncio.get_running_loop()

        def done(_future) -> None:
            shutil.rmtree(folder, ignore_errors=True)
            try:
                loop.call_soon_threadsafe(self.release)
            except RuntimeError:  # the loop is closed: the server has stopped
                pass

        def call():
            if self.detector is None:
                raise ModelUnavailable(self.load_error or "the model is still loading")
            return work(self.detector)

        try:
            future = self._executor.submit(call)
        except RuntimeError:  # shut down
            done(None)
            raise ModelUnavailable("the server is shutting down") from None
        future.add_done_callback(done)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class ModelUnavailable(DfdError):
    """No model to score with (still loading, failed to load, shutting down): 503."""
