"""train-cnn's PyTorch engine (deepfake_cli.train.torch_cnn): the same recipe and bundle as the
Keras engine, trained by a plain PyTorch loop.

The synthetic store of tests/helpers: fakes carry a bright square that EfficientNet-Lite0
(ImageNet weights from a pip package, no network) learns in a few epochs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepfake_cli.data.store import Store
from deepfake_cli.errors import OptionsError
from deepfake_cli.nets.bundle import load_bundle
from deepfake_cli.scoring.metrics import safe_auc
from deepfake_cli.train.cnn import CNNTrainOptions, train_cnn
from tests.helpers import synthetic_faces, synthetic_store

SIZE = 32


def options(**kw) -> CNNTrainOptions:
    base = dict(backbone="efficientnet-lite0", weights="imagenet", input_size=SIZE, epochs=3, rounds=1,
                batch_size=8, learning_rate=1e-3, patience=3, seed=0, batchnorm="train", engine="torch")
    return CNNTrainOptions(**{**base, **kw})


@pytest.fixture(scope="module")
def torch_trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch")
    store = Store.open(synthetic_store(root / "dfd.h5"), write=False)
    reports: list[dict] = []
    summary = train_cnn(store, root / "tiny", options(), on_epoch=reports.append, command="dfd train-cnn")
    return root, summary, reports


def test_the_torch_engine_learns_and_writes_a_bundle_like_keras(torch_trained):
    root, summary, reports = torch_trained
    assert [(r["round"], r["epoch"]) for r in reports] == [(1, 1), (1, 2), (1, 3)]
    assert summary["best_val_auc"] > 0.9 and reports[-1]["loss"] < reports[0]["loss"]
    ckpt = root / "tiny" / "checkpoints" / "cnn"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["done"] and state["options"]["engine"] == "torch"
    assert [p.name for p in ckpt.iterdir()] == ["state.json"]
    # the bundle (Keras weights, rebuilt from its config like any other) tells the val fakes from the reals
    bundle = load_bundle(root / "tiny")
    store = Store.open(root / "dfd.h5", write=False)
    val = bundle.config.split_ids["val"]
    faces = np.concatenate([store.read_faces(v).crops for v in val]).astype(np.float32)
    labels = np.concatenate([[store.entry(v).label == "fake"] * len(store.read_faces(v).crops) for v in val])
    scores = np.asarray(bundle.build_feature_model().predict(faces, verbose=0)[1]).reshape(-1)
    assert safe_auc(labels.astype(float), scores) > 0.9


def test_the_port_into_the_keras_classifier_is_exact(tmp_path):
    """The Keras classifier the bundle saves gives the PyTorch network's P(fake): every weight and
    batch-norm statistic is carried over (perturbed here, so nothing passes by staying ImageNet's)."""
    import torch

    from deepfake_cli.nets.models import build_classifier
    from deepfake_cli.train.torch_cnn import build_net, publish, to_tensor

    torch.manual_seed(0)
    net = build_net("efficientnet-lite0", SIZE, "imagenet", 0.2).eval()
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.dtype.is_floating_point and "running_var" not in name:
                tensor.add_(0.02 * (tensor.abs().mean() + 0.01) * torch.randn_like(tensor))
    classifier, _ = build_classifier("efficientnet-lite0", SIZE)
    rng = np.random.default_rng(3)
    faces = np.concatenate([synthetic_faces(rng, fake, 2, SIZE) for fake in (False, True)]).astype(np.float32)
    publish(net, classifier, 0, tmp_path / "cnn.weights.h5", {})
    assert (tmp_path / "cnn.weights.h5").is_file()
    keras_p = np.asarray(classifier.predict(faces, verbose=0)).reshape(-1)
    with torch.inference_mode():
        torch_p = torch.sigmoid(net(to_tensor(faces, "cpu"))).reshape(-1).numpy()
    np.testing.assert_allclose(keras_p, torch_p, atol=1e-5)
    assert np.ptp(keras_p) > 1e-4


def test_the_torch_engine_refuses_what_it_cannot_train_before_writing_anything(tmp_path):
    with pytest.raises(OptionsError, match="EfficientNet-Lite"):
        CNNTrainOptions(engine="torch", backbone="efficientnet-b0")
    with pytest.raises(OptionsError, match="--weights imagenet or none"):
        CNNTrainOptions(engine="torch", backbone="efficientnet-lite0", weights=str(tmp_path / "keras.weights.h5"))
    with pytest.raises(OptionsError, match="engine"):
        CNNTrainOptions(engine="jax")
    with pytest.raises(OptionsError, match="--freeze-blocks needs --engine torch"):
        CNNTrainOptions(engine="keras", freeze_blocks=3)
    for weights, blocks in (("none", 3), ("imagenet", -1), ("imagenet", 16)):  # Lite0 has 16 blocks
        with pytest.raises(OptionsError, match="--freeze-blocks"):
            options(weights=weights, freeze_blocks=blocks)
    from typer.testing import CliRunner

    from deepfake_cli.cli.app import app

    store = synthetic_store(tmp_path / "dfd.h5")
    run = CliRunner().invoke(app, ["train-cnn", "--engine", "torch", "--backbone", "efficientnet-b0",
                                   "--store", str(store), "--models-dir", str(tmp_path / "models"), "--model", "m"])
    assert run.exit_code == 2 and "EfficientNet-Lite" in run.output
    assert not (tmp_path / "models" / "m").exists()


def test_frozen_blocks_keep_their_imagenet_weights_and_statistics_while_the_rest_learns():
    """--freeze-blocks 3: after training steps the stem and blocks 0-2 (weights and batch-norm
    statistics) are ImageNet's, bit for bit; block 3 on and the head have moved."""
    import torch

    from deepfake_cli.train.torch_cnn import build_net, new_optimizer, set_trainable, to_tensor

    torch.manual_seed(0)
    net = build_net("efficientnet-lite0", SIZE, "imagenet", 0.2)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    set_trainable(net, True, False, freeze_blocks=3)
    optimizer = new_optimizer(net, 1e-2)
    rng = np.random.default_rng(0)
    faces = np.concatenate([synthetic_faces(rng, fake, 4, SIZE) for fake in (False, True)]).astype(np.float32)
    labels = torch.tensor([[0.0]] * 4 + [[1.0]] * 4)
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.binary_cross_entropy_with_logits(net(to_tensor(faces, "cpu")), labels).backward()
        optimizer.step()
    end = net.state_dict()
    frozen = [k for k in end if k.startswith(("_conv_stem", "_bn0", "_blocks.0.", "_blocks.1.", "_blocks.2."))]
    assert frozen and all(torch.equal(start[k], end[k]) for k in frozen)
    moved = [k for k in end if k.startswith(("_blocks.3.", "_fc")) and end[k].dtype.is_floating_point]
    assert moved and all(not torch.equal(start[k], end[k]) for k in moved if "num_batches" not in k)


class Killed(Exception):
    pass


def test_a_killed_run_resumes_to_the_same_model(tmp_path):
    """Stopped after its first epoch (as a kill would: the checkpoint of that epoch written) and
    resumed, a run ends with the weights and history of the same run left alone."""
    from deepfake_cli.nets.models import build_classifier

    store = Store.open(synthetic_store(tmp_path / "dfd.h5", n_videos=8, n_val=4, frames=4), write=False)
    run = options(epochs=2, rounds=2, patience=5, batch_size=4)
    whole = train_cnn(store, tmp_path / "whole", run)

    def stop_after_first(report):
        raise Killed

    with pytest.raises(Killed):
        train_cnn(store, tmp_path / "resumed", run, on_epoch=stop_after_first)
    resumed = train_cnn(store, tmp_path / "resumed", run, resume=True)
    assert resumed["resumed_from_epoch"] == 1
    keys = ("round", "epoch", "loss", "val_auc", "val_loss")
    assert [[r[k] for k in keys] for r in resumed["history"]] == [[r[k] for k in keys] for r in whole["history"]]
    weights = []
    for name in ("whole", "resumed"):
        classifier, _ = build_classifier("efficientnet-lite0", SIZE)
        classifier.load_weights(tmp_path / name / "cnn.weights.h5")
        weights.append(classifier.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
