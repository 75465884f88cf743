"""`dfd extract`: find videos, sample frames, record what each video is."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from stat import S_ISREG

import numpy as np

from deepfake_cli.data.datasets import VideoRecord, discover
from deepfake_cli.errors import OptionsError
from deepfake_cli.files import file_sha256
from deepfake_cli.progress import Reporter
from deepfake_cli.data.splits import assign_splits
from deepfake_cli.data.store import FRAME_STATUS_FAILED, ROLE_SEQUENCE, ROLE_SPREAD, Frames, Store, VideoEntry
from deepfake_cli.data.shards import Shard
from deepfake_cli.data.video import VideoError, frames_by_role, sample_frames, unreadable_reason

SAMPLINGS = ("consecutive", "uniform", "random")


@dataclass
class ExtractOptions:
    fpv: int = 25
    sampling: str = "consecutive"
    seed: int = 0
    spread: int = 0  # also this many frames spread uniformly over each video, for train-cnn (0: none)
    labels_csv: Path | None = None
    retry_failed: bool = False
    shard: Shard | None = None  # only this 1/N of the videos (by content hash)
    val_fraction: float = 0.1  # of the identity groups without an official split: validation
    test_fraction: float = 0.1  # and test
    relabel: bool = False  # record the label and split the inputs now give to videos already stored
    windows: int = 1  # windows of fpv consecutive frames over each video, as predict --windows (0: all that fit)

    def check(self) -> None:
        """OptionsError (exit 2, a ValueError too) naming the option that is out of range."""
        if self.sampling not in SAMPLINGS:
            raise OptionsError(f"--sampling must be one of {', '.join(SAMPLINGS)}, not {self.sampling!r}")
        if self.fpv < 1:
            raise OptionsError("--fpv must be at least 1")
        if self.spread < 0:
            raise OptionsError("--spread must be 0 (none) or a number of frames")
        if isinstance(self.windows, bool) or not isinstance(self.windows, (int, np.integer)) or self.windows < 0:
            raise OptionsError(f"--windows must be a whole number of at least 1, or 'all', not {self.windows!r}")
        if self.windows != 1 and (self.sampling != "consecutive" or self.spread):
            raise OptionsError("--windows other than 1 needs --sampling consecutive and no --spread (windows are "
                               "runs of consecutive frames, each tracked on its own)")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            raise OptionsError("--val-fraction and --test-fraction must each lie in [0, 1) and leave some "
                               f"videos to train (got {self.val_fraction} and {self.test_fraction})")

    @property
    def fractions(self) -> tuple[float, float, float]:
        """(train, val, test) shares of the identity groups that have no official split."""
        return 1 - self.val_fraction - self.test_fraction, self.val_fraction, self.test_fraction


@dataclass
class ExtractSummary:
    found: int = 0
    added: int = 0
    already_done: int = 0
    duplicates: int = 0
    failed: int = 0
    short: int = 0
    frames: int = 0
    other_shards: int = 0  # --shard: videos left to the other shards
    other_sampling: int = 0  # already in the store, sampled otherwise than asked (kept as they are)
    failures: list[tuple[str, str]] = field(default_factory=list)
    by_dataset: Counter = field(default_factory=Counter)
    by_label: Counter = field(default_factory=Counter)
    # the split and label of every video found that the store holds (added now or before): (split, label) -> n
    splits: Counter = field(default_factory=Counter)
    # videos already stored with another label or split than the inputs give now: (path, (label, split)
    # stored, (label, split) given); recorded anew with --relabel
    changes: list[tuple[str, tuple[str, str], tuple[str, str]]] = field(default_factory=list)
    relabelled: int = 0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["failures"] = [{"path": p, "error": e} for p, e in self.failures]
        d["by_dataset"] = dict(self.by_dataset)
        d["by_label"] = dict(self.by_label)
        d["splits"] = self.split_counts()
        d["changes"] = [{"path": p, "stored": {"label": a[0], "split": a[1]}, "given": {"label": b[0], "split": b[1]}}
                        for p, a, b in self.changes]
        return d

    def split_counts(self) -> dict[str, dict[str, int]]:
        """{split: {label: videos}}, splits in the order train, val, test."""
        order = {"train": 0, "val": 1, "test": 2}
        counts: dict[str, dict[str, int]] = {}
        for (split, label), n in sorted(self.splits.items(), key=lambda kv: (order.get(kv[0][0], 3), kv[0])):
            counts.setdefault(split, {})[label] = n
        return counts


def frame_roles(kept: np.ndarray, frame_count: int, options: ExtractOptions) -> np.ndarray:
    """(n,) uint8 ROLE_* bits of each stored frame: in the --fpv sampling, among the --spread ones, or both."""
    sequence, spread = frames_by_role(frame_count, options.fpv, options.sampling, options.seed, options.spread)
    return np.array([ROLE_SEQUENCE * (int(i) in sequence) | ROLE_SPREAD * (int(i) in spread) for i in kept], np.uint8)


def video_id_for(sha256: str) -> str:
    return sha256[:16]


def _failed_id(path: Path) -> str:
    return "f" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:15]


def extract(store: Store, paths: list[Path], options: ExtractOptions, reporter: Reporter | None = None) -> ExtractSummary:
    """Add every video under `paths` to the store; videos already there are skipped."""
    options.check()
    reporter = reporter or Reporter()
    discovered = discover(paths, options.labels_csv)
    explicit_split = {id(r): bool(r.split) for r in discovered}  # given by the inputs, not assigned here
    records = assign_splits(discovered, seed=options.seed, fractions=options.fractions)
    summary = ExtractSummary(found=len(records))
    known = {(e.path, e.size, e.mtime): e for e in store.entries()}
    reporter.start(len(records), "extract")
    for before, record in zip(discovered, records):
        _extract_one(store, record, options, known, summary, reporter, explicit_split[id(before)])
        reporter.advance(record.path.name)
    reporter.finish()
    if summary.changes and not options.relabel:
        reporter.warn(f"{len(summary.changes)} video(s) are recorded with another label or split than the inputs "
                      "give now (first: " + _change_text(summary.changes[0]) + "): kept as recorded; rerun with "
                      "--relabel to record the new ones")
    if summary.other_sampling:
        reporter.warn(f"{summary.other_sampling} videos were already in the store with another --fpv, --sampling, "
                      "--spread or --windows; they are kept as they are (extract into a new store to sample them "
                      "again)")
    return summary


def _change_text(change: tuple[str, tuple[str, str], tuple[str, str]]) -> str:
    path, (label, split), (new_label, new_split) = change
    return f"{path}: {label}/{split} recorded, {new_label}/{new_split} given"


def _already_done(summary: ExtractSummary, stored: VideoEntry, options: ExtractOptions, store: Store,
                  record: VideoRecord, explicit_split: bool) -> None:
    """A video the store holds: counted; a label (or a split the inputs give) that differs from the
    recorded one is reported, and with --relabel recorded (its frames segment rewritten with the new
    entry, so that an index rebuilt from the segments keeps it too)."""
    given = (record.label, record.split if explicit_split else stored.split)
    if stored.ok and given != (stored.label, stored.split):
        summary.changes.append((str(record.path), (stored.label, stored.split), given))
        if options.relabel:
            stored = replace(stored, label=given[0], split=given[1])
            store.write_frames(stored, store.read_frames(stored.video_id))
            summary.relabelled += 1
    if stored.ok:
        summary.splits[(stored.split, stored.label)] += 1
    summary.already_done += 1
    if stored.ok and ((stored.fpv, stored.sampling, stored.spread, stored.windows)
                      != (options.fpv, options.sampling, options.spread, options.windows)):
        summary.other_sampling += 1


def _cannot_read(summary: ExtractSummary, record: VideoRecord, reason: str | None) -> None:
    """A file that cannot even be read: reported, not recorded, so a rerun tries it again."""
    summary.failed += 1
    summary.failures.append((str(record.path), f"{record.path}: cannot read ({reason or 'error'})"))


def _extract_one(store: Store, record: VideoRecord, options: ExtractOptions, known: dict,
                 summary: ExtractSummary, reporter: Reporter, explicit_split: bool = False) -> None:
    try:
        path = record.path.resolve()
        stat = path.stat()
    except (OSError, RuntimeError) as exc:  # RuntimeError: pathlib's "Symlink loop" (Python < 3.13)
        _cannot_read(summary, record, unreadable_reason(record.path) or getattr(exc, "strerror", None) or str(exc))
        return
    if not S_ISREG(stat.st_mode):  # a FIFO would block the hashing forever, a device never end
        _cannot_read(summary, record, "not a regular file")
        return
    cached = known.get((str(path), stat.st_size, stat.st_mtime))
    if cached is not None and (cached.ok or not options.retry_failed):
        _already_done(summary, store.entry(cached.video_id), options, store, record, explicit_split)
        return
    try:
        sha = file_sha256(path)
    except OSError as exc:  # e.g. permission denied: one unreadable file must not end the run
        _cannot_read(summary, record, exc.strerror)
        return
    if options.shard is not None and not options.shard.holds(video_id_for(sha)):
        summary.other_shards += 1
        return
    entry = VideoEntry(
        video_id=video_id_for(sha), path=str(path), sha256=sha, size=stat.st_size, mtime=stat.st_mtime,
        label=record.label, split=record.split, dataset=record.dataset, method=record.method,
        compression=record.compression, group=record.group, identities=",".join(record.identities),
        sampling=options.sampling, fpv=options.fpv, spread=options.spread, windows=int(options.windows),
    )
    if store.has(entry.video_id, "frames"):
        previous = store.entry(entry.video_id)
        if previous.path != entry.path and previous.ok:
            summary.duplicates += 1
            reporter.warn(f"{record.path}: same content as {previous.path}, skipped")
            return
        if previous.ok or not options.retry_failed:
            _already_done(summary, previous, options, store, record, explicit_split)
            return
    try:
        info, kept, pixels = sample_frames(path, options.fpv, options.sampling, seed=options.seed,
                                           spread=options.spread, windows=int(options.windows))
    except VideoError as exc:
        entry.video_id = _failed_id(path)
        entry.status, entry.error = FRAME_STATUS_FAILED, str(exc)
        store.write_frames(entry, None)
        summary.failed += 1
        summary.failures.append((str(record.path), str(exc)))
        reporter.warn(str(exc))
        return
    entry.fps, entry.frame_count = info.fps, info.frame_count
    entry.height, entry.width = int(pixels.shape[1]), int(pixels.shape[2])
    entry.rotation = info.rotation
    if info.header_frame_count is not None:
        reporter.warn(f"{record.path}: frame count in header: {info.header_frame_count}, decoded: {info.frame_count}")
    roles = frame_roles(kept, info.frame_count, options) if options.spread else None
    store.write_frames(entry, Frames(kept, pixels, roles))
    sampled = len(kept) if roles is None else int(np.count_nonzero(roles & ROLE_SEQUENCE))
    if sampled < options.fpv and info.frame_count > 1:  # an image is a one-frame video by design
        summary.short += 1
        reporter.warn(f"{record.path}: only {sampled} of {options.fpv} frames available")
    summary.added += 1
    summary.frames += len(kept)
    summary.by_dataset[record.dataset] += 1
    summary.by_label[record.label] += 1
    summary.splits[(record.split, record.label)] += 1
