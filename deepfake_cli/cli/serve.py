"""`dfd serve`: the HTTP service and its web page (deepfake_cli.serve.web; docs/serve.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from deepfake_cli.cli.common import ModelsDirOption, QuietOption, Runtime, handled, require_extra

SERVE_MODULES = ("starlette", "uvicorn", "python_multipart")  # what the [serve] extra brings


@handled
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface; put "
                             "a reverse proxy with TLS in front of a public one)."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Bundle or ensemble, by name or directory.",
                                        show_default="the bundled model"),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes, each with its own model "
                                "(about one per two cores: each uses several inside a call)."),
    max_upload_mb: float = typer.Option(200.0, "--max-upload-mb", help="Largest upload taken, in MB; larger "
                                        "ones are refused (413) before they are read."),
    queue: int = typer.Option(8, "--queue", min=0, help="Requests that may wait per worker while one is scored; "
                              "more are answered 503 with Retry-After."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds a request may take to upload, and again to "
                                  "be scored; past them: 408 / 504."),
    runtime: Runtime = typer.Option("auto", "--runtime", help="What runs the models (see predict --runtime)."),
    models_dir: Path = ModelsDirOption,
    quiet: bool = QuietOption,
) -> None:
    """Serve predict over HTTP (POST /v1/predict, /v1/report) with a web page at /."""
    require_extra("dfd serve", SERVE_MODULES, extra="serve")
    from deepfake_cli.serve.model_choice import locate_model
    from deepfake_cli.serve.web.server import run_server
    from deepfake_cli.serve.web.settings import MB, ServiceSettings

    locate_model(model, models_dir)  # a model that is not there: its error now, not in each worker
    settings = ServiceSettings(model=model, models_dir=str(models_dir), runtime=runtime,
                               max_upload_bytes=int(max_upload_mb * MB), queue_size=queue, timeout_s=timeout)
    run_server(settings, host=host, port=port, workers=workers, log_level="warning" if quiet else "info")
