"""Files as dfd writes and reads them: whole or not at all, hashed, and JSON without NaN."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

TMP_MARK = ".tmp"  # a file being written is named <name>.tmp<pid>[suffix]; a writer deletes leftovers


@contextmanager
def atomic_write(path: Path, suffix: str = "") -> Iterator[Path]:
    """Write ``path`` whole or not at all: yields a temporary path in the same directory.

    Write the file there inside the block. When the block ends, the file is fsynced and
    renamed onto ``path`` (``os.replace`` is atomic) and the directory is fsynced, so a
    killed or failed write leaves the old file or the new one, never half of one. When the
    block raises, the temporary file is removed and ``path`` is untouched. ``suffix`` ends the
    temporary name, for writers that insist on one (Keras wants ``.weights.h5``).
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}{suffix}")
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def to_jsonable(value):
    """Recursively convert numpy scalars/arrays, Paths and tuples; NaN/inf become None."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value
