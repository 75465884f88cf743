"""`--shard K/N`: a deterministic 1/N of the videos, so N machines (a Slurm array, a Kubernetes
indexed Job, ...) can each run `extract`, `crop` or `export-features` on their part into their
own store, and `dfd merge` joins the stores afterwards.

A video belongs to shard ``(int(video_id[:8], 16) mod N) + 1``; its id is a prefix of its
content hash (SHA-256), so the split depends neither on paths nor on the order files are found,
and every stage puts the same video in the same shard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from deepfake_cli.errors import OptionsError


@dataclass(frozen=True)
class Shard:
    index: int  # K, from 1
    count: int  # N

    def holds(self, video_id: str) -> bool:
        """Whether the video with this (hex) id is this shard's."""
        return int(video_id[:8], 16) % self.count == self.index - 1

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
