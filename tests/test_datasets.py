"""Tests for deepfake_cli.data.datasets on small fake dataset trees (and the shared data when present)."""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from pathlib import Path

import cv2
import pytest

from deepfake_cli.data.datasets import DatasetError, VideoRecord, discover
from deepfake_cli.data.splits import assign_splits
from tests.helpers import shared_data


def _touch(root: Path, *relatives: str) -> None:
    """Create empty files: discover reads names and metadata only."""
    for relative in relatives:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


@pytest.fixture(autouse=True)
def _no_video_decoding(monkeypatch):
    """discover and assign_splits must never open a video."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a video was opened")

    monkeypatch.setattr(cv2, "VideoCapture", forbidden)


@pytest.fixture
def ffpp(tmp_path) -> Path:
    root = tmp_path / "FaceForensics++"
    _touch(
        root,
        "original_sequences/youtube/c23/videos/071.mp4",
        "original_sequences/youtube/c23/videos/054.mp4",
        "original_sequences/youtube/c40/videos/999.mp4",
        "original_sequences/youtube/raw/videos/111.mp4",
        "original_sequences/actors/c23/videos/01__walking_down_street.mp4",
        "manipulated_sequences/Deepfakes/c23/videos/071_054.mp4",
        "manipulated_sequences/Deepfakes/c23/masks/071_054.mp4",
        "manipulated_sequences/Deepfakes/masks/videos/071_054.mp4",
        "manipulated_sequences/Face2Face/c40/videos/054_071.mp4",
        "manipulated_sequences/FaceShifter/c23/videos/222_111.mp4",
        "manipulated_sequences/NeuralTextures/c23/videos/999_998.mp4",
        "manipulated_sequences/FaceSwap/c23/videos/.hidden.mp4",
        "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__walking_down_street__ABCD1234.mp4",
    )
    (root / "splits").mkdir()
    for split, pairs in {"train": [["071", "054"]], "val": [["111", "222"]], "test": [["999", "998"]]}.items():
        (root / "splits" / f"{split}.json").write_text(json.dumps(pairs))
    return root


def test_ffpp_layout(ffpp):
    records = discover([ffpp])
    got = {r.path.relative_to(ffpp).as_posix(): r for r in records}
    assert sorted(got) == sorted(
        [
            "original_sequences/youtube/c23/videos/071.mp4",
            "original_sequences/youtube/c23/videos/054.mp4",
            "original_sequences/youtube/c40/videos/999.mp4",
            "original_sequences/youtube/raw/videos/111.mp4",
            "original_sequences/actors/c23/videos/01__walking_down_street.mp4",
            "manipulated_sequences/Deepfakes/c23/videos/071_054.mp4",
            "manipulated_sequences/Face2Face/c40/videos/054_071.mp4",
            "manipulated_sequences/FaceShifter/c23/videos/222_111.mp4",
            "manipulated_sequences/NeuralTextures/c23/videos/999_998.mp4",
            "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__walking_down_street__ABCD1234.mp4",
        ]
    )
    assert [r.path for r in records] == sorted(r.path for r in records)
    real = got["original_sequences/youtube/c23/videos/071.mp4"]
    assert (real.label, real.dataset, real.method, real.compression, real.split) == ("real", "ffpp", "", "c23", "train")
    assert real.identities == ("ffpp:071",)
    fake = got["manipulated_sequences/Face2Face/c40/videos/054_071.mp4"]
    assert (fake.label, fake.method, fake.compression, fake.split) == ("fake", "Face2Face", "c40", "train")
    assert fake.identities == ("ffpp:054", "ffpp:071")
    assert got["original_sequences/youtube/raw/videos/111.mp4"].compression == "c0"
    assert got["original_sequences/youtube/raw/videos/111.mp4"].split == "val"
    assert got["manipulated_sequences/FaceShifter/c23/videos/222_111.mp4"].split == "val"
    assert got["original_sequences/youtube/c40/videos/999.mp4"].split == "test"
    assert got["manipulated_sequences/NeuralTextures/c23/videos/999_998.mp4"].split == "test"
    actor = got["original_sequences/actors/c23/videos/01__walking_down_street.mp4"]
    assert (actor.label, actor.split, actor.identities) == ("real", "", ("ffpp-actors:01",))
    dfd = got["manipulated_sequences/DeepFakeDetection/c23/videos/01_02__walking_down_street__ABCD1234.mp4"]
    assert (dfd.label, dfd.method, dfd.split) == ("fake", "DeepFakeDetection", "")
    assert dfd.identities == ("ffpp-actors:01", "ffpp-actors:02")


def test_ffpp_sub_folder_and_single_file(ffpp):
    sub = discover([ffpp / "manipulated_sequences" / "Deepfakes" / "c23" / "videos"])
    assert len(sub) == 1 and (sub[0].method, sub[0].split, sub[0].dataset) == ("Deepfakes", "train", "ffpp")
    single = discover([ffpp / "original_sequences" / "youtube" / "c40" / "videos" / "999.mp4"])
    assert len(single) == 1 and (single[0].label, single[0].split) == ("real", "test")


def test_ffpp_without_splits_leaves_split_empty(ffpp):
    for path in (ffpp / "splits").iterdir():
        path.unlink()
    assert {r.split for r in discover([ffpp])} == {""}


def test_celebdf_layout(tmp_path):
    root = tmp_path / "Celeb-DF-v2"
    _touch(
        root,
        "Celeb-real/id0_0000.mp4",
        "Celeb-real/id1_0003.mp4",
        "Celeb-synthesis/id0_id1_0000.mp4",
        "Celeb-synthesis/id1_id0_0001.mp4",
        "YouTube-real/00170.mp4",
        "YouTube-real/00171.mp4",
    )
    (root / "List_of_testing_videos.txt").write_text("1 YouTube-real/00170.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n")
    got = {f"{r.path.parent.name}/{r.path.name}": r for r in discover([root])}
    assert len(got) == 6 and {r.dataset for r in got.values()} == {"celebdf"}
    assert got["Celeb-real/id1_0003.mp4"].identities == ("celebdf:id1",)
    assert got["Celeb-real/id1_0003.mp4"].label == "real" and got["Celeb-real/id1_0003.mp4"].method == ""
    fake = got["Celeb-synthesis/id0_id1_0000.mp4"]
    assert (fake.label, fake.method, fake.split) == ("fake", "Celeb-synthesis", "test")
    assert fake.identities == ("celebdf:id0", "celebdf:id1")
    assert got["Celeb-synthesis/id1_id0_0001.mp4"].split == ""
    youtube = got["YouTube-real/00170.mp4"]
    assert (youtube.label, youtube.split, youtube.identities) == ("real", "test", ("celebdf-yt:00170",))
    assert got["YouTube-real/00171.mp4"].split == ""
    only_fakes = discover([root / "Celeb-synthesis"])
    assert [r.split for r in only_fakes] == ["test", ""]


def test_dfdc_metadata_json(tmp_path):
    part = tmp_path / "dfdc_train_part_0"
    _touch(part, "aaa.mp4", "bbb.mp4", "ccc.mp4", "ddd.mp4")
    metadata = {
        "aaa.mp4": {"label": "REAL", "split": "train", "original": None},
        "bbb.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
        "ccc.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
        "ddd.mp4": {"label": "REAL", "split": "train", "original": None},
    }
    (part / "metadata.json").write_text(json.dumps(metadata))
    got = {r.path.name: r for r in discover([part])}
    assert {r.dataset for r in got.values()} == {"dfdc"} and {r.split for r in got.values()} == {"train"}
    assert (got["aaa.mp4"].label, got["aaa.mp4"].method, got["aaa.mp4"].identities) == ("real", "", ("dfdc:aaa",))
    assert (got["bbb.mp4"].label, got["bbb.mp4"].method, got["bbb.mp4"].identities) == ("fake", "dfdc", ("dfdc:aaa",))
    assert got["ccc.mp4"].identities == ("dfdc:aaa",) and got["ddd.mp4"].identities == ("dfdc:ddd",)


def test_dfdc_faces_metadata_csv(tmp_path):
    root = tmp_path / "faces"
    _touch(root, "real/aaa.jpg", "fake/bbb.jpg", "fake/ccc.png")
    (root / "metadata.csv").write_text(
        "file,label,video,original\nreal/aaa.jpg,real,aaa.mp4,\nfake/bbb.jpg,fake,bbb.mp4,aaa.mp4\nfake/ccc.png,FAKE,ccc.mp4,zzz.mp4\n"
    )
    got = {r.path.name: r for r in discover([root])}
    assert {r.dataset for r in got.values()} == {"dfdc"}
    assert got["aaa.jpg"].identities == got["bbb.jpg"].identities == ("dfdc:aaa",)
    assert (got["ccc.png"].label, got["ccc.png"].method, got["ccc.png"].identities) == ("fake", "dfdc", ("dfdc:zzz",))
    assert [r.path.name for r in discover([root / "fake"])] == ["bbb.jpg", "ccc.png"]


def test_plain_real_fake_folders(tmp_path):
    _touch(
        tmp_path,
        "data/Real/a.mp4",
        "data/FAKE/sub/b.avi",
        "data/fake/c.jpg",
        "data/other.mov",
        "data/notes.txt",
        "data/.hidden.mp4",
        "data/.cache/d.mp4",
        "data/real/._e.mp4",
    )
    got = {r.path.name: r for r in discover([tmp_path / "data"])}
    assert sorted(got) == ["a.mp4", "b.avi", "c.jpg", "other.mov"]
    assert (got["a.mp4"].label, got["a.mp4"].dataset, got["a.mp4"].identities) == ("real", "folders", ("file:a",))
    assert got["b.avi"].label == "fake" and got["c.jpg"].label == "fake"
    assert (got["other.mov"].label, got["other.mov"].dataset) == ("unknown", "files")
    assert discover([tmp_path / "data" / "Real"])[0].label == "real"
    assert discover([tmp_path / "data" / "Real" / "a.mp4"])[0].label == "real"


def test_unlabelled_files_and_deduplication(tmp_path):
    _touch(tmp_path, "clips/x.mp4", "clips/deeper/y.webm", "clips/z.jpeg")
    records = discover([tmp_path / "clips", tmp_path / "clips" / "x.mp4", tmp_path / "clips" / "deeper" / ".." / "x.mp4"])
    assert [r.path.name for r in records] == ["y.webm", "x.mp4", "z.jpeg"]  # sorted by path
    assert {(r.label, r.dataset) for r in records} == {("unknown", "files")}
    assert records[1].identities == ("file:x",)


def test_labels_csv_overrides_layout(ffpp, tmp_path):
    _touch(tmp_path, "extra/clip.mp4")
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split", "method", "compression", "group", "dataset"])
        writer.writerow(["FaceForensics++/original_sequences/youtube/c23/videos/071.mp4", "FAKE", "test", "mine", "raw", "g1", ""])
        writer.writerow(["extra/clip.mp4", "real", "", "", "", "", "mydata"])
    records = discover([ffpp], labels_csv=labels)
    got = {r.path.name: r for r in records}
    assert len(records) == 11
    overridden = got["071.mp4"]
    assert (overridden.label, overridden.dataset, overridden.split, overridden.method, overridden.compression) == (
        "fake", "csv", "test", "mine", "c0"
    )
    assert overridden.identities == ("csv:g1",)
    assert (got["clip.mp4"].label, got["clip.mp4"].identities) == ("real", ("file:clip",))
    assert got["clip.mp4"].dataset == "mydata"  # the optional dataset column names it in reports
    assert got["054.mp4"].dataset == "ffpp"
    assert [r.path.name for r in discover([], labels_csv=labels)] == ["071.mp4", "clip.mp4"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("path,label\nextra/clip.mp4,maybe\n", "unknown label"),
        ("path,label\nextra/missing.mp4,real\n", "not found"),
        ("file,kind\nextra/clip.mp4,real\n", "path,label"),
        ("path,label,split\nextra/clip.mp4,real,holdout\n", "unknown split"),
    ],
)
def test_bad_labels_csv(tmp_path, content, message):
    _touch(tmp_path, "extra/clip.mp4")
    (tmp_path / "labels.csv").write_text(content)
    with pytest.raises(DatasetError, match=message):
        discover([], labels_csv=tmp_path / "labels.csv")


def test_discover_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match="no such file"):
        discover([tmp_path / "missing"])
    with pytest.raises(DatasetError, match="no usable video"):
        discover([tmp_path / "empty"])
    with pytest.raises(DatasetError, match="not a video or image"):
        discover([tmp_path / "notes.txt"])
    with pytest.raises(DatasetError, match="no input"):
        discover([])


# ---------------------------------------------------------------- assign_splits


def _record(name: str, *ids: str, split: str = "") -> VideoRecord:
    return VideoRecord(path=Path(f"/v/{name}.mp4"), label="real", dataset="files", split=split, identities=ids)


def _components(records: list[VideoRecord]) -> list[set[int]]:
    """Connected components (record indices) over shared identities, by graph search."""
    by_id = defaultdict(set)
    for i, r in enumerate(records):
        for identity in r.identities:
            by_id[identity].add(i)
    seen, components = set(), []
    for start in range(len(records)):
        if start in seen:
            continue
        stack, component = [start], set()
        while stack:
            i = stack.pop()
            if i in component:
                continue
            component.add(i)
            for identity in records[i].identities:
                stack.extend(by_id[identity] - component)
        seen |= component
        components.append(component)
    return components


def _random_records(rng: random.Random, n: int) -> list[VideoRecord]:
    records = []
    for i in range(n):
        ids = tuple(f"p:{rng.randrange(n)}" for _ in range(rng.choice([1, 1, 2])))
        records.append(_record(f"v{i}", *ids))
    return records


def test_fake_joins_both_identities_into_one_group():
    records = [
        _record("071", "ffpp:071"),
        _record("054", "ffpp:054"),
        _record("071_054", "ffpp:071", "ffpp:054"),
        _record("054_300", "ffpp:054", "ffpp:300"),
        _record("500", "ffpp:500"),
    ]
    out = assign_splits(records)
    assert [r.group for r in out] == ["ffpp:054"] * 4 + ["ffpp:500"]
    assert len({r.split for r in out[:4]}) == 1
    assert [r.path for r in out] == [r.path for r in records]


@pytest.mark.parametrize("seed", range(5))
def test_groups_never_straddle_splits(seed):
    records = _random_records(random.Random(seed), 300)
    out = assign_splits(records, seed=seed)
    for component in _components(records):
        assert len({out[i].split for i in component}) == 1
        assert len({out[i].group for i in component}) == 1
    assert len({r.group for r in out}) == len(_components(records))
    assert {r.split for r in out} == {"train", "val", "test"}


def test_assign_splits_is_deterministic_and_seeded():
    records = [_record(f"v{i}", f"p:{i}") for i in range(200)]
    first = assign_splits(records, seed=7)
    assert first == assign_splits(list(records), seed=7)
    assert first == [r for r in assign_splits(records[::-1], seed=7)][::-1]
    assert [r.split for r in first] != [r.split for r in assign_splits(records, seed=8)]
    counts = {s: sum(r.split == s for r in first) for s in ("train", "val", "test")}
    assert counts == {"train": 160, "val": 20, "test": 20}
    assert {r.split for r in assign_splits(records, fractions=(1, 0, 0))} == {"train"}


def test_small_dataset_still_gets_val_and_test():
    records = [_record(f"v{i}", f"p:{i}") for i in range(10)]
    assert sorted(r.split for r in assign_splits(records)) == ["test"] + ["train"] * 8 + ["val"]


def test_official_splits_are_kept_and_spread_to_their_group():
    records = [
        _record("a", "x:1", split="test"),
        _record("b", "x:1", "x:2"),  # shares x:1 with an official test video
        _record("c", "x:2", split="test"),
        _record("d", "x:3", split="train"),
        _record("e", "x:3", split="val"),
        _record("f", "x:3", split="val"),
        _record("g", "x:3"),
    ] + [_record(f"free{i}", f"y:{i}") for i in range(20)]
    out = assign_splits(records, seed=1)
    assert [r.split for r in out[:7]] == ["test", "test", "test", "train", "val", "val", "val"]
    assert {r.split for r in out[7:]} == {"train", "val", "test"}
    regrouped = assign_splits(records, seed=1, keep_official=False)
    assert len({r.split for r in regrouped[:3]}) == 1 and len({r.split for r in regrouped[3:7]}) == 1


def test_bad_fractions():
    with pytest.raises(ValueError):
        assign_splits([_record("a", "x:1")], fractions=(0.8, 0.2))
    with pytest.raises(ValueError):
        assign_splits([_record("a", "x:1")], fractions=(0.8, -0.1, 0.3))


# ---------------------------------------------------------------- shared data


@pytest.mark.realdata
def test_real_ffpp():
    root = shared_data("ffpp")
    records = discover([root])
    assert 120 <= len(records) <= 150
    for r in records:
        parts = r.path.relative_to(root).parts
        assert r.dataset == "ffpp" and r.split == "train"
        assert r.compression == parts[2] and r.compression in ("c23", "c40")
        if parts[0] == "original_sequences":
            assert (r.label, r.method) == ("real", "") and r.identities == (f"ffpp:{r.path.stem}",)
        else:
            target, source = r.path.stem.split("_")
            assert (r.label, r.method) == ("fake", parts[1])
            assert r.identities == (f"ffpp:{target}", f"ffpp:{source}")
    assert {r.label for r in records} == {"real", "fake"}
    out = assign_splits(records)
    for component in _components(records):
        assert len({out[i].group for i in component}) == 1


@pytest.mark.realdata
def test_real_dfdc_faces():
    root = shared_data("dfdc-faces")
    with (root / "metadata.csv").open(newline="") as f:
        rows = {row["file"]: row for row in csv.DictReader(f)}
    records = discover([root])
    assert len(records) == len(rows) == 10_000
    for r in records:
        row = rows[r.path.relative_to(root).as_posix()]
        assert (r.dataset, r.label) == ("dfdc", row["label"])
        original = row["original"] if r.label == "fake" else row["video"]
        assert r.identities == (f"dfdc:{Path(original).stem}",)
    out = assign_splits(records, seed=0)
    split_of_group = defaultdict(set)
    for r in out:
        split_of_group[r.group].add(r.split)
    assert all(len(s) == 1 for s in split_of_group.values())
    counts = {s: sum(r.split == s for r in out) for s in ("train", "val", "test")}
    assert 7500 < counts["train"] < 8500 and 700 < counts["val"] < 1300 and 700 < counts["test"] < 1300


def test_a_labels_csv_giving_one_file_two_labels_is_refused_naming_both_rows(tmp_path):
    from deepfake_cli.data.datasets import DatasetError, discover

    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"x")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nclips/a.mp4,real\nclips/../clips/a.mp4,fake\n")
    with pytest.raises(DatasetError, match=r"line 3 labels clips/\.\./clips/a\.mp4 fake, but .*line 2 labels the same "
                                           r"file real"):
        discover([], labels_csv=labels)
    labels.write_text("path,label\nclips/a.mp4,real\n./clips/a.mp4,real\n")  # the same label twice: no conflict
    assert {r.label for r in discover([], labels_csv=labels)} == {"real"}
