"""A damaged store is found, named and repaired, never read as garbage (issue: checksummed store).

Every array of a segment carries an HDF5 Fletcher-32 checksum, so random bytes in a compressed
chunk (frames' pixels, face crops) or in a small uncompressed array (frame indices, scores) fail
the read with DamagedSegmentError naming the video and the file; `dfd check` lists them, and
`--repair` drops them so that the stage which wrote each redoes exactly that video.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from deepfake_cli.data.check import check_store
from deepfake_cli.cli.app import app
from deepfake_cli.faces.crop import CropOptions, crop
from deepfake_cli.data.store import DamagedIndexError, DamagedSegmentError, Features, Store
from tests.helpers import damage_array, synthetic_store, tiny_faces, tiny_frames, video_entry

READERS = {"frames": lambda s, v: s.read_frames(v), "faces": lambda s, v: s.read_faces(v),
           "features.m1": lambda s, v: s.read_features(v, "m1")}


def make_store(path, videos=("v1", "v2")):
    with Store.open(path, write=True) as store:
        for vid in videos:
            store.write_frames(video_entry(vid), tiny_frames(n=4, h=48, w=64))
            store.write_faces(vid, tiny_faces(n=4, size=32))
            store.write_features(vid, "m1", Features(np.arange(4), np.ones((4, 8)), np.full(4, 0.7)))
    return path


CASES = [("frames", "pixels"), ("frames", "indices"), ("faces", "crops"), ("faces", "frame_indices"),
         ("faces", "scores"), ("features.m1", "features"), ("features.m1", "scores")]


@pytest.mark.parametrize("stage,array", CASES)
def test_damage_in_any_array_is_found_named_and_repaired(tmp_path, stage, array):
    path = make_store(tmp_path / "s.h5")
    damage_array(path, "v1", stage, array)
    with Store.open(path) as store:
        with pytest.raises(DamagedSegmentError, match=rf"v1\.{stage}\.h5: damaged {stage} segment of video v1"):
            READERS[stage](store, "v1")
        READERS[stage](store, "v2")  # the other video is intact
    found = check_store(path)
    assert [(d["video_id"], d["stage"]) for d in found.damaged] == [("v1", stage)] and found.segments == 6
    assert found.damaged[0]["path"] == "/videos/v1.mp4"
    repaired = check_store(path, repair=True)
    assert repaired.repaired and len(repaired.damaged) == 1
    with Store.open(path) as store:
        assert not store.has("v1", stage) and store.has("v2", stage)
        assert ("v1" in {e.video_id for e in store.entries()}) == (stage != "frames")  # extract re-adds it
    assert check_store(path).damaged == []


def test_crop_drops_damaged_frames_and_carries_on(tmp_path):
    path = tmp_path / "s.h5"
    with Store.open(path, write=True) as store:
        for vid in ("v1", "v2"):
            store.write_frames(video_entry(vid), tiny_frames(n=3, h=48, w=64))
    damage_array(path, "v1", "frames", "pixels")
    with Store.open(path, write=True) as store:
        summary = crop(store, CropOptions(size=32, device="cpu"))
        assert summary.damaged == ["/videos/v1.mp4"] and summary.cropped == 1
    with Store.open(path) as store:
        assert [e.video_id for e in store.entries()] == ["v2"] and store.has("v2", "faces")


def test_a_damaged_index_is_named_and_rebuilt_from_the_segments(tmp_path):
    path = make_store(tmp_path / "s.h5")
    path.write_bytes(b"\0" * 64 + path.read_bytes()[64:])  # the HDF5 signature gone
    with pytest.raises(DamagedIndexError, match="check --repair"):
        Store.open(path)
    result = CliRunner().invoke(app, ["check", "--store", str(path), "--repair", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["index_rebuilt"] is True
    with Store.open(path) as store:
        assert sorted(e.video_id for e in store.entries()) == ["v1", "v2"] and store.has("v1", "features.m1")


def test_check_command_exits_1_on_damage_and_0_once_repaired(tmp_path):
    path = make_store(tmp_path / "s.h5")
    damage_array(path, "v2", "faces", "crops")
    listed = CliRunner().invoke(app, ["check", "--store", str(path)])
    assert listed.exit_code == 1 and "v2.faces.h5" in listed.output and "dfd crop" in listed.output
    fixed = CliRunner().invoke(app, ["check", "--store", str(path), "--repair"])
    assert fixed.exit_code == 0 and "dropped" in fixed.output
    assert CliRunner().invoke(app, ["check", "--store", str(path)]).exit_code == 0


def test_a_deleted_frames_segment_is_noticed_and_repair_makes_extract_redo_the_video(tmp_path):
    from deepfake_cli.data.check import check_store

    store_path = synthetic_store(tmp_path / "s.h5", n_videos=4, n_val=0)
    segment = Path(str(store_path) + ".d") / "v001.frames.h5"
    assert segment.is_file()
    segment.unlink()
    summary = check_store(store_path)
    assert [(d["video_id"], d["stage"], d["reason"], d["redo"]) for d in summary.damaged] == [
        ("v001", "frames", "missing", "dfd extract")]
    check_store(store_path, repair=True)
    with Store.open(store_path) as store:
        assert "v001" not in {e.video_id for e in store.entries()}  # extract adds it again
    assert check_store(store_path).damaged == []


def test_an_index_that_cannot_be_replaced_is_a_clear_error_and_the_segments_stay(tmp_path, monkeypatch):
    """An immutable index (chattr +i) or a read-only folder: os.replace fails with EPERM/EACCES."""
    import os

    from deepfake_cli.data.store import StoreError

    store_path = synthetic_store(tmp_path / "s.h5", n_videos=2, n_val=0)
    segments = sorted(p.name for p in Path(str(store_path) + ".d").iterdir())

    def refuse(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(StoreError, match=r"cannot replace the index .*s\.h5 \(Operation not permitted\): .*immutable"):
        check_store(store_path, repair=True)
    monkeypatch.undo()
    assert sorted(p.name for p in Path(str(store_path) + ".d").iterdir()) == segments
