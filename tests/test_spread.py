"""One store for the CNN and the LSTM: `dfd extract --spread N` (issue 10, item 3).

The --fpv frames the LSTM reads and N frames spread uniformly over the video (what train-cnn
should see: many distinct faces) are decoded in one pass and cropped once; every frame, and
the face cropped from it, carries its roles (store.ROLE_*). train-cnn draws from the spread
faces, export-features (and with it the LSTM, calibration and evaluation) from the sequence.
"""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from deepfake_cli.cli.app import app
from deepfake_cli.faces.crop import CropOptions, crop
from deepfake_cli.data.extract import ExtractOptions, extract
from deepfake_cli.train.face_dataset import FaceDataset, index_faces
from deepfake_cli.data.inputs import letterboxed, stored_images
from deepfake_cli.train.pseudo_clips import PREFIX, pseudo_fake_clips
from deepfake_cli.scoring.scorer import model_input
from deepfake_cli.data.store import ROLE_SEQUENCE, ROLE_SPREAD, DamagedSegmentError, Faces, Store, VideoEntry, Frames
from deepfake_cli.train.temporal import export_features
from tests.helpers import damage_array, write_face_clip

FRAMES = 15
SEQUENCE = [5, 6, 7, 8, 9]  # --fpv 5 --sampling consecutive: the middle five of 15
SPREAD = [0, 5, 9, 14]  # --spread 4: np.linspace(0, 14, 4) rounded


@pytest.fixture(scope="module")
def cropped(tmp_path_factory):
    """A 15-frame face clip extracted with --fpv 5 --spread 4 and cropped with --detect-every 4."""
    root = tmp_path_factory.mktemp("spread")
    clip = write_face_clip(root / "clip.mp4", shift=0, fake=False, frames=FRAMES)
    store = Store.open(root / "dfd.h5", write=True)
    extracted = extract(store, [clip], ExtractOptions(fpv=5, sampling="consecutive", spread=4))
    cropped = crop(store, CropOptions(size=64, device="cpu", detect_every=4))
    yield store, store.entries()[0], extracted, cropped
    store.close()


def test_extract_stores_both_samplings_once_with_their_roles(cropped):
    store, entry, extracted, _ = cropped
    frames = store.read_frames(entry.video_id)
    np.testing.assert_array_equal(frames.indices, sorted(set(SEQUENCE) | set(SPREAD)))
    expected = [ROLE_SEQUENCE * (i in SEQUENCE) | ROLE_SPREAD * (i in SPREAD) for i in frames.indices]
    np.testing.assert_array_equal(frames.roles, expected)
    np.testing.assert_array_equal(store.frame_roles(entry.video_id), expected)
    assert (entry.fpv, entry.sampling, entry.spread, entry.stored_frames) == (5, "consecutive", 4, 7)
    assert extracted.frames == 7 and extracted.short == 0  # 7 decoded frames serve 5 + 4


def test_crop_keeps_each_faces_roles_and_detects_far_apart_frames_every_time(cropped):
    store, entry, _, summary = cropped
    faces = store.read_faces(entry.video_id)
    np.testing.assert_array_equal(faces.frame_indices, sorted(set(SEQUENCE) | set(SPREAD)))
    frames = store.read_frames(entry.video_id)
    np.testing.assert_array_equal(faces.roles, frames.roles)
    np.testing.assert_array_equal(store.face_roles(entry.video_id), frames.roles)
    # frames 0 and 14 are far from the clip: no interpolation across them
    assert summary.detected_frames == 7 and faces.settings["detect_every"] == 1


def test_the_cnn_trains_on_the_spread_faces_and_the_sequence_is_the_fpv_ones(cropped):
    store, entry, _, _ = cropped
    vid = entry.video_id
    faces = store.read_faces(vid)
    rows = [row for v, row in index_faces(store, [vid])]
    assert [int(faces.frame_indices[r]) for r in rows] == SPREAD
    assert len(index_faces(store, [vid], limit=2)) == 2
    indices, crops = stored_images(store, vid, "face", 64)
    np.testing.assert_array_equal(indices, SEQUENCE)
    assert crops.shape == (5, 64, 64, 3)
    assert len(stored_images(store, vid, "face", 64, role=None)[0]) == 7
    frame_rows = [row for v, row in index_faces(store, [vid], input_kind="frame")]
    assert [int(store.read_frames(vid).indices[r]) for r in frame_rows] == SPREAD
    np.testing.assert_array_equal(stored_images(store, vid, "frame", 32)[0], SEQUENCE)


def write_two_role_video(store: Store) -> np.ndarray:
    """Video "a": frames 0 and 9 spread only, 3 and 5 sequence only, 4 both; returns its crops."""
    indices = np.array([0, 3, 4, 5, 9], np.int64)
    roles = np.array([ROLE_SPREAD, ROLE_SEQUENCE, ROLE_SEQUENCE | ROLE_SPREAD, ROLE_SEQUENCE, ROLE_SPREAD], np.uint8)
    pixels = np.random.default_rng(1).integers(0, 255, (5, 48, 64, 3)).astype(np.uint8)
    store.write_frames(VideoEntry(video_id="a", path="a.mp4", label="real", split="train", fpv=3, spread=3),
                       Frames(indices, pixels, roles))
    crops = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3)).astype(np.uint8)
    store.write_faces("a", Faces(crops=crops, frame_indices=indices, boxes=np.zeros((5, 4)),
                                 landmarks=np.zeros((5, 5, 2)), scores=np.ones(5), track_ids=np.zeros(5),
                                 missing_frames=np.array([7]), settings={"size": 32}, roles=roles))
    return crops


def test_the_sequence_is_read_without_the_spread_only_rows(tmp_path):
    """Reading a role touches only its rows on the disk: a damaged spread-only crop (row 0) does
    not stop the sequence from being read, and the rows read are the stored ones."""
    path = tmp_path / "dfd.h5"
    with Store.open(path, write=True) as store:
        crops = write_two_role_video(store)
        whole = store.read_frames("a")
    damage_array(path, "a", "faces", "crops")
    damage_array(path, "a", "frames", "pixels")
    with Store.open(path) as store:
        faces = store.read_faces("a", ROLE_SEQUENCE)
        np.testing.assert_array_equal(faces.crops, crops[1:4])
        np.testing.assert_array_equal(faces.frame_indices, [3, 4, 5])
        np.testing.assert_array_equal(faces.roles, [ROLE_SEQUENCE, ROLE_SEQUENCE | ROLE_SPREAD, ROLE_SEQUENCE])
        np.testing.assert_array_equal(faces.missing_frames, [7])  # about the video, not per row
        frames = store.read_frames("a", ROLE_SEQUENCE)
        np.testing.assert_array_equal(frames.pixels, whole.pixels[1:4])
        np.testing.assert_array_equal(stored_images(store, "a", "face", 32)[1], crops[1:4])
        with pytest.raises(DamagedSegmentError):
            stored_images(store, "a", "face", 32, role=None)
        with pytest.raises(DamagedSegmentError):
            store.read_frames("a")


def test_train_cnn_batches_are_read_without_the_sequence_only_rows(tmp_path):
    """FaceDataset (train-cnn's batches) reads a video's spread rows only: a damaged
    sequence-only crop and frame (row 0) do not stop it, and each batch holds the rows indexed."""
    path = tmp_path / "dfd.h5"
    indices = np.array([2, 4, 6, 8], np.int64)
    roles = np.array([ROLE_SEQUENCE, ROLE_SPREAD, ROLE_SEQUENCE | ROLE_SPREAD, ROLE_SPREAD], np.uint8)
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 255, (4, 48, 64, 3)).astype(np.uint8)
    crops = rng.integers(0, 255, (4, 32, 32, 3)).astype(np.uint8)
    with Store.open(path, write=True) as store:
        store.write_frames(VideoEntry(video_id="c", path="c.mp4", label="fake", split="train", fpv=2, spread=3),
                           Frames(indices, pixels, roles))
        store.write_faces("c", Faces(crops=crops, frame_indices=indices, boxes=np.zeros((4, 4)),
                                     landmarks=np.zeros((4, 5, 2)), scores=np.ones(4), track_ids=np.zeros(4),
                                     missing_frames=np.zeros(0), settings={"size": 32}, roles=roles))
    damage_array(path, "c", "faces", "crops")
    damage_array(path, "c", "frames", "pixels")
    with Store.open(path) as store:
        for kind, images in (("face", crops), ("frame", letterboxed(pixels, 32))):
            items = index_faces(store, ["c"], input_kind=kind)
            assert [row for _, row in items] == [1, 2, 3]  # rows of the whole stored array
            x, y = FaceDataset(store, items, {"c": 1}, batch_size=3, input_size=32, input_kind=kind)[0]
            np.testing.assert_array_equal(x, model_input(list(images[1:]), 32))
            np.testing.assert_array_equal(y[:, 0], [1, 1, 1])
            with pytest.raises(ValueError, match="row 0 of video c is not one of its training images"):
                FaceDataset(store, [("c", 0)], {"c": 1}, batch_size=1, input_size=32, input_kind=kind)[0]
        with pytest.raises(DamagedSegmentError):
            store.read_faces("c")


def test_export_features_scores_only_the_sequence(tmp_path, cnn_bundle):
    bundle_dir, _ = cnn_bundle
    store = Store.open(tmp_path / "dfd.h5", write=True)
    write_two_role_video(store)
    assert export_features(store, bundle_dir)["faces"] == 3
    np.testing.assert_array_equal(store.read_features("a", "lite").frame_indices, [3, 4, 5])
    store.close()


def test_a_store_without_roles_serves_every_face_to_both(tmp_path):
    store = Store.open(tmp_path / "dfd.h5", write=True)
    store.write_frames(VideoEntry(video_id="b", path="b.mp4", label="real", fpv=3),
                       Frames(np.arange(3, dtype=np.int64), np.zeros((3, 2, 2, 3), np.uint8)))
    store.write_faces("b", Faces(crops=np.zeros((3, 8, 8, 3), np.uint8), frame_indices=np.arange(3),
                                 boxes=np.zeros((3, 4)), landmarks=np.zeros((3, 5, 2)), scores=np.ones(3),
                                 track_ids=np.zeros(3), missing_frames=np.zeros(0)))
    assert store.read_faces("b").roles is None and store.read_frames("b").roles is None
    np.testing.assert_array_equal(store.face_roles("b"), [ROLE_SEQUENCE | ROLE_SPREAD] * 3)
    np.testing.assert_array_equal(store.frame_roles("b"), [ROLE_SEQUENCE | ROLE_SPREAD] * 3)
    assert [row for _, row in index_faces(store, ["b"])] == [0, 1, 2]
    assert len(stored_images(store, "b", "face", 8)[0]) == 3
    store.close()


def test_a_negative_spread_is_refused_in_one_line(tmp_path):
    clip = write_face_clip(tmp_path / "clip.mp4", shift=0, fake=False, frames=3)
    result = CliRunner().invoke(app, ["extract", str(clip), "--spread", "-1", "--store", str(tmp_path / "s.h5")])
    assert result.exit_code != 0 and "--spread" in result.output
    assert not (tmp_path / "s.h5").exists()  # no store made for a command that did nothing


def test_extracting_again_with_another_sampling_says_the_stored_videos_are_kept(cropped):
    store, entry, _, _ = cropped
    again = extract(store, [entry.path], ExtractOptions(fpv=5, sampling="consecutive", spread=8))
    assert (again.already_done, again.other_sampling, again.added) == (1, 1, 0)
    assert extract(store, [entry.path], ExtractOptions(fpv=5, sampling="consecutive", spread=4)).other_sampling == 0


class PixelScorer:
    """Stands in for the CNN: a face's "features" are its first pixels."""

    def frames(self, crops):
        return np.asarray(crops, np.float32).reshape(len(crops), -1)[:, :4], None


def test_pseudo_fake_clips_blend_the_sequence_only(cropped):
    store, entry, _, _ = cropped
    clips = pseudo_fake_clips(store, PixelScorer(), [entry.video_id], {entry.video_id: 0}, 0.999, seed=0)
    assert clips[PREFIX + entry.video_id].shape == (len(SEQUENCE), 4)
