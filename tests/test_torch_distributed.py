"""Training on several processes: train-cnn's PyTorch engine under torchrun (DDP over gloo on CPU).

Two processes train one epoch on a tiny synthetic store; the run must end with the weights of
both processes equal (train/torch_cnn.check_in_sync, which the second test shows catching
diverging weights), only rank 0 writing, and a bundle that loads and scores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import synthetic_store

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))


def cpu_env(**extra) -> dict:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1", **extra)
    env.pop("WORLD_SIZE", None)
    return env


@pytest.mark.slow
def test_two_processes_train_one_model_and_only_rank_0_writes(tmp_path):
    if not Path(TORCHRUN).is_file():
        pytest.skip("torchrun (from the torch package) is not installed")
    store = synthetic_store(tmp_path / "dfd.h5")
    models = tmp_path / "models"
    command = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "deepfake_cli", "train-cnn",
               "--model", "ddp", "--models-dir", str(models), "--store", str(store),
               "--engine", "torch", "--backbone", "efficientnet-lite0", "--weights", "imagenet", "--input-size", "32",
               "--epochs", "1", "--rounds", "1", "--batch-size", "4", "--lr", "1e-3", "--batchnorm", "train", "--quiet"]
    run = subprocess.run(command, capture_output=True, text=True, env=cpu_env(), timeout=600)
    errors = [line for line in run.stderr.splitlines() if "error" in line.lower() and "elastic" not in line]
    assert run.returncode == 0, "\n".join(errors[:20]) or run.stderr[-3000:]
    config = json.loads((models / "ddp" / "config.json").read_text())
    assert config["training"]["processes"] == 2
    state = json.loads((models / "ddp" / "checkpoints" / "cnn" / "state.json").read_text())
    assert state["done"] and state["options"]["engine"] == "torch" and len(state["history"]) == 1
    # 60 training faces in 15 batches of 4: each process trains 7 (the odd one out is left for the next epoch's order)
    assert state["train_images"] == 2 * 7 * 4
    from deepfake_cli.nets.bundle import load_bundle

    assert load_bundle(models / "ddp").build_feature_model().outputs[1].shape[-1] == 1


def diverge(rank: int, init: str, results) -> None:
    import torch
    import torch.distributed as dist

    from deepfake_cli.train import TrainingDataError
    from deepfake_cli.train.torch_cnn import Distributed, check_in_sync

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    with torch.no_grad():
        net.bias += rank  # rank 1's weights differ
    try:
        check_in_sync(net, Distributed(rank, 2))
        results.put((rank, "in sync"))
    except TrainingDataError as exc:
        results.put((rank, str(exc)))
    dist.destroy_process_group()


def test_diverging_processes_are_caught(tmp_path):
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    init = f"file://{tmp_path / 'rendezvous'}"
    workers = [context.Process(target=diverge, args=(rank, init, results)) for rank in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    got = dict(results.get() for _ in workers)
    assert set(got) == {0, 1}
    assert all("ended with different weights" in message for message in got.values()), got
