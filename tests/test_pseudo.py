"""Pseudo-fakes in CNN training (deepfake_cli.train.pseudo, FaceDataset, train_cnn --pseudo-fakes sbi)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deepfake_cli.nets.bundle import load_bundle
from deepfake_cli.train.cnn import CNNTrainOptions, train_cnn
from deepfake_cli.train.face_dataset import FaceDataset, index_faces
from deepfake_cli.train.pseudo import PseudoFakes, expected_class_weights, mix_shares
from deepfake_cli.train.sbi import mask_reach
from deepfake_cli.data.store import Store, StoreError
from tests.helpers import face_points, synthetic_store

SIZE = 32
CLIPS = {"n_videos": 12, "n_val": 4, "size": SIZE}  # 8 train and 4 val videos of 6 faces


def reach_region(points: np.ndarray, size: int) -> np.ndarray:
    hull = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.rint(points).astype(np.int32)), 1)
    r = int(np.ceil(mask_reach(points)))
    return cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0


def test_dataset_feeds_pseudo_fakes_that_differ_only_inside_the_mask(tmp_path):
    store = Store.open(synthetic_store(tmp_path / "dfd.h5", **CLIPS), write=False)
    vids = [f"v{i:03d}" for i in range(8)]
    labels = {v: i % 2 for i, v in enumerate(vids)}
    items = index_faces(store, vids)
    ds = FaceDataset(store, items, labels, batch_size=len(items), input_size=SIZE, augment=False, shuffle=True,
                     weights={0: 1.0, 1: 1.0}, pseudo=PseudoFakes(0.5))
    ds.set_epoch((0, 0, 0))
    x, y, _ = ds[0]
    region = reach_region(face_points(SIZE), SIZE)
    pseudo = 0
    for (vid, row), image, label in zip(ds.ordered_items(), x, y[:, 0]):
        original = store.read_faces(vid).crops[row].astype(np.float32)
        changed = np.any(image != original, axis=-1)
        if labels[vid] == 1 or label == 0:  # labelled fakes and the reals kept are fed unchanged
            assert not changed.any()
            continue
        pseudo += 1
        assert changed.any() and not changed[~region].any()  # a pseudo-fake differs only inside the mask
    mix = ds.epoch_mix()
    assert pseudo == round(mix["pseudo_fake"] * len(items)) and 0 < pseudo < 24
    assert mix["fake"] == 0.5 and mix["real"] + mix["pseudo_fake"] == 0.5
    ds.set_epoch((0, 0, 0))
    np.testing.assert_array_equal(ds[0][0], x)  # the same key replays the same pseudo-fakes
    ds.set_epoch((0, 0, 1))
    assert not np.array_equal(ds[0][1], y)  # another epoch draws others


def test_plain_runs_feed_the_stored_crops_and_report_the_mix(tmp_path):
    """With --pseudo-fakes none, batches are what they were before pseudo-fakes existed."""
    store = Store.open(synthetic_store(tmp_path / "dfd.h5", **CLIPS), write=False)
    items = index_faces(store, ["v000", "v001"])
    labels = {"v000": 0, "v001": 1}
    plain = FaceDataset(store, items, labels, batch_size=12, input_size=SIZE, augment=False)
    plain.set_epoch((0, 0, 0))
    x, y = plain[0]
    assert plain.epoch_mix() == {"real": 0.5, "fake": 0.5, "pseudo_fake": 0.0}
    np.testing.assert_array_equal(x, np.concatenate([store.read_faces(v).crops for v in labels]).astype(np.float32))


def test_expected_class_weights_and_shares():
    labels = np.array([0] * 20 + [1] * 80)
    w = expected_class_weights(labels, 0.5)  # 10 real, 90 fake expected
    assert w[0] * 10 == pytest.approx(50) and w[1] * 90 == pytest.approx(50)
    assert expected_class_weights(labels, 0.0) == pytest.approx({0: 2.5, 1: 0.625})
    assert mix_shares({"real": 1, "fake": 2, "pseudo_fake": 1}) == {"real": 0.25, "fake": 0.5, "pseudo_fake": 0.25}


def test_bad_pseudo_options_are_refused():
    with pytest.raises(ValueError, match="pseudo_fakes must be one of none, sbi"):
        CNNTrainOptions(pseudo_fakes="mixup")
    with pytest.raises(ValueError, match=r"pseudo_ratio must be in \[0, 1\)"):
        CNNTrainOptions(pseudo_fakes="sbi", pseudo_ratio=1.0)


def test_store_without_landmarks68_says_to_crop_again(tmp_path):
    store = Store.open(synthetic_store(tmp_path / "dfd.h5", **CLIPS, landmarks68=False), write=False)
    with pytest.raises(StoreError, match=r"no 68-point landmarks.*re-run `dfd crop --force`"):
        train_cnn(store, tmp_path / "models" / "m", CNNTrainOptions(backbone="efficientnet-lite0", input_size=SIZE,
                                                                    pseudo_fakes="sbi"))
    assert not (tmp_path / "models" / "m").exists()


@pytest.mark.slow
def test_train_cnn_with_sbi_pseudo_fakes_records_the_mix(tmp_path):
    store = Store.open(synthetic_store(tmp_path / "dfd.h5", **CLIPS), write=False)
    reports: list[dict] = []
    options = CNNTrainOptions(backbone="efficientnet-lite0", weights="imagenet", input_size=SIZE, epochs=2, rounds=1,
                              batch_size=8, learning_rate=1e-3, seed=0, pseudo_fakes="sbi", pseudo_ratio=0.5)
    summary = train_cnn(store, tmp_path / "models" / "sbi", options, on_epoch=reports.append)
    assert summary["epochs_run"] == 2 and len(reports) == 2
    for report in reports:  # 4 real and 4 fake training videos of 6 faces
        mix = report["train_mix"]
        assert mix["fake"] == 0.5 and mix["real"] + mix["pseudo_fake"] == pytest.approx(0.5)
        assert 0.1 < mix["pseudo_fake"] < 0.4
    training = load_bundle(tmp_path / "models" / "sbi").config.training
    assert training["pseudo_fakes"]["method"] == "sbi" and training["pseudo_fakes"]["ratio"] == 0.5
    assert training["cnn_options"]["pseudo_fakes"] == "sbi" and training["cnn_options"]["pseudo_ratio"] == 0.5
    assert training["class_weights"] == pytest.approx({"real": 48 / (2 * 12), "fake": 48 / (2 * 36)})
