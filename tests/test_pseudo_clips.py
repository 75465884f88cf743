"""Pseudo-fake clips for the LSTM (deepfake_cli.train.pseudo_clips, train_lstm --pseudo-fakes sbi)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from deepfake_cli.nets.bundle import BundleConfig, load_bundle, save_config, save_weights_atomic, weights_tag
from deepfake_cli.cli.app import app
from deepfake_cli.errors import OptionsError
from deepfake_cli.nets.models import build_classifier
from deepfake_cli.progress import Reporter
from deepfake_cli.train.pseudo_clips import PREFIX, blend_clip, chosen_clips, clip_seed, pseudo_fake_clips
from deepfake_cli.train.sbi import self_blend
from deepfake_cli.scoring.scorer import Scorer
from deepfake_cli.data.store import Store, StoreError
from deepfake_cli.train.temporal import LSTMTrainOptions, export_features, train_lstm
from tests.helpers import face_points, synthetic_store

BACKBONE = "efficientnet-lite0"
SIZE = 32
CLIPS = {"n_videos": 12, "n_val": 4, "size": SIZE}  # 8 train and 4 val videos of 6 faces


def test_a_blend_draws_the_same_parameters_whatever_the_face_size():
    """So one generator state gives every face of a clip the same blend, even where a small
    face rounds its mask erosion to nothing and a larger one does not."""
    rng = np.random.default_rng(0)
    crop = rng.integers(40, 200, (64, 64, 3)).astype(np.uint8)
    small = (face_points(64) - 32) * 0.2 + 32  # a face of ~8 px: erosion radius 0 whatever is drawn
    large = (face_points(64) - 32) * 1.4 + 32
    for seed in range(10):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        self_blend(crop, small, a)
        self_blend(crop, large, b)
        assert a.bit_generator.state == b.bit_generator.state, seed


def test_every_face_of_a_clip_gets_the_same_blend():
    rng = np.random.default_rng(1)
    crop = rng.integers(40, 200, (SIZE, SIZE, 3)).astype(np.uint8)
    points = face_points(SIZE)
    clip = blend_clip(np.stack([crop, crop, crop]), np.stack([points, points, points]), seed=7)
    assert not np.array_equal(clip[0], crop)
    np.testing.assert_array_equal(clip[0], clip[1])
    np.testing.assert_array_equal(clip[0], clip[2])
    independent = np.random.default_rng(7)  # one generator run on: each face its own blend
    assert not np.array_equal(self_blend(crop, points, independent)[0], self_blend(crop, points, independent)[0])
    np.testing.assert_array_equal(blend_clip(crop[None], points[None], seed=7)[0], clip[0])


def test_only_real_clips_are_chosen_by_their_own_seed():
    ids = [f"v{i:03d}" for i in range(400)]
    labels = {v: i % 2 for i, v in enumerate(ids)}
    chosen = chosen_clips(ids, labels, 0.5, seed=0)
    assert all(labels[v] == 0 for v in chosen) and 70 < len(chosen) < 130
    assert chosen_clips(ids[::-1], labels, 0.5, seed=0) == chosen[::-1]  # the order of the others does not matter
    assert chosen_clips(ids, labels, 0.5, seed=1) != chosen
    assert chosen_clips(ids, labels, 0.0, seed=0) == []


class CountingReporter(Reporter):
    def __init__(self):
        self.calls = []

    def start(self, total, description):
        self.calls.append(("start", total))

    def advance(self, item=""):
        self.calls.append(("advance", 1))

    def finish(self):
        self.calls.append(("finish", 0))


@pytest.fixture(scope="module")
def face_bundle(tmp_path_factory):
    """A store of 12 six-face clips with landmarks (8 train, 4 val) and a Lite0 bundle with
    its features exported."""
    tmp_path = tmp_path_factory.mktemp("clips")
    store_path = synthetic_store(tmp_path / "dfd.h5", **CLIPS)
    ids = [f"v{i:03d}" for i in range(12)]
    bundle_dir = tmp_path / "models" / "lite"
    config = BundleConfig(name="lite", backbone=BACKBONE, input_size=SIZE, feature_dim=1280, fpv=6,
                          split_ids={"train": ids[:8], "val": ids[8:]}, face={"size": SIZE})
    save_config(bundle_dir, config)
    classifier, _ = build_classifier(BACKBONE, SIZE)
    save_weights_atomic(classifier, bundle_dir / "cnn.weights.h5", weights_tag("cnn", config))
    with Store.open(store_path, write=True) as store:
        export_features(store, bundle_dir)
    return Store.open(store_path, write=False), bundle_dir


def test_pseudo_fake_clips_are_the_features_of_the_blended_faces(face_bundle):
    store, bundle_dir = face_bundle
    bundle = load_bundle(bundle_dir)
    train = bundle.config.split_ids["train"]
    labels = {v: int(store.entry(v).label == "fake") for v in train}
    scorer = Scorer(bundle, lstm=False)
    clips = pseudo_fake_clips(store, scorer, train, labels, 0.99, seed=0)
    assert sorted(clips) == sorted(PREFIX + v for v in train if labels[v] == 0)
    vid = train[0]
    faces = store.read_faces(vid)
    real = store.read_features(vid, "lite").features
    assert clips[PREFIX + vid].shape == real.shape and not np.allclose(clips[PREFIX + vid], real)
    progress = CountingReporter()
    again = pseudo_fake_clips(store, scorer, train[::-1], labels, 0.99, seed=0, reporter=progress)
    assert all(np.array_equal(clips[k], again[k]) for k in clips)  # a resumed run makes the same clips
    assert progress.calls == [("start", len(clips)), *[("advance", 1)] * len(clips), ("finish", 0)]
    # what the LSTM reads is the CNN's features of the blended faces, through the one Scorer
    seed = int(np.random.default_rng(clip_seed(0, vid)).integers(2 ** 63))
    blended = blend_clip(faces.crops, faces.landmarks68, seed)
    np.testing.assert_allclose(clips[PREFIX + vid], scorer.frames(blended)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_train_lstm_with_pseudo_fake_clips_records_the_mix(face_bundle):
    store, bundle_dir = face_bundle
    options = LSTMTrainOptions(units=8, epochs=2, patience=2, batch_size=4, pseudo_fakes="sbi", pseudo_ratio=0.99)
    summary = train_lstm(store, bundle_dir, options)
    assert summary["pseudo_fake_clips"] == 4 and summary["train_videos"] == 8 and summary["val_videos"] == 4
    assert summary["train_mix"] == {"real": pytest.approx(4 / 12), "fake": pytest.approx(4 / 12),
                                    "pseudo_fake": pytest.approx(4 / 12)}
    training = load_bundle(bundle_dir).config.training
    assert training["lstm_options"]["pseudo_fakes"] == "sbi" and training["lstm_data"]["pseudo_fake_clips"] == 4
    assert summary["calibration"]["val_videos"] == 4  # calibrated on real clips and labelled fakes only


def test_pseudo_fake_clips_need_landmarks_and_good_options(tmp_path):
    store = Store.open(synthetic_store(tmp_path / "dfd.h5", **CLIPS, landmarks68=False), write=False)
    labels = {v: int(store.entry(v).label == "fake") for v in ("v000", "v001")}
    with pytest.raises(StoreError, match=r"no 68-point landmarks.*re-run `dfd crop --force`"):
        pseudo_fake_clips(store, None, ["v000", "v001"], labels, 0.99, seed=0)  # before any CNN work
    with pytest.raises(OptionsError, match="pseudo_ratio"):
        LSTMTrainOptions(pseudo_fakes="sbi", pseudo_ratio=1.0)
    with pytest.raises(OptionsError, match="pseudo_fakes"):
        LSTMTrainOptions(pseudo_fakes="blend")
    result = CliRunner().invoke(app, ["train-lstm", "--model", str(tmp_path / "nothing"), "--pseudo-ratio", "1.5",
                                      "--store", str(tmp_path / "dfd.h5")])
    assert result.exit_code == 2 and "pseudo_ratio" in result.output
