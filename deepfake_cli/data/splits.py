"""Which videos are for training, validation and test: every split rule of dfd.

At extract time, ``assign_splits`` groups the dataset records that share a face (identity)
and keeps each group within one of train/val/test (official splits kept), so no identity
leaks from training into evaluation; the store records each video's split and group. The
groups without an official split are split per label (a group counts for its majority label),
so val and test get videos of each label as soon as there are enough.

At training time, ``training_splits`` reads those back from the index. Only videos that were read successfully and carry a real/fake label take part. The stored
split decides; videos with no stored split count as training videos. When a dataset has no
validation video, some are carved out of its training videos *by group* (``entry.group``, or
the video id when the group is empty), so that no identity straddles train and validation.
Test videos are returned for reference only and are never used for training.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Iterable, Protocol, TypeVar

import numpy as np

from deepfake_cli.data.store import VideoEntry
from deepfake_cli.errors import OptionsError

LABELS = ("real", "fake")  # what a video is; only these are trained, validated and scored
UNKNOWN = "unknown"  # a video whose label is not known (datasets accepts it, training skips it)
SPLITS = ("train", "val", "test")


class SplitRecord(Protocol):
    """What assign_splits needs of a record (datasets.VideoRecord has it)."""

    path: object
    label: str
    split: str
    identities: tuple[str, ...]
    group: str


Record = TypeVar("Record", bound=SplitRecord)


def usable(entry: VideoEntry) -> bool:
    """True for a video that was read and has a real/fake label."""
    return entry.ok and entry.label in LABELS


def training_splits(entries: Iterable[VideoEntry], seed: int = 0,
                    val_fraction: float = 0.15) -> dict[str, list[str]]:
    """Video ids for "train", "val" and "test" (each sorted)."""
    rows = [e for e in entries if usable(e)]
    split = {name: [e for e in rows if (e.split or "train") == name] for name in SPLITS}
    if val_fraction > 0:
        # Each dataset without validation videos of its own gets some carved from its train
        # videos, so a dataset that ships only a train split (this FF++ copy) is still validated.
        for dataset in sorted({e.dataset for e in split["train"]}):
            if any(e.dataset == dataset for e in split["val"]):
                continue
            own = [e for e in split["train"] if e.dataset == dataset]
            kept, carved = carve_validation(own, seed, val_fraction)
            split["train"] = [e for e in split["train"] if e.dataset != dataset] + kept
            split["val"] += carved
    return {name: sorted(e.video_id for e in split[name]) for name in SPLITS}


def group_key(entry: VideoEntry) -> str:
    """The unit that must not straddle train and validation."""
    return entry.group or f"video:{entry.video_id}"


def carve_validation(train: list[VideoEntry], seed: int,
                     val_fraction: float) -> tuple[list[VideoEntry], list[VideoEntry]]:
    """Move whole groups (about ``val_fraction`` of the videos) from train to validation."""
    groups: dict[str, list[VideoEntry]] = defaultdict(list)
    for entry in train:
        groups[group_key(entry)].append(entry)
    if len(groups) < 2:
        return train, []
    order = sorted(groups)
    np.random.default_rng(seed).shuffle(order)
    target = max(1, round(val_fraction * len(train)))
    chosen: list[str] = []
    for key in order:
        if sum(len(groups[k]) for k in chosen) >= target or len(chosen) == len(order) - 1:
            break
        chosen.append(key)
    chosen = _cover_both_labels(groups, order, chosen)
    picked = set(chosen)
    val = [e for k in chosen for e in groups[k]]
    rest = [e for k in order if k not in picked for e in groups[k]]
    return rest, val


def _labels(entries: Iterable[VideoEntry]) -> set[str]:
    return {e.label for e in entries}


def _cover_both_labels(groups: dict[str, list[VideoEntry]], order: list[str],
                       chosen: list[str]) -> list[str]:
    """Add a group holding the missing label to validation, if train keeps both labels."""
    chosen = list(chosen)
    for label in LABELS:
        if label in _labels(e for k in chosen for e in groups[k]):
            continue
        for key in order:
            if key in chosen or label not in _labels(groups[key]):
                continue
            rest = [e for k in order if k not in chosen and k != key for e in groups[k]]
            if _labels(rest) >= set(LABELS):
                chosen.append(key)
                break
    return chosen


# ---------------------------------------------------------------- assign_splits (extract)


def _components(records: list[SplitRecord]) -> list[str]:
    """Group name of each record: the smallest identity of its connected component."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    keys = [r.identities or (f"path:{r.path}",) for r in records]
    for ids in keys:
        for other in ids[1:]:
            a, b = find(ids[0]), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)  # the root is always the smallest id
    return [find(ids[0]) for ids in keys]


def _hash_unit(text: str) -> float:
    """Stable pseudo-random number in [0, 1) for text."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _check_fractions(fractions: tuple[float, float, float]) -> tuple[float, float, float]:
    """Three non-negative fractions, normalised to sum 1."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or min(values) < 0 or sum(values) <= 0:
        raise OptionsError(f"fractions must be three non-negative numbers (train, val, test), got {fractions}")
    total = sum(values)
    return values[0] / total, values[1] / total, values[2] / total


def _split_groups(sizes: dict[str, int], seed: int, fractions: tuple[float, float, float]) -> dict[str, str]:
    """Assign whole groups to splits: groups in seeded-hash order fill test, then val, rest train.

    A group joins test (or val) while that brings the split closer to its share of records,
    so each split with a share gets a group once there are enough of them.
    """
    total = sum(sizes.values())
    target = {"val": fractions[1] * total, "test": fractions[2] * total}
    filled = {"val": 0.0, "test": 0.0}
    assigned = {}
    for group in sorted(sizes, key=lambda g: (_hash_unit(f"{seed}:{g}"), g)):
        split = "train"
        for candidate in ("test", "val"):
            if filled[candidate] + sizes[group] / 2 <= target[candidate]:
                split = candidate
                filled[candidate] += sizes[group]
                break
        assigned[group] = split
    return assigned


def assign_splits(
    records: list[Record],
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    keep_official: bool = True,
) -> list[Record]:
    """Set group (shared-identity component) and split of every record, in input order.

    Records with an official split keep it (unless keep_official is False); the other
    records of such a group join the group's majority official split; the remaining
    groups are split whole, deterministically for a seed.
    """
    fractions = _check_fractions(fractions)
    groups = _components(records)
    official: dict[str, Counter] = {}
    for record, group in zip(records, groups):
        if keep_official and record.split:
            official.setdefault(group, Counter())[record.split] += 1
    group_split = {g: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for g, c in official.items()}
    sizes = Counter(g for g in groups if g not in group_split)
    # stratified by label: the groups of each (majority) label fill val and test in the fractions on
    # their own, so 6 real and 6 fake videos give val and test one of each, not one video of one label
    labels: dict[str, Counter] = {}
    for record, group in zip(records, groups):
        if group in sizes:
            labels.setdefault(group, Counter())[record.label] += 1
    strata: dict[str, dict[str, int]] = {}
    for group, size in sizes.items():
        majority = min(labels[group].items(), key=lambda kv: (-kv[1], kv[0]))[0]
        strata.setdefault(majority, {})[group] = size
    for label in sorted(strata):
        group_split.update(_split_groups(strata[label], seed, fractions))
    return [
        replace(
            record,
            group=group,
            split=record.split if keep_official and record.split else group_split[group],
        )
        for record, group in zip(records, groups)
    ]
