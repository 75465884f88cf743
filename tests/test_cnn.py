"""Training the frame classifier (deepfake_cli.train.cnn) and face augmentation (deepfake_cli.train.augment).

The synthetic store: 16 videos of 6 tiny faces each; fakes carry a bright square in the
middle of the face, which EfficientNet-Lite0 (ImageNet weights, shipped in a pip package, so
no network) learns within a few epochs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from deepfake_cli.train.augment import augment_face, jpeg_recompress
from deepfake_cli.faces.face_crops import resize_face as resize_crop
from deepfake_cli.nets.bundle import load_bundle
from deepfake_cli.train.cnn import CNNTrainOptions, cnn_phases, train_cnn
from deepfake_cli.train.face_dataset import FaceDataset, index_faces, windowed_order
from deepfake_cli.data.store import Store
from tests.helpers import synthetic_faces, synthetic_store

BACKBONE = "efficientnet-lite0"
SIZE = 32


# ---------------------------------------------------------------------- augmentation
def test_augment_is_deterministic_and_keeps_shape():
    crop = synthetic_faces(np.random.default_rng(0), True, 1, 48)[0]
    a = augment_face(crop, np.random.default_rng(7))
    b = augment_face(crop, np.random.default_rng(7))
    assert a.shape == crop.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(augment_face(crop, np.random.default_rng(s)), a) for s in range(8, 12))


def test_jpeg_and_resize():
    crop = synthetic_faces(np.random.default_rng(1), False, 1, 48)[0]
    low = jpeg_recompress(crop, 30)
    assert low.shape == crop.shape and not np.array_equal(low, crop)
    assert resize_crop(crop, 32).shape == (32, 32, 3)
    assert resize_crop(crop, 64).shape == (64, 64, 3)
    assert resize_crop(crop, 48) is crop


# ---------------------------------------------------------------------- data
def test_dataset_streams_batches_with_class_weights(tmp_path):
    store = Store.open(synthetic_store(tmp_path / "dfd.h5", n_videos=6, n_val=0, frames=4), write=False)
    items = index_faces(store, ["v000", "v001", "v002"], limit=3)
    assert items == [(v, r) for v in ("v000", "v001", "v002") for r in (0, 2, 3)]
    labels = {"v000": 0, "v001": 1, "v002": 0}
    ds = FaceDataset(store, items, labels, batch_size=4, input_size=40, augment=True, shuffle=True,
                     weights={0: 0.75, 1: 1.5}, cache_videos=2)
    ds.set_epoch((0, 0, 0))
    x, y, w = ds[0]
    assert x.shape == (4, 40, 40, 3) and x.dtype == np.float32 and y.shape == (4, 1)
    np.testing.assert_array_equal(w, np.where(y[:, 0] == 1, 1.5, 0.75))
    assert len(ds) == 3 and sum(len(ds[i][0]) for i in range(len(ds))) == 9
    assert len(ds._cache) <= 2
    ds.set_epoch((0, 0, 0))
    np.testing.assert_array_equal(ds[0][0], x)


def test_windowed_order_is_a_permutation():
    items = [(f"v{v}", r) for v in range(10) for r in range(5)]
    order = windowed_order(items, np.random.default_rng(0), window=3)
    assert sorted(order) == sorted(items) and order != items
    first_window = {v for v, _ in order[:15]}
    assert len(first_window) == 3


def test_phases():
    phases = cnn_phases(CNNTrainOptions(epochs=5, warmup_epochs=2, rounds=3, learning_rate=1e-3))
    assert [(p.name, p.round, p.epochs, p.frozen, p.start_from_best) for p in phases] == [
        ("warmup", 1, 2, True, False), ("round1", 1, 3, False, False),
        ("round2", 2, 5, False, True), ("round3", 3, 5, False, True)]
    assert phases[2].learning_rate == pytest.approx(1e-4) and phases[3].learning_rate == pytest.approx(1e-5)


# ---------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cnn")
    store = Store.open(synthetic_store(root / "dfd.h5"), write=False)
    reports: list[dict] = []
    options = CNNTrainOptions(backbone=BACKBONE, weights="imagenet", input_size=SIZE, epochs=3, rounds=2,
                              batch_size=8, learning_rate=1e-3, patience=3, seed=0)
    summary = train_cnn(store, root / "models" / "tiny", options, on_epoch=reports.append, command="dfd train-cnn")
    return root / "models" / "tiny", summary, reports


@pytest.mark.slow
def test_train_cnn_writes_a_bundle(trained):
    bundle_dir, summary, reports = trained
    assert (bundle_dir / "config.json").is_file() and (bundle_dir / "cnn.weights.h5").is_file()
    bundle = load_bundle(bundle_dir)
    config = bundle.config
    assert config.backbone == BACKBONE and config.input_size == SIZE and config.feature_dim == 1280
    assert config.fpv == 6 and config.face["size"] == SIZE and config.weights_origin == "imagenet"
    assert set(config.split_ids["val"]) == {f"v{i:03d}" for i in range(10, 16)}
    assert config.training["train"] == {"videos": 10, "real": 5, "fake": 5, "faces": 60}
    assert config.metrics["cnn"]["val_auc"] == summary["best_val_auc"]
    assert config.commands[-1]["command"] == "dfd train-cnn"
    assert summary["train_videos"] == 10 and summary["val_faces"] == 36
    # throughput: the median of the epochs' rates, each the train faces over at most the epoch's time
    history = summary["history"]
    rates = [r["images_per_second"] for r in history]
    assert summary["images_per_second"] == pytest.approx(float(np.median(rates)))
    assert config.training["images_per_second"] == summary["images_per_second"]
    for record in history:
        assert record["images_per_second"] >= summary["train_faces"] / record["seconds"]  # train time <= epoch time
    overall = summary["images_per_second_overall"]
    assert summary["train_faces"] * len(history) / overall <= sum(r["seconds"] for r in history)
    model = bundle.build_feature_model()  # image -> [features, P(fake)]
    assert model.outputs[1].shape[-1] == 1


@pytest.mark.slow
def test_train_cnn_runs_both_rounds_and_learns(trained):
    _, summary, reports = trained
    assert [(r["round"], r["epoch"], r["phase"]) for r in reports] == [
        (1, 1, "round1"), (1, 2, "round1"), (1, 3, "round1"), (2, 1, "round2"), (2, 2, "round2"), (2, 3, "round2")]
    assert set(reports[0]) >= {"round", "epoch", "loss", "val_auc", "val_loss", "best_val_auc", "seconds"}
    assert summary["rounds"] == 2 and summary["epochs_run"] == 6
    assert summary["best_val_auc"] == max(r["val_auc"] for r in reports)
    assert summary["best_val_auc"] > 0.9 and summary["best_val_video_auc"] > 0.9
    assert reports[-1]["val_loss"] < 0.5  # batch-norm statistics stay pretrained: train/val agree


@pytest.mark.slow
def test_finished_run_keeps_only_its_history(trained):
    bundle_dir, summary, _ = trained
    ckpt = bundle_dir / "checkpoints" / "cnn"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["done"] and len(state["history"]) == 6 and state["best"]["val_auc"] == summary["best_val_auc"]
    assert [p.name for p in ckpt.iterdir()] == ["state.json"]
    assert not [p for p in bundle_dir.rglob("*tmp*")]


@pytest.mark.slow
def test_resume_of_a_finished_run_trains_nothing(trained, tmp_path):
    bundle_dir, summary, _ = trained
    store = Store.open(Path(load_bundle(bundle_dir).config.training["store"]), write=False)
    reports: list[dict] = []
    again = train_cnn(store, bundle_dir, CNNTrainOptions(backbone=BACKBONE, input_size=SIZE),
                      resume=True, on_epoch=reports.append)
    assert reports == [] and again["epochs_run"] == 6 and again["best_val_auc"] == summary["best_val_auc"]


RUN_SCRIPT = textwrap.dedent("""
    import json, sys
    from deepfake_cli.train.cnn import CNNTrainOptions, train_cnn
    from deepfake_cli.data.store import Store

    store = Store.open(sys.argv[1], write=False)
    options = CNNTrainOptions(backbone="efficientnet-lite0", input_size=32, epochs=4, rounds=1, batch_size=16,
                              learning_rate=1e-3, patience=10, warmup_epochs=1)
    def report(info):
        print("EPOCH " + json.dumps(info), flush=True)
    summary = train_cnn(store, sys.argv[2], options, resume=sys.argv[3] == "resume", on_epoch=report)
    print("TENSORFLOW_IMPORTED", "tensorflow" in sys.modules, flush=True)
    print("SUMMARY " + json.dumps({k: v for k, v in summary.items() if k != "history"}), flush=True)
""")


def run_env() -> dict:
    """Torch backend, one thread per op (fast and steady on small shared CPUs)."""
    return {**os.environ, "KERAS_BACKEND": "torch", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "3"}


def epochs_reported(output: str) -> list[dict]:
    return [json.loads(line[6:]) for line in output.splitlines() if line.startswith("EPOCH ")]


def wait_for_checkpoint(process: subprocess.Popen, state_file: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if state_file.is_file() and json.loads(state_file.read_text())["history"]:
            return
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint appeared (exit code {process.poll()})")


@pytest.mark.slow
def test_sigkill_then_resume_under_torch_backend(tmp_path):
    """Kill a torch-backend run after its first checkpoint; --resume continues from there."""
    store = synthetic_store(tmp_path / "dfd.h5", n_videos=8, n_val=4, frames=4)
    bundle_dir = tmp_path / "models" / "killed"
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT)
    state_file = bundle_dir / "checkpoints" / "cnn" / "state.json"
    first = subprocess.Popen([sys.executable, str(script), str(store), str(bundle_dir), "fresh"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=run_env())
    try:
        wait_for_checkpoint(first, state_file)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    done_before = json.loads(state_file.read_text())["history"]
    assert 1 <= len(done_before) < 4

    second = subprocess.run([sys.executable, str(script), str(store), str(bundle_dir), "resume"],
                            capture_output=True, text=True, env=run_env(), timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    reported = epochs_reported(second.stdout)
    assert [r["epoch"] for r in reported] == list(range(len(done_before) + 1, 5))
    assert all(r["phase"] == "round1" for r in reported)  # the warm-up epoch was done before the kill
    summary = json.loads(second.stdout.split("SUMMARY ", 1)[1])
    assert summary["epochs_run"] == 4 and summary["resumed_from_epoch"] == len(done_before)
    history = json.loads(state_file.read_text())["history"]
    assert [h["loss"] for h in history[:len(done_before)]] == [h["loss"] for h in done_before]
    assert load_bundle(bundle_dir).config.keras_backend == "torch"
    assert "TENSORFLOW_IMPORTED False" in second.stdout  # the torch code path never needs TensorFlow


def test_bad_settings_are_refused_before_anything_is_read():
    with pytest.raises(ValueError, match="batchnorm must be auto, train or frozen"):
        CNNTrainOptions(batchnorm="bogus")
    with pytest.raises(ValueError, match="mixed_precision must be auto, on or off"):
        CNNTrainOptions(mixed_precision="maybe")


@pytest.mark.slow
def test_a_fresh_run_that_fails_early_leaves_the_bundle_as_it_was(trained, tmp_path):
    """Only a run that got its data and its model deletes the earlier run's checkpoints and LSTM."""
    import shutil

    from deepfake_cli.nets.backbones import WeightsError

    bundle_dir, _, _ = trained
    copy = shutil.copytree(bundle_dir, tmp_path / "bundle")
    (copy / "lstm.weights.h5").write_bytes(b"an earlier LSTM")
    (copy / "checkpoints" / "lstm").mkdir(parents=True)
    before = sorted(str(p.relative_to(copy)) for p in copy.rglob("*"))
    store = Store.open(Path(load_bundle(bundle_dir).config.training["store"]), write=False)
    with pytest.raises(WeightsError):
        train_cnn(store, copy, CNNTrainOptions(backbone=BACKBONE, input_size=SIZE,
                                               weights=str(tmp_path / "missing.weights.h5")))
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*")) == before
    assert (copy / "lstm.weights.h5").read_bytes() == b"an earlier LSTM"


def test_cell_weights_balance_every_dataset_and_label():
    from deepfake_cli.train.loop import cell_weights

    # FF++ 1 real : 3 fake, DFDC 1 : 1 and twice as big: each of the four cells must weigh a quarter
    cells = [("ffpp", 0)] * 10 + [("ffpp", 1)] * 30 + [("dfdc", 0)] * 40 + [("dfdc", 1)] * 40
    weights = cell_weights(cells)
    totals = {cell: weights[cell] * cells.count(cell) for cell in weights}
    assert set(totals) == {("ffpp", 0), ("ffpp", 1), ("dfdc", 0), ("dfdc", 1)}
    assert all(total == pytest.approx(len(cells) / 4) for total in totals.values())
    assert weights[("ffpp", 0)] == pytest.approx(3 * weights[("ffpp", 1)])


def test_balance_option_is_checked():
    with pytest.raises(ValueError, match="balance"):
        CNNTrainOptions(balance="videos")


def test_batchnorm_trains_with_a_fast_momentum_or_stays_frozen():
    import keras

    from deepfake_cli.nets.models import FINE_TUNE_BN_MOMENTUM, build_classifier, iter_layers, set_backbone_trainable

    classifier, _ = build_classifier("efficientnet-lite0", 32)
    norms = [layer for layer in iter_layers(classifier) if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and {n.momentum for n in norms} == {0.99}  # the checkpoints' own (TensorFlow's)
    set_backbone_trainable(classifier, True, freeze_batchnorm=False)
    assert all(n.trainable for n in norms) and {n.momentum for n in norms} == {FINE_TUNE_BN_MOMENTUM}
    set_backbone_trainable(classifier, True, freeze_batchnorm=True)
    assert not any(n.trainable for n in norms)  # frozen: inference mode, the momentum is never used


@pytest.mark.slow
def test_validation_scores_faces_as_the_bundle_serves_them(tmp_path):
    """With --test-time-flip, train-cnn picks its best epoch on the scores predict gives: the
    mean over each face and its mirror image (scoring.frame_outputs)."""
    from deepfake_cli.train.validation import face_scores
    from deepfake_cli.nets.models import build_classifier
    from deepfake_cli.scoring.scorer import frame_outputs

    store = Store.open(synthetic_store(tmp_path / "dfd.h5", n_videos=2, n_val=0, frames=4), write=False)
    items = index_faces(store, ["v000", "v001"])
    ds = FaceDataset(store, items, {"v000": 0, "v001": 1}, batch_size=3, input_size=SIZE)
    classifier, feature_model = build_classifier(BACKBONE, SIZE)
    crops = np.stack([store.read_faces(v).crops[r] for v, r in items])
    for flip in (False, True):
        served = frame_outputs(feature_model, crops, SIZE, flip=flip)[1]
        np.testing.assert_allclose(face_scores(classifier, ds, flip=flip), served, atol=1e-5)
    assert not np.allclose(face_scores(classifier, ds), face_scores(classifier, ds, flip=True), atol=1e-5)


def test_training_batches_are_a_plain_shuffle_when_every_video_fits_in_the_cache():
    """Batch-norm in training mode learns on each batch's statistics: batches drawn from a
    handful of videos (the windowed order) hardly trained (models/default/README.md), so a
    training set that fits in memory is shuffled as a whole."""
    from deepfake_cli.train.face_dataset import shuffled_order

    items = [(f"v{v}", r) for v in range(40) for r in range(8)]
    rng = np.random.default_rng(0)
    plain = shuffled_order(items, rng, cached_videos=40)
    assert sorted(plain) == sorted(items)
    first_batch_videos = {vid for vid, _ in plain[:32]}
    assert len(first_batch_videos) > 20  # 32 draws over 40 videos, not a window of a few
    windowed = shuffled_order(items, np.random.default_rng(0), cached_videos=8)
    assert sorted(windowed) == sorted(items)
    assert len({vid for vid, _ in windowed[:32]}) <= 4  # memory-bounded: a window of 4 videos at a time


def test_balanced_sampling_draws_each_kind_alike_and_weighs_nothing(tmp_path):
    """--sampling balanced: 1 real video against 3 fake ones still gives batches half real, and
    the loss is not weighted (the balance is in the draw)."""
    store = Store.open(synthetic_store(tmp_path / "dfd.h5", n_videos=6, n_val=0, frames=4), write=False)
    videos = ["v000", "v001", "v002", "v003"]
    items = index_faces(store, videos)
    labels = {"v000": 0, "v001": 1, "v002": 1, "v003": 1}
    per_face = np.array([3.0 if labels[v] == 0 else 1.0 for v, _ in items])
    ds = FaceDataset(store, items, labels, batch_size=len(items), input_size=32, shuffle=True,
                     draw=per_face / per_face.sum())
    shares = []
    for epoch in range(30):
        ds.set_epoch((epoch,))
        batch = ds[0]
        assert len(batch) == 2  # (x, y): no sample weights
        shares.append(float(np.mean(batch[1])))
    assert 0.4 < np.mean(shares) < 0.6  # a plain shuffle would give 0.75 fake
    ds.set_epoch((3,))
    again = ds.ordered_items()
    ds.set_epoch((3,))
    assert ds.ordered_items() == again  # the draw is seeded by the epoch key
    with pytest.raises(Exception, match="sampling"):
        CNNTrainOptions(sampling="oversample")


def test_shift_augment_shrinks_and_adds_noise_only_when_asked():
    from deepfake_cli.train.augment import add_noise, rescale

    crop = synthetic_faces(np.random.default_rng(2), True, 1, 64)[0]
    small = rescale(crop, 0.4)
    assert small.shape == crop.shape and np.abs(small.astype(int) - crop).mean() > 0.5
    noisy = add_noise(crop, 6.0, np.random.default_rng(0))
    assert noisy.shape == crop.shape and 2 < np.abs(noisy.astype(int) - crop).mean() < 8
    # without shift, the same generator state gives the old augmentation, bit for bit
    plain = augment_face(crop, np.random.default_rng(5))
    np.testing.assert_array_equal(plain, augment_face(crop, np.random.default_rng(5), shift=False))
    assert any(not np.array_equal(augment_face(crop, np.random.default_rng(s), shift=True),
                                  augment_face(crop, np.random.default_rng(s))) for s in range(5, 9))
