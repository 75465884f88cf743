"""Train / val / test video ids for training (deepfake_cli.data.splits)."""

from __future__ import annotations

from deepfake_cli.data.splits import training_splits
from deepfake_cli.data.store import VideoEntry


def entry(vid: str, label: str, group: str = "", split: str = "train", status: str = "ok") -> VideoEntry:
    return VideoEntry(video_id=vid, path=f"{vid}.mp4", label=label, group=group, split=split, status=status)


def ffpp_like(n_groups: int = 20) -> list[VideoEntry]:
    """One real and four fakes per group, like FF++ (1 real : 4 fake)."""
    rows = []
    for g in range(n_groups):
        rows.append(entry(f"r{g:03d}", "real", group=f"g{g}"))
        rows.extend(entry(f"f{g:03d}_{m}", "fake", group=f"g{g}") for m in range(4))
    return rows


def groups_of(entries: list[VideoEntry], ids: list[str]) -> set[str]:
    by_id = {e.video_id: e for e in entries}
    return {by_id[v].group or v for v in ids}


def test_no_group_straddles_train_and_val():
    rows = ffpp_like()
    splits = training_splits(rows, seed=3)
    assert splits["val"] and splits["train"]
    assert not groups_of(rows, splits["train"]) & groups_of(rows, splits["val"])
    assert set(splits["train"]) | set(splits["val"]) == {e.video_id for e in rows}
    assert 0.1 <= len(splits["val"]) / len(rows) <= 0.3


def test_val_has_both_labels():
    rows = ffpp_like()
    for seed in range(5):
        val = training_splits(rows, seed=seed)["val"]
        labels = {e.label for e in rows if e.video_id in val}
        assert labels == {"real", "fake"}


def test_both_labels_even_when_groups_are_single_label():
    rows = [entry(f"f{i}", "fake", group=f"f{i}") for i in range(18)]
    rows += [entry(f"r{i}", "real", group=f"r{i}") for i in range(2)]
    val = training_splits(rows, seed=0, val_fraction=0.1)["val"]
    assert {e.label for e in rows if e.video_id in val} == {"real", "fake"}


def test_deterministic_and_seeded():
    rows = ffpp_like()
    assert training_splits(rows, seed=1) == training_splits(list(reversed(rows)), seed=1)
    vals = {tuple(training_splits(rows, seed=s)["val"]) for s in range(6)}
    assert len(vals) > 1


def test_respects_existing_val_and_keeps_test_out():
    rows = ffpp_like(6)
    for e in rows[:5]:
        e.split = "val"
    for e in rows[5:10]:
        e.split = "test"
    splits = training_splits(rows, seed=0)
    assert splits["val"] == sorted(e.video_id for e in rows[:5])
    assert splits["test"] == sorted(e.video_id for e in rows[5:10])
    assert not set(splits["test"]) & (set(splits["train"]) | set(splits["val"]))


def test_only_ok_labelled_videos_and_empty_group_uses_video_id():
    rows = [entry(f"v{i}", "fake" if i % 2 else "real") for i in range(20)]
    rows.append(entry("bad", "fake", status="failed"))
    rows.append(entry("unk", "unknown"))
    rows.append(entry("nosplit", "real", split=""))
    splits = training_splits(rows, seed=0)
    used = set(splits["train"]) | set(splits["val"])
    assert "bad" not in used and "unk" not in used
    assert "nosplit" in used
    assert not set(splits["train"]) & set(splits["val"])


def test_single_group_gives_no_val():
    rows = [entry(f"v{i}", "fake" if i % 2 else "real", group="same") for i in range(6)]
    splits = training_splits(rows, seed=0)
    assert splits["val"] == [] and len(splits["train"]) == 6
