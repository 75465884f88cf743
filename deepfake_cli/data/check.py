"""`dfd check`: read every segment of a store, verifying its checksums, and list what is damaged.

With ``repair`` a damaged segment is dropped (deleted), so that the stage which wrote it redoes
exactly that video on its next run: `extract` for frames, `crop` for faces, `export-features`
for features. A damaged index is rebuilt from the segments (it is derived data). Segments
written before checksums (dfd before Fletcher-32) are read in full too: damage that breaks
their compression is found, silent bit flips in their uncompressed arrays cannot be.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from deepfake_cli.progress import Reporter
from deepfake_cli.data.store import DamagedIndexError, DamagedSegmentError, Store, StoreError

REDONE_BY = {"frames": "dfd extract", "faces": "dfd crop"}  # features.<model>: dfd export-features


@dataclass
class CheckSummary:
    store: str
    segments: int = 0
    damaged: list[dict] = field(default_factory=list)  # video_id, path, stage, segment, reason, redo
    index_rebuilt: bool = False
    repaired: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def rebuild_index(path: Path) -> Path:
    """Move a damaged index aside (kept as ``<index>.damaged``) so that opening the store rebuilds it."""
    aside = path.with_name(path.name + ".damaged")
    os.replace(path, aside)
    return aside


def check_store(path: Path, repair: bool = False, wait: bool = False, reporter: Reporter | None = None) -> CheckSummary:
    """Verify every segment of the store at ``path``; with ``repair``, drop the damaged ones."""
    reporter = reporter or Reporter()
    summary = CheckSummary(store=str(path))
    try:
        store = Store.open(path, write=repair, wait=wait)
    except DamagedIndexError:
        if not repair:
            raise
        rebuild_index(path)
        summary.index_rebuilt = True
        store = Store.open(path, write=True, wait=wait)
    with store:
        videos = store.stored_videos()
        reporter.start(len(videos), "check")
        for vid in videos:
            try:
                media = store.entry(vid).path
            except StoreError:  # a video whose frames were dropped: only later stages remain
                media = ""
            for stage in store.segments_of(vid):
                summary.segments += 1
                try:
                    store.verify_segment(vid, stage)
                except DamagedSegmentError as exc:
                    summary.damaged.append({"video_id": vid, "path": media, "stage": stage, "segment": str(exc.segment),
                                            "reason": exc.reason,
                                            "redo": REDONE_BY.get(stage, "dfd export-features")})
            if media and store.entry(vid).ok and "frames" not in store.segments_of(vid):
                # the index lists the video but its frames segment is gone (deleted, lost): without
                # this, extract would call it "already in store" and every later stage skip it
                summary.damaged.append({"video_id": vid, "path": media, "stage": "frames",
                                        "segment": str(store.segment_path(vid, "frames")), "reason": "missing",
                                        "redo": REDONE_BY["frames"]})
            reporter.advance(vid)
        reporter.finish()
        if repair:
            for damage in summary.damaged:
                store.drop_segment(damage["video_id"], damage["stage"])
            store.commit()
            summary.repaired = True
    return summary
