"""What a `dfd serve` server is started with: one frozen record, passed to each uvicorn worker
process through an environment variable (workers are separate processes started by import
string, so they cannot share Python objects)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields

from deepfake_cli.errors import OptionsError

ENV_VAR = "DFD_SERVE_SETTINGS"  # the settings as JSON, for the worker processes
MB = 1024 * 1024


@dataclass(frozen=True)
class ServiceSettings:
    model: str | None = None  # a bundle or ensemble (name or directory); None: the default model
    models_dir: str = "models"
    runtime: str = "auto"
    max_upload_bytes: int = 200 * MB  # larger uploads are refused (413) before they are read
    queue_size: int = 8  # requests that may wait while one is scored, per worker; more: 503
    timeout_s: float = 120.0  # per request: upload, wait and scoring each; past it: 504
    retry_after_s: int = 2  # said in Retry-After with a 503
    temp_dir: str | None = None  # where the private upload folders are made (None: the system's)

    def __post_init__(self):
        if self.max_upload_bytes < 1:
            raise OptionsError("--max-upload-mb must be positive")
        if self.queue_size < 0:
            raise OptionsError("--queue must be 0 or more")
        if self.timeout_s <= 0:
            raise OptionsError("--timeout must be positive")

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "ServiceSettings":
        """The settings `dfd serve` put in the environment (defaults when there are none)."""
        text = os.environ.get(ENV_VAR)
        if not text:
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})
