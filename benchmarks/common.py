"""Shared helpers of the benchmark scripts (run them from the repository root)."""

from __future__ import annotations

import platform
import resource
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def ffpp_videos(limit: int) -> list[Path]:
    """The first `limit` FF++ videos, alternating real and fake, in a stable order."""
    root = DATA / "ffpp"
    if not root.is_dir():
        raise SystemExit(f"{root} not found: pass video paths explicitly")
    real = sorted((root / "original_sequences").rglob("*.mp4"))
    fake = sorted((root / "manipulated_sequences").rglob("*.mp4"))
    mixed = [v for pair in zip(real, fake) for v in pair]
    return mixed[:limit]
