import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from deepfake_cli.data.store import SCHEMA_VERSION, Features, Store, StoreError, StoreLockedError
from tests.helpers import tiny_faces, tiny_frames, video_entry


def test_roundtrip_frames_faces_features(tmp_path):
    path = tmp_path / "s.h5"
    frames = tiny_frames()
    with Store.open(path, write=True) as store:
        store.write_frames(video_entry(), frames)
        store.write_faces("v1", tiny_faces())
        store.write_features("v1", "m1", Features(np.arange(3), np.ones((3, 4)), np.full(3, 0.7)))
    with Store.open(path) as store:
        (entry,) = store.entries()
        assert entry.label == "fake" and entry.stored_frames == 3
        got = store.read_frames("v1")
        np.testing.assert_array_equal(got.pixels, frames.pixels)
        np.testing.assert_array_equal(got.indices, frames.indices)
        faces = store.read_faces("v1")
        assert faces.crops.shape == (3, 16, 16, 3) and faces.settings["size"] == 16
        assert faces.missing_frames.tolist() == [9]
        assert store.read_features("v1", "m1").features.shape == (3, 4)
    # the index shows the documented schema through external links
    with h5py.File(path) as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION == 3
        assert f["videos/label"][0].decode() == "fake"
        assert f["media/v1/frames/pixels"].shape == (3, 8, 10, 3)
        assert f["media/v1/faces/crops"].shape == (3, 16, 16, 3)
        assert f["media/v1/features/m1/features"].shape == (3, 4)


def test_segments_without_index_are_recovered(tmp_path):
    path = tmp_path / "s.h5"
    store = Store.open(path, write=True)
    store.write_frames(video_entry(), tiny_frames())
    # simulate a kill before the index was committed: no close()
    store._release_lock()
    with h5py.File(path) as f:
        assert f["videos"].attrs["rows"] == 0
    with Store.open(path, write=True) as again:
        assert [e.video_id for e in again.entries()] == ["v1"]
    with Store.open(path) as reader:
        assert reader.has("v1", "frames")


def test_half_written_segment_is_ignored_and_removed(tmp_path):
    path = tmp_path / "s.h5"
    with Store.open(path, write=True) as store:
        store.write_frames(video_entry(), tiny_frames())
    tmp = path.with_name("s.h5.d") / "v2.frames.h5.tmp123"
    tmp.write_bytes(b"\x89HDF half")
    with Store.open(path, write=True) as store:
        assert len(store) == 1
    assert not tmp.exists()


def test_second_writer_is_refused_with_pid(tmp_path):
    path = tmp_path / "s.h5"
    code = (
        "import sys; from deepfake_cli.data.store import Store; "
        f"s=Store.open({str(path)!r}, write=True); print('locked', flush=True); sys.stdin.read()"
    )  # holds the lock until killed, however slow this machine is (no sleep to outlast)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError, match=f"locked by pid {proc.pid}"):
            Store.open(path, write=True)
        Store.open(path).close()  # readers never need the lock
    finally:
        proc.kill()
        proc.wait()
    # the kernel released the killed writer's lock: a stale lock file does not block us
    Store.open(path, write=True).close()


def test_bad_stores_get_clear_errors(tmp_path):
    not_h5 = tmp_path / "x.h5"
    not_h5.write_text("hello")
    with pytest.raises(StoreError, match="not a readable HDF5"):
        Store.open(not_h5)
    newer = tmp_path / "new.h5"
    with h5py.File(newer, "w") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(StoreError, match="schema version 99"):
        Store.open(newer)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(StoreError, match="not a dfd store"):
        Store.open(foreign)
    with pytest.raises(StoreError, match="no store"):
        Store.open(tmp_path / "missing.h5")
    good = tmp_path / "good.h5"
    with Store.open(good, write=True) as store:
        store.write_frames(video_entry(), tiny_frames())
    truncated = tmp_path / "trunc.h5"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(StoreError):
        Store.open(truncated)


def test_failed_video_is_recorded(tmp_path):
    path = tmp_path / "s.h5"
    with Store.open(path, write=True) as store:
        store.write_frames(video_entry("bad", status="failed", error="zero-byte file"), None)
    with Store.open(path) as store:
        (entry,) = store.entries()
        assert not entry.ok and entry.error == "zero-byte file" and entry.stored_frames == 0


def test_disk_full_leaves_store_intact(tmp_path, monkeypatch):
    path = tmp_path / "s.h5"
    with Store.open(path, write=True) as store:
        store.write_frames(video_entry("v1"), tiny_frames())
        real_create = h5py.File.create_dataset if hasattr(h5py.File, "create_dataset") else None

        def full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(h5py.Group, "create_dataset", full)
        with pytest.raises(StoreError, match="disk full"):
            store.write_frames(video_entry("v2"), tiny_frames())
        monkeypatch.undo()
    assert not list(path.with_name("s.h5.d").glob("*.tmp*"))
    with Store.open(path) as store:
        assert [e.video_id for e in store.entries()] == ["v1"]


def test_landmarks68_roundtrip(tmp_path):
    path = tmp_path / "s.h5"
    points = np.random.default_rng(0).uniform(0, 16, (3, 68, 2)).astype(np.float32)
    with Store.open(path, write=True) as store:
        store.write_frames(video_entry(), tiny_frames())
        faces = tiny_faces()
        faces.landmarks68 = points
        store.write_faces("v1", faces)
    with Store.open(path) as store:
        np.testing.assert_array_equal(store.read_faces("v1").landmarks68, points)
        np.testing.assert_array_equal(store.read_landmarks68("v1"), points)
    with h5py.File(path.with_name("s.h5.d") / "v1.faces.h5") as f:
        assert f["landmarks68"].shape == (3, 68, 2) and f["landmarks68"].dtype == np.float32


def test_schema_1_store_reads_but_has_no_landmarks68(tmp_path):
    """A store written before schema 2 (no landmarks68) still reads; asking for the 68
    points says in one line to crop again."""
    path = tmp_path / "s.h5"
    with Store.open(path, write=True) as store:
        store.write_frames(video_entry(), tiny_frames())
        store.write_faces("v1", tiny_faces())  # no landmarks68, as schema 1 wrote them
    for file in [path, *path.with_name("s.h5.d").glob("*.h5")]:
        with h5py.File(file, "r+") as f:
            f.attrs["schema_version"] = 1
    with Store.open(path) as store:
        faces = store.read_faces("v1")
        assert faces.crops.shape == (3, 16, 16, 3) and faces.landmarks68 is None
        with pytest.raises(StoreError, match=r"no 68-point landmarks .*re-run `dfd crop --force`") as info:
            store.read_landmarks68("v1")
        assert "\n" not in str(info.value)
