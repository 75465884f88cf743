"""`dfd pack` / `dfd unpack` (deepfake_cli.data.pack): a store's faces in one small file and back,
so that a training run elsewhere (models/default/train_gpu.sh) sees the same videos, labels, splits
and groups."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from deepfake_cli.cli.app import app
from deepfake_cli.data.pack import PackError, pack, unpack
from deepfake_cli.data.store import ROLE_SEQUENCE, ROLE_SPREAD, Faces, Frames, Store, VideoEntry
from deepfake_cli.train.cnn import CNNTrainOptions, train_cnn
from tests.helpers import synthetic_store

runner = CliRunner()


@pytest.fixture()
def store_path(tmp_path):
    return synthetic_store(tmp_path / "dfd.h5", size=48)


def test_a_pack_unpacks_into_the_same_videos_and_faces(store_path, tmp_path):
    with Store.open(store_path) as store:
        summary = pack(store, tmp_path / "faces.pack", quality=95)
    assert (summary.videos, summary.faces, summary.skipped) == (16, 96, 0)
    with Store.open(tmp_path / "copy.h5", write=True) as copy:
        assert unpack(tmp_path / "faces.pack", copy).faces == 96
    source, copy = Store.open(store_path), Store.open(tmp_path / "copy.h5")
    assert sorted(copy.stored_videos()) == sorted(source.stored_videos())
    for video_id in source.stored_videos():
        a, b = source.entry(video_id), copy.entry(video_id)
        assert (a.label, a.split, a.group, a.dataset) == (b.label, b.split, b.group, b.dataset)
        fa, fb = source.read_faces(video_id), copy.read_faces(video_id)
        assert fb.crops.shape == fa.crops.shape and fb.crops.dtype == np.uint8
        blocks = [c.reshape(-1, 12, 4, 12, 4, 3).mean(axis=(2, 4)) for c in (fa.crops, fb.crops)]  # 4x4 means
        assert np.abs(blocks[0] - blocks[1]).max() < 12  # JPEG at quality 95 of noise crops: close, not equal
        np.testing.assert_array_equal(fa.frame_indices, fb.frame_indices)
        np.testing.assert_array_equal(fa.landmarks68, fb.landmarks68)
        assert fb.settings == {**fa.settings, "packed_jpeg_quality": 95}


def test_crop_force_keeps_the_faces_of_an_unpacked_store(store_path, tmp_path):
    """An unpacked store has faces and no frames: cropping again would find no face and wipe them."""
    from deepfake_cli.faces.crop import CropOptions, crop

    with Store.open(store_path) as store:
        pack(store, tmp_path / "faces.pack")
    with Store.open(tmp_path / "copy.h5", write=True) as copy:
        unpack(tmp_path / "faces.pack", copy)
        summary = crop(copy, CropOptions(size=48, force=True))
    assert (summary.videos, summary.already_done) == (16, 16)
    assert Store.open(tmp_path / "copy.h5").face_count("v000") == 6


def test_role_spread_packs_only_the_faces_train_cnn_reads(tmp_path):
    with Store.open(tmp_path / "dfd.h5", write=True) as store:
        n = 5
        store.write_frames(VideoEntry(video_id="v", path="v.mp4", label="real", split="train"), None)
        store.write_faces("v", Faces(crops=np.full((n, 16, 16, 3), 100, np.uint8), frame_indices=np.arange(n),
                                     boxes=np.zeros((n, 4)), landmarks=np.zeros((n, 5, 2)), scores=np.ones(n),
                                     track_ids=np.zeros(n), missing_frames=np.zeros(0), settings={"size": 16},
                                     roles=np.array([ROLE_SEQUENCE] * 3 + [ROLE_SPREAD] * 2)))
    with Store.open(tmp_path / "dfd.h5") as store:
        assert pack(store, tmp_path / "spread.pack", role="spread").faces == 2
        assert pack(store, tmp_path / "all.pack").faces == 5


def test_an_oversized_pack_writes_nothing_and_keeps_the_old_file(store_path, tmp_path):
    out = tmp_path / "faces.pack"
    out.write_bytes(b"the old pack")
    with Store.open(store_path) as store, pytest.raises(PackError, match="over --max-mib"):
        pack(store, out, max_mib=0.001)
    assert out.read_bytes() == b"the old pack"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("faces.pack")] == ["faces.pack"]


def test_unpack_refuses_what_is_not_a_pack_in_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not a pack")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    for name in ("notes.txt", "other.h5"):
        result = runner.invoke(app, ["unpack", str(tmp_path / name), "--store", str(tmp_path / "s.h5")])
        assert result.exit_code != 0
        assert f"{name} is not a dfd face pack" in result.output and "Traceback" not in result.output
        assert not list(tmp_path.glob("s.h5*"))  # no store was created for it


def test_a_pack_missing_a_part_is_called_damaged(store_path, tmp_path):
    with Store.open(store_path) as store:
        pack(store, tmp_path / "faces.pack")
    with h5py.File(tmp_path / "faces.pack", "a") as f:
        del f["jpeg_ends"]
    result = runner.invoke(app, ["unpack", str(tmp_path / "faces.pack"), "--store", str(tmp_path / "copy.h5")])
    assert result.exit_code != 0 and "faces.pack is damaged" in result.output
    assert not list(tmp_path.glob("copy.h5*"))  # checked whole before any store is made


def test_a_damaged_face_in_a_pack_is_named(store_path, tmp_path):
    with Store.open(store_path) as store:
        pack(store, tmp_path / "faces.pack")
    with h5py.File(tmp_path / "faces.pack", "a") as f:
        ends = f["jpeg_ends"][()]
        f["jpeg"][ends[3 * 6]:ends[3 * 6 + 1]] = 0  # the second face of v003 (six faces a video)
    with Store.open(tmp_path / "copy.h5", write=True) as copy, pytest.raises(PackError, match="video v003"):
        unpack(tmp_path / "faces.pack", copy)


@pytest.mark.slow
def test_train_cnn_learns_from_an_unpacked_store(store_path, tmp_path):
    """Through the CLI, as train_gpu.sh runs it: pack, unpack elsewhere, train (the PyTorch engine)."""
    assert runner.invoke(app, ["pack", str(tmp_path / "faces.pack"), "--store", str(store_path), "-q"]).exit_code == 0
    result = runner.invoke(app, ["unpack", str(tmp_path / "faces.pack"), "--store", str(tmp_path / "gpu.h5"), "--json"])
    assert result.exit_code == 0 and '"faces": 96' in result.output
    options = CNNTrainOptions(backbone="efficientnet-lite0", weights="imagenet", input_size=32, epochs=3, rounds=1,
                              batch_size=8, learning_rate=1e-3, patience=3, seed=0, batchnorm="train", engine="torch")
    summary = train_cnn(Store.open(tmp_path / "gpu.h5"), tmp_path / "m", options, command="dfd train-cnn")
    assert summary["best_val_auc"] > 0.9


def test_a_store_with_frames_but_no_faces_is_skipped(tmp_path):
    with Store.open(tmp_path / "dfd.h5", write=True) as store:
        store.write_frames(VideoEntry(video_id="v", path="v.mp4", label="real"),
                           Frames(np.arange(2), np.zeros((2, 4, 4, 3), np.uint8)))
    with Store.open(tmp_path / "dfd.h5") as store:
        summary = pack(store, tmp_path / "p.pack")
    assert (summary.videos, summary.skipped) == (0, 1)
