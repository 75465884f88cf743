"""`--shard K/N`: a deterministic 1/N of the videos, so N machines (a Slurm array, a Kubernetes
indexed Job, ...) can each run `extract`, `crop` or `export-features` on their part into their
own store, and `dfd merge` joins the stores afterwards; `predict --shard K/N` scores its 1/N of the
clips, and `dfd merge-results` joins the result files.

A video belongs to shard ``(int(video_id[:8], 16) mod N) + 1``; its id is a prefix of its
content hash (SHA-256), so the split depends neither on paths nor on the order files are found,
and every stage puts the same video in the same shard.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from deepfake_cli.errors import OptionsError
from deepfake_cli.files import file_sha256


@dataclass(frozen=True)
class Shard:
    index: int  # K, from 1
    count: int  # N

    def holds(self, video_id: str) -> bool:
        """Whether the video with this (hex) id is this shard's."""
        return int(video_id[:8], 16) % self.count == self.index - 1

    def holds_file(self, path) -> bool:
        """Whether this file (a clip `predict` is given) is this shard's: see :func:`file_shard_key`."""
        return self.holds(file_shard_key(path))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str | None) -> Shard | None:
    """'K/N' -> Shard (1 <= K <= N); None -> None (every video)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise OptionsError(f"--shard must be K/N with 1 <= K <= N (e.g. 2/8), not {text!r}")
    return Shard(int(match[1]), int(match[2]))


def file_shard_key(path) -> str:
    """The hex key a file is sharded by: the id `extract` gives it (a prefix of its content's
    SHA-256), so `predict --shard K/N` puts a clip in the shard `extract --shard K/N` does. A file
    that cannot be hashed (missing, unreadable, a folder, not a regular file) is keyed by its path
    as given, so exactly one shard reports its error."""
    path = Path(path)
    try:
        if stat.S_ISREG(os.stat(path).st_mode):
            return file_sha256(path)[:16]
    except (OSError, RuntimeError):  # RuntimeError: pathlib's "Symlink loop" (Python < 3.13)
        pass
    return hashlib.sha256(str(path).encode()).hexdigest()[:16]
