"""Feature export and the bidirectional LSTM (deepfake_cli.train.temporal)."""

from __future__ import annotations

import numpy as np
import pytest

from deepfake_cli.nets.bundle import BundleConfig, load_bundle, save_config, save_weights_atomic, weights_tag
from deepfake_cli.nets.models import build_classifier, pad_sequence
from deepfake_cli.scoring.scorer import Scorer
from deepfake_cli.data.store import Faces, Features, Frames, Store, VideoEntry
from deepfake_cli.train.calibrate import calibrate_bundle
from deepfake_cli.train.temporal import LSTMTrainOptions, export_features, train_lstm

BACKBONE = "efficientnet-lite0"
SIZE = 32


def add_video(store: Store, vid: str, label: str = "real", split: str = "train", status: str = "ok") -> None:
    entry = VideoEntry(video_id=vid, path=f"{vid}.mp4", label=label, split=split, status=status, fpv=12,
                       group=vid)
    frames = None if status != "ok" else Frames(np.arange(2, dtype=np.int64), np.zeros((2, 2, 2, 3), np.uint8))
    store.write_frames(entry, frames)


def add_faces(store: Store, vid: str, frame_indices: list[int], size: int = SIZE) -> None:
    n = len(frame_indices)
    crops = np.random.default_rng(len(vid) + n).integers(0, 255, (n, size, size, 3)).astype(np.uint8)
    store.write_faces(vid, Faces(crops=crops, frame_indices=np.array(frame_indices, np.int64),
                                 boxes=np.zeros((n, 4)), landmarks=np.zeros((n, 5, 2)), scores=np.ones(n),
                                 track_ids=np.zeros(n), missing_frames=np.zeros(0), settings={"size": size}))


def base_config(name: str, feature_dim: int, fpv: int, split_ids: dict | None = None) -> BundleConfig:
    return BundleConfig(name=name, backbone=BACKBONE, input_size=SIZE, feature_dim=feature_dim, fpv=fpv,
                        split_ids=split_ids or {}, face={"size": SIZE})


# ---------------------------------------------------------------------- export
@pytest.mark.slow
def test_export_features(tmp_path, cnn_bundle):
    bundle_dir, classifier = cnn_bundle
    store = Store.open(tmp_path / "dfd.h5", write=True)
    for vid, indices in (("a", [0, 3, 6]), ("b", [9, 1, 5, 2]), ("c", [4])):
        add_video(store, vid)
        add_faces(store, vid, indices)
    add_video(store, "empty")
    add_faces(store, "empty", [])
    add_video(store, "noface")
    add_video(store, "broken", status="failed")
    seen: list[str] = []

    summary = export_features(store, bundle_dir, batch_size=2, on_video=seen.append)
    assert summary["model"] == "lite"
    assert (summary["exported"], summary["no_faces"], summary["missing_faces"], summary["failed"]) == (3, 1, 1, 1)
    assert sorted(seen) == ["a", "b", "c", "empty"]

    feats = store.read_features("b", "lite")
    assert feats.features.shape == (4, 1280) and feats.features.dtype == np.float32
    np.testing.assert_array_equal(feats.frame_indices, [1, 2, 5, 9])
    faces = store.read_faces("b")
    order = np.argsort(faces.frame_indices)
    expected = np.asarray(classifier.predict_on_batch(faces.crops[order].astype(np.float32))).reshape(-1)
    np.testing.assert_allclose(feats.scores, expected, atol=1e-5)
    assert feats.settings["backbone"] == BACKBONE

    again = export_features(store, bundle_dir)
    assert again["exported"] == 0 and again["skipped"] == 3
    forced = export_features(store, bundle_dir, force=True, model_name="other")
    assert forced["exported"] == 3 and store.has("a", "features.other")

    retrained, _ = build_classifier(BACKBONE, SIZE)
    save_weights_atomic(retrained, bundle_dir / "cnn.weights.h5", weights_tag("cnn", load_bundle(bundle_dir).config))
    stale = export_features(store, bundle_dir)
    assert stale["stale"] == 3 and stale["exported"] == 3 and stale["skipped"] == 0

    config = load_bundle(bundle_dir).config
    config.test_time_flip = True  # the same weights, scored with mirror averaging: other features
    save_config(bundle_dir, config)
    flipped = export_features(store, bundle_dir)
    assert flipped["stale"] == 3 and flipped["exported"] == 3
    assert store.read_features("b", "lite").settings["test_time_flip"] is True
    assert export_features(store, bundle_dir)["skipped"] == 3
    store.close()


# ---------------------------------------------------------------------- LSTM
def test_pad_sequence():
    x = np.arange(12, dtype=np.float32).reshape(6, 2) + 1
    padded = pad_sequence(x[:2], 4)
    np.testing.assert_array_equal(padded, [[1, 2], [3, 4], [0, 0], [0, 0]])
    np.testing.assert_array_equal(pad_sequence(x, 3), x[:3])


def smooth_or_flickering(rng: np.random.Generator, fake: bool, n: int, dim: int) -> np.ndarray:
    """Both N(0, 1) per frame; reals drift slowly (AR(1), rho 0.95), fakes jump every frame."""
    rho = 0.0 if fake else 0.95
    x = np.empty((n, dim), np.float32)
    x[0] = rng.normal(size=dim)
    for t in range(1, n):
        x[t] = rho * x[t - 1] + np.sqrt(1 - rho ** 2) * rng.normal(size=dim)
    return x


@pytest.fixture(scope="module")
def sequence_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("lstm")
    rng = np.random.default_rng(0)
    dim, seq_len = 16, 12
    splits: dict[str, list[str]] = {"train": [], "val": []}
    with Store.open(root / "dfd.h5", write=True) as store:
        for i in range(240):
            vid, label = f"s{i:03d}", ("fake" if i % 2 else "real")
            split = "val" if i >= 160 else "train"
            splits[split].append(vid)
            add_video(store, vid, label, split)
            n = int(rng.integers(8, 16))
            store.write_features(vid, "seq", Features(np.arange(n), smooth_or_flickering(rng, label == "fake", n, dim),
                                                      np.full(n, 0.5, np.float32)))
    save_config(root / "seq", base_config("seq", dim, seq_len, splits))
    store = Store.open(root / "dfd.h5", write=False)
    reports: list[dict] = []
    options = LSTMTrainOptions(units=16, dropout=0.1, epochs=8, patience=4, batch_size=16, learning_rate=3e-3)
    summary = train_lstm(store, root / "seq", options, on_epoch=reports.append, command="dfd train-lstm")
    return root, store, summary, reports


@pytest.mark.slow
def test_train_lstm_learns_temporal_flicker(sequence_bundle):
    root, _, summary, reports = sequence_bundle
    assert summary["best_val_auc"] > 0.8
    assert summary["train_videos"] == 160 and summary["val_videos"] == 80 and summary["seq_len"] == 12
    assert [r["epoch"] for r in reports] == list(range(1, len(reports) + 1))
    assert set(reports[0]) >= {"epoch", "loss", "val_auc", "best_val_auc"}
    bundle = load_bundle(root / "seq")
    assert bundle.has_lstm and bundle.config.lstm["units"] == 16 and bundle.config.lstm["trained"]
    assert bundle.config.metrics["lstm"]["val_auc"] == summary["best_val_auc"]
    assert bundle.config.commands[-1]["command"] == "dfd train-lstm"


def test_lstm_score_ranks_val_videos(sequence_bundle):
    root, store, _, _ = sequence_bundle
    scorer = Scorer(load_bundle(root / "seq"), cnn=False)
    val = scorer.config.split_ids["val"]
    scores = [scorer.lstm_score(store.read_features(v, "seq").features) for v in val]
    labels = [store.entry(v).label == "fake" for v in val]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert np.mean([s for s, f in zip(scores, labels) if f]) > np.mean([s for s, f in zip(scores, labels) if not f])
    long = np.concatenate([store.read_features(val[0], "seq").features] * 3)
    assert scorer.lstm_score(long) == pytest.approx(scorer.lstm_score(long[:12]), abs=1e-6)


def test_train_lstm_resume_of_finished_run_is_a_no_op(sequence_bundle):
    root, store, summary, _ = sequence_bundle
    reports: list[dict] = []
    again = train_lstm(store, root / "seq", LSTMTrainOptions(), resume=True, on_epoch=reports.append)
    assert reports == [] and again["epochs_run"] == summary["epochs_run"]
    assert again["best_val_auc"] == summary["best_val_auc"] and load_bundle(root / "seq").has_lstm


def test_lstm_sampling_comes_from_the_store_it_learns_from(tmp_path):
    """A CNN trained on uniformly spread faces, its LSTM on consecutive frames: serve consecutive."""
    from deepfake_cli.train.temporal import SequenceDataError, sequence_sampling

    store = Store.open(tmp_path / "dfd.h5", write=True)
    for vid, fpv, sampling, count in (("a", 25, "consecutive", 300), ("b", 25, "consecutive", 400),
                                      ("c", 40, "uniform", 500), ("img", 25, "consecutive", 1)):
        entry = VideoEntry(video_id=vid, path=f"{vid}.mp4", label="real", split="train", fpv=fpv,
                           sampling=sampling, frame_count=count, group=vid)
        store.write_frames(entry, Frames(np.arange(2, dtype=np.int64), np.zeros((2, 2, 2, 3), np.uint8)))
        add_faces(store, vid, [0, 1])
    assert sequence_sampling(store, ["a", "b", "c", "img"], {"size": SIZE}) == (25, "consecutive")
    assert sequence_sampling(store, ["c", "img"], {"size": SIZE}) == (40, "uniform")
    assert sequence_sampling(store, ["img"], {"size": SIZE}) is None  # single images say nothing
    with pytest.raises(SequenceDataError, match=r"a\.mp4.*size=64"):
        sequence_sampling(store, ["a"], {"size": 64})
    with pytest.raises(SequenceDataError, match=r"detector=dlib"):  # serving would detect and align otherwise
        sequence_sampling(store, ["a"], {"size": SIZE, "detector": "dlib"})


def test_train_lstm_calibrates_the_bundle(sequence_bundle):
    root, store, summary, _ = sequence_bundle
    config = load_bundle(root / "seq").config
    fitted = summary["calibration"]
    assert fitted["temperature"] == config.temperature and fitted["threshold"] == config.threshold
    assert fitted["val_videos"] == summary["val_videos"] == 80
    assert set(config.thresholds_at_fpr) == {"0.001", "0.01", "0.05", "0.1"}
    assert config.metrics["val_video_calibrated"]["threshold"] == config.threshold
    assert calibrate_bundle(store, root / "seq") == fitted  # what a separate calibration would fit
    lo, hi = config.uncertain  # the band around the threshold, fitted on the same val videos
    assert 0 <= lo <= config.threshold <= hi <= 1 and fitted["uncertain"] == [lo, hi]


def test_dfd_calibrate_refits_what_train_lstm_fitted(sequence_bundle, tmp_path):
    import json

    from typer.testing import CliRunner

    from deepfake_cli.cli.app import app

    root, _, summary, _ = sequence_bundle
    result = CliRunner().invoke(app, ["calibrate", "--model", str(root / "seq"), "--store", str(root / "dfd.h5"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(json.dumps(summary["calibration"]))
    config = load_bundle(root / "seq").config
    assert config.threshold == summary["calibration"]["threshold"] and config.uncertain == summary["calibration"]["uncertain"]
    missing = CliRunner().invoke(app, ["calibrate", "--model", str(root / "nothing"), "--store", str(root / "dfd.h5")])
    assert missing.exit_code != 0 and "nothing" in missing.output
    Store.open(tmp_path / "other.h5", write=True).close()  # a store without the model's validation videos
    before = (root / "seq" / "config.json").read_bytes()
    other = CliRunner().invoke(app, ["calibrate", "--model", str(root / "seq"), "--store", str(tmp_path / "other.h5")])
    assert other.exit_code != 0 and "other.h5" in other.output and "validation" in other.output, other.output
    assert (root / "seq" / "config.json").read_bytes() == before  # nothing written
