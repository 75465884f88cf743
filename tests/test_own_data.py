"""A user's own real/ + fake/ folder (issue 28, item 6): extract splits each label in the fractions
and prints the split counts per label, --val-fraction/--test-fraction set them, and a second
extract whose labels or splits differ from the recorded ones says so and records them only with
--relabel (segments included, so an index rebuilt from them keeps the new ones)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepfake_cli.cli.app import app
from deepfake_cli.data.store import Store
from deepfake_cli.errors import EXIT_USAGE
from tests.helpers import write_face_clip

runner = CliRunner()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("own")
    for label in ("real", "fake"):
        (root / label).mkdir()
        for i in range(6):
            write_face_clip(root / label / f"{label}{i}.mp4", shift=2 * i, fake=label == "fake", frames=3, size=64)
    return root


def extract(*args, expect: int = 0):
    result = runner.invoke(app, ["extract", *map(str, args)], env={"COLUMNS": "120"})
    assert result.exit_code == expect, result.output
    return result


def test_extract_prints_the_split_counts_per_label(folder, tmp_path):
    result = extract(folder, "--fpv", 2, "--store", tmp_path / "s.h5")
    assert "videos by split" in result.stdout
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in result.stdout.split("videos by split")[1].splitlines() if line.startswith("│")}
    header = [c.strip() for c in next(line for line in result.stdout.split("videos by split")[1].splitlines()
                                       if line.startswith("┃")).split("┃")[2:-1]]
    assert header == ["fake", "real", "videos"]
    assert sum(int(r[2]) for r in rows.values()) == 12 and set(rows) <= {"train", "val", "test"}
    with Store.open(tmp_path / "s.h5") as store:
        recorded = {}
        for e in store.entries():
            recorded.setdefault(e.split, {}).setdefault(e.label, 0)
            recorded[e.split][e.label] += 1
    assert {s: [str(recorded[s].get("fake", 0)), str(recorded[s].get("real", 0)), str(sum(recorded[s].values()))]
            for s in recorded} == rows
    # stratified by label: 6 real and 6 fake give val and test one of each (issue 28: it was 1 video each)
    assert recorded == {"train": {"fake": 4, "real": 4}, "val": {"fake": 1, "real": 1}, "test": {"fake": 1, "real": 1}}
    assert "its AUC cannot be measured" not in result.stderr
    few = extract(folder / "real", folder / "fake" / "fake0.mp4", "--fpv", 2, "--store", tmp_path / "few.h5")
    warned = " ".join(few.stderr.split())  # one fake video: val and test cannot have one
    assert "the val split has no fake video" in warned and "the test split has no fake video" in warned
    again = json.loads(extract(folder, "--fpv", 2, "--store", tmp_path / "s.h5", "--json").stdout)
    assert again["splits"] == {s: dict(sorted(c.items())) for s, c in sorted(recorded.items(),
                                                                        key=lambda kv: ("train", "val", "test").index(kv[0]))}


def test_the_fractions_set_the_splits(folder, tmp_path):
    summary = json.loads(extract(folder, "--fpv", 2, "--store", tmp_path / "s.h5", "--val-fraction", 0.5,
                                 "--test-fraction", 0, "--json").stdout)
    splits = summary["splits"]
    assert set(splits) == {"train", "val"} and sum(splits["val"].values()) == 6
    assert sum(splits["train"].values()) == 6
    bad = extract(folder, "--val-fraction", 0.6, "--test-fraction", 0.5, "--store", tmp_path / "t.h5",
                  expect=EXIT_USAGE)
    assert "--val-fraction and --test-fraction" in bad.output and not (tmp_path / "t.h5").exists()


def test_a_second_extract_with_other_labels_says_so_and_relabel_records_them(folder, tmp_path):
    store = tmp_path / "s.h5"
    extract(folder, "--fpv", 2, "--store", store, "--quiet")
    lines = ["path,label,split"] + [f"{label}/{label}{i}.mp4,{label},{'val' if i < 3 else 'train'}"
                                    for label in ("real", "fake") for i in range(6)]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    with Store.open(store) as opened:
        before = {Path(e.path).name: e.split for e in opened.entries()}
    expected = {f"{label}{i}.mp4": "val" if i < 3 else "train" for label in ("real", "fake") for i in range(6)}
    changed = sum(before[name] != split for name, split in expected.items())
    assert changed > 0

    told = extract("--labels", folder / "labels.csv", "--fpv", 2, "--store", store)
    message = " ".join(told.output.split())
    assert f"{changed} video(s) are recorded with another label or split" in message and "--relabel" in message
    assert "Nothing to do" not in told.output
    with Store.open(store) as opened:
        assert {Path(e.path).name: e.split for e in opened.entries()} == before  # kept as recorded

    relabelled = json.loads(extract("--labels", folder / "labels.csv", "--fpv", 2, "--store", store, "--relabel",
                                    "--json").stdout)
    assert relabelled["relabelled"] == changed and relabelled["splits"] == {"train": {"fake": 3, "real": 3},
                                                                            "val": {"fake": 3, "real": 3}}
    store.unlink()  # the index rebuilt from the segments keeps the new splits
    with Store.open(store, write=True) as opened:
        assert {Path(e.path).name: e.split for e in opened.entries()} == expected
        assert opened.read_frames(opened.entries()[0].video_id).pixels.shape[0] == 2
    quiet = json.loads(extract("--labels", folder / "labels.csv", "--fpv", 2, "--store", store, "--json").stdout)
    assert quiet["changes"] == [] and quiet["already_done"] == 12
