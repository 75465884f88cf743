"""`dfd merge OUT STORE...`: join stores (e.g. the shards of a `--shard K/N` run) into one.

A store's data is its segments (``<store>.d/*.h5``, immutable once written) and the index is
derived from them, so merging copies the segments into ``OUT.d/`` (a hard link when on the
same file system) and rebuilds OUT's index. A segment present in two stores must be the same
bytes (the same video through the same stage with the same settings); two different versions
of one segment are refused, naming both files, and nothing is changed.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from deepfake_cli.errors import DfdError
from deepfake_cli.files import TMP_MARK
from deepfake_cli.data.store import Store


class MergeError(DfdError):
    """The stores cannot be merged: a missing store, or conflicting versions of a segment."""


@dataclass
class MergeSummary:
    out: str
    stores: int = 0
    copied: int = 0
    already_there: int = 0
    videos: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def segments_dir(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".d")


def plan(out: Path, sources: list[Path]) -> tuple[list[tuple[Path, Path]], int]:
    """(source segment, target) pairs to copy, and how many are already in OUT; MergeError on conflict."""
    chosen: dict[str, Path] = {}
    for source in sources:
        folder = segments_dir(source)
        if not folder.is_dir():
            raise MergeError(f"{source} is not a dfd store (no {folder.name}/ beside it)")
        for segment in sorted(folder.glob("*.h5")):
            if TMP_MARK in segment.name:
                continue  # half-written by a killed run
            seen = chosen.setdefault(segment.name, segment)
            if seen != segment and not filecmp.cmp(seen, segment, shallow=False):
                raise MergeError(f"{seen} and {segment} are two different versions of one segment; merge "
                                 "stores cropped or exported with the same settings, or drop one")
    target_dir = segments_dir(out)
    jobs, present = [], 0
    for name, segment in sorted(chosen.items()):
        target = target_dir / name
        if target.exists():
            if not filecmp.cmp(target, segment, shallow=False):
                raise MergeError(f"{target} differs from {segment}: the output store already holds another version")
            present += 1
        else:
            jobs.append((segment, target))
    return jobs, present


def merge(out: Path, sources: list[Path], wait: bool = False) -> MergeSummary:
    """Copy every segment of ``sources`` into the store ``out`` and rebuild its index."""
    if not sources:
        raise MergeError("give at least one store to merge")
    plan(out, sources)  # a conflict is refused before anything is created
    with Store.open(out, write=True, wait=wait):  # the writer lock, held while segments arrive
        jobs, present = plan(out, sources)
        for segment, target in jobs:
            tmp = target.with_name(f"{target.name}{TMP_MARK}{os.getpid()}")
            try:
                os.link(segment, tmp)
            except OSError:
                shutil.copyfile(segment, tmp)
            os.replace(tmp, target)
    with Store.open(out, write=True, wait=wait) as store:  # reopening picks the new segments up
        store.commit()
        videos = len(store)
    return MergeSummary(out=str(out), stores=len(sources), copied=len(jobs), already_there=present, videos=videos)
