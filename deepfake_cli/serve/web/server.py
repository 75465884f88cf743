"""Start `dfd serve`: uvicorn running :func:`deepfake_cli.serve.web.app.app_from_environment` in
``workers`` processes, each loading the model once. The settings reach the worker processes through
the environment (settings.ENV_VAR); uvicorn's own access log is off (ours is structured)."""

from __future__ import annotations

import os

from deepfake_cli.serve.web.settings import ENV_VAR, ServiceSettings

APP = "deepfake_cli.serve.web.app:app_from_environment"


def run_server(settings: ServiceSettings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
               log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM: requests in flight finish first)."""
    import uvicorn

    os.environ[ENV_VAR] = settings.to_env()
    uvicorn.run(APP, factory=True, host=host, port=port, workers=workers, access_log=False, log_level=log_level,
                timeout_graceful_shutdown=int(settings.timeout_s) + 5, server_header=False)
