"""Train / validation / test video ids for training, from the splits stored in the index.

Only videos that were read successfully and carry a real/fake label take part. The stored
split decides; videos with no stored split count as training videos. When a dataset has no
validation video, some are carved out of its training videos *by group* (``entry.group``, or
the video id when the group is empty), so that no identity straddles train and validation.
Test videos are returned for reference only and are never used for training.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import numpy as np

from deepfake_cli.store import VideoEntry

LABELS = ("real", "fake")
SPLITS = ("train", "val", "test")


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
