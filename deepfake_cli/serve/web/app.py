"""The routes of `dfd serve` (a Starlette app), and how each outcome maps to an HTTP status.

``POST /v1/predict`` answers the result object `dfd predict --json` gives for one input
(deepfake_cli.serve.schema, docs/output.md) with 200 for a verdict, 422 for a clip that cannot
be read or has no face (the object, with its ``error``), 4xx ``{"error": ...}`` for a refused
upload, 503 (with Retry-After) when the queue is full or the model is not loaded, 504 past the
request's timeout, 500 only for faults of the server (a model giving NaN, a bug).
``POST /v1/report`` answers the HTML evidence page instead. ``GET /`` is the page (static/).
docs/serve.md has the details.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from deepfake_cli.errors import EXIT_NO_FACE, EXIT_UNREADABLE, DfdError
from deepfake_cli.serve.schema import SCHEMA_VERSION, dfd_version
from deepfake_cli.serve.web.access_log import AccessLog
from deepfake_cli.serve.web.settings import ServiceSettings
from deepfake_cli.serve.web.uploads import Upload, UploadError, receive_upload
from deepfake_cli.serve.web.worker import ModelUnavailable, ModelWorker

log = logging.getLogger("dfd.serve")
CLIENT_ERRORS = {EXIT_UNREADABLE: 422, EXIT_NO_FACE: 422}  # an input's exit code -> status; others: 500
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}  # the page's files, by name (no path from a request)
PAGE_POLICY = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; frame-src blob:; "
               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'")  # nothing from elsewhere


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def status_of(record: dict) -> int:
    """The HTTP status of a result object: 200 with a verdict, 422 for the clip's fault, else 500."""
    if not record.get("exit_code"):
        return 200
    return CLIENT_ERRORS.get(record["exit_code"], 500)


def static_text(name: str) -> str:
    return resources.files("deepfake_cli.serve.web").joinpath("static", name).read_text(encoding="utf-8")


def served_record(detector, result, upload: Upload) -> dict:
    """The result object of an upload, named by the client's file name (the server's paths left out)."""
    private = str(upload.path)
    result.path = upload.filename
    result.error = result.error.replace(private, upload.filename)
    result.report = ""  # a file in the request's folder, deleted with it
    return detector.record(result)


class Service:
    """The routes over one ModelWorker (this process's model and queue)."""

    def __init__(self, settings: ServiceSettings, worker: ModelWorker):
        self.settings = settings
        self.worker = worker

    # ------------------------------------------------------------------ probes and the model
    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        body = {"status": self.worker.state}
        if self.worker.load_error:
            body["error"] = self.worker.load_error
        return JSONResponse(body, status_code=200 if self.worker.ready else 503,
                            headers=None if self.worker.ready else {"Retry-After": str(self.settings.retry_after_s)})

    async def model(self, request: Request) -> Response:
        if not self.worker.ready:
            return error(503, self.worker.load_error or "the model is still loading",
                         {"Retry-After": str(self.settings.retry_after_s)})
        detector = self.worker.detector
        config = detector.predictor.config
        body = {"schema_version": SCHEMA_VERSION, "dfd_version": dfd_version(), "name": detector.model.name,
                "model_sha256": detector.model.sha256, "runtime": detector.runtime,
                "threshold": detector.threshold,
                "uncertain": list(getattr(config, "uncertain", None) or []) or None,  # [lo, hi): verdict "uncertain"
                "thresholds_at_fpr": {str(k): float(v) for k, v in (config.thresholds_at_fpr or {}).items()},
                "card": model_card(detector.path),
                "limits": {"max_upload_bytes": self.settings.max_upload_bytes, "queue_size": self.settings.queue_size,
                           "timeout_s": self.settings.timeout_s}}
        return JSONResponse(body)

    # ------------------------------------------------------------------ the page
    async def page(self, request: Request) -> Response:
        return HTMLResponse(static_text("index.html"), headers={"Content-Security-Policy": PAGE_POLICY})

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return error(404, "no such file")
        return Response(static_text(name), media_type=STATIC[name])

    # ------------------------------------------------------------------ scoring
    async def predict(self, request: Request) -> Response:
        return await self._score(request, report=False)

    async def report(self, request: Request) -> Response:
        return await self._score(request, report=True)

    async def _score(self, request: Request, report: bool) -> Response:
        busy = {"Retry-After": str(self.settings.retry_after_s)}
        if self.worker.load_error:
            return error(503, self.worker.load_error, busy)
        if not self.worker.try_admit():
            return error(503, f"the server is busy ({self.worker.capacity} requests in hand); retry later", busy)
        folder = Path(tempfile.mkdtemp(prefix="dfd-upload-", dir=self.settings.temp_dir))  # mode 0700
        handed_over = False  # once the work is queued, its end deletes the folder and frees the place
        try:
            try:
                upload = await asyncio.wait_for(receive_upload(request, folder, self.settings.max_upload_bytes),
                                                self.settings.timeout_s)
            except UploadError as exc:
                request.state.error = str(exc)
                return error(exc.status, str(exc))
            except asyncio.TimeoutError:
                return error(408, f"the upload took longer than {self.settings.timeout_s:g} s")
            except ClientDisconnect:
                return Response(status_code=499)  # nobody is listening; logged as such
            work = (lambda detector: score_upload(detector, upload, folder / "report.html" if report else None))
            handed_over = True
            try:
                record, page = await self.worker.run(work, folder, self.settings.timeout_s)
            except asyncio.TimeoutError:
                return error(504, f"scoring took longer than {self.settings.timeout_s:g} s")
            except ModelUnavailable as exc:
                return error(503, str(exc), busy)
            except ImportError as exc:  # the report's heatmaps need Keras (the [train] extra)
                if not report:
                    raise
                return error(501, f"the report needs TensorFlow and Keras for its heatmaps, which this install "
                                  f"lacks ({exc}): pip install 'deepfake-cli[train]'")
            except ReportUnavailable as exc:
                return error(501, str(exc))
            except DfdError as exc:
                return error(422 if exc.exit_code in CLIENT_ERRORS else 500, str(exc).replace(str(upload.path),
                                                                                              upload.filename))
            request.state.verdict, request.state.probability = record["verdict"], record["probability"]
            request.state.error = record["error"]
            status = status_of(record)
            if report and status == 200 and page is not None:
                return HTMLResponse(page)
            return JSONResponse(record, status_code=status)
        finally:
            if not handed_over:
                shutil.rmtree(folder, ignore_errors=True)
                self.worker.release()


class ReportUnavailable(DfdError):
    """This server's model cannot make the report (an ensemble: reports show one model's evidence): 501."""


def score_upload(detector, upload: Upload, report: Path | None) -> tuple[dict, str | None]:
    """On the model's thread: the upload's result object, and its HTML report page when asked for."""
    if report is not None and getattr(detector.predictor, "ensemble", None) is not None:
        raise ReportUnavailable("this server's model is an ensemble, and a report shows one model's evidence: "
                                "serve one of its members (dfd serve --model MEMBER) for reports")
    result = detector.result(upload.path, report=report)
    page = None
    if report is not None and report.is_file():
        page = report.read_text(encoding="utf-8").replace(str(upload.path), html.escape(upload.filename))
    return served_record(detector, result, upload), page


def model_card(bundle_dir: Path) -> dict | None:
    """The model card (training data, terms, intended use, limits, validation), when the bundle has one."""
    try:
        from deepfake_cli.nets.card import card_of
    except ImportError:
        return None
    with contextlib.suppress(Exception):  # an ensemble directory, or a card that cannot be read: none shown
        return card_of(bundle_dir)
    return None


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own refusals (no such route, a wrong method) as JSON, like every other error."""
    return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", exc.headers)


async def _server_fault(request: Request, exc: Exception) -> Response:
    log.exception("bug while answering %s %s", request.method, request.url.path, exc_info=exc)
    return error(500, f"internal error ({type(exc).__name__}); the server's log has the details")


def create_app(settings: ServiceSettings | None = None, detector=None) -> Starlette:
    """The ASGI app. The model is loaded once, on the app's start (its lifespan), unless a loaded
    ``detector`` (deepfake_cli.serve.detector.Detector) is given."""
    settings = settings or ServiceSettings()
    worker = ModelWorker(settings, detector)
    service = Service(settings, worker)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker.start_loading()
        try:
            yield
        finally:
            worker.close()

    routes = [
        Route("/", service.page, methods=["GET"]),
        Route("/static/{name}", service.static, methods=["GET"]),
        Route("/healthz", service.healthz, methods=["GET"]),
        Route("/readyz", service.readyz, methods=["GET"]),
        Route("/v1/model", service.model, methods=["GET"]),
        Route("/v1/predict", service.predict, methods=["POST"]),
        Route("/v1/report", service.report, methods=["POST"]),
    ]
    handlers = {HTTPException: _http_error, Exception: _server_fault}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.service = service
    app.add_middleware(AccessLog)
    return app


def app_from_environment() -> Starlette:
    """What each uvicorn worker process builds: the settings `dfd serve` put in the environment,
    and the access log on stderr."""
    access = logging.getLogger("dfd.serve")
    if not access.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
    return create_app(ServiceSettings.from_env())
