"""Training on several devices of one machine (deepfake_cli.train.runtime), tested on CPU only.

* one process whose CPU is split into two logical devices trains with train-cnn's loop
  (loop.run_phases: Keras fit on a PyDataset) under MirroredStrategy;
* a TF_CONFIG cluster of several machines is refused (dfd trains on one machine).

The child is tests/distribute_worker.py, in a fresh process (TensorFlow's devices are
configured before it initialises), with a deadline: a hang fails the test. Real GPUs are not
tested here (docs/distributed.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from deepfake_cli.train import runtime
from deepfake_cli.errors import OptionsError
from tests import distribute_worker as worker

REPO = Path(__file__).resolve().parents[1]
MIRRORED_TIMEOUT_S = 150


def child_env() -> dict:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": "-1"}  # CPU only, even on a machine with GPUs
    env.pop("TF_CONFIG", None)
    return env


def run_children(jobs: list[tuple[str, Path, dict]], timeout: float) -> list[dict]:
    """Start ``python -m tests.distribute_worker MODE OUT`` for each (mode, out, env) at once and
    wait for all; if one fails or the deadline passes, kill the rest and fail with their logs."""
    procs, logs = [], []
    try:
        for mode, out, env in jobs:
            out.mkdir(parents=True, exist_ok=True)
            log = open(out / "log.txt", "w")  # a file, not a pipe: a chatty child cannot block on it
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, "-m", "tests.distribute_worker", mode, str(out)],
                                          cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline or any(p.returncode not in (None, 0) for p in procs):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for log in logs:
            log.close()
    failed = [(job, p.returncode) for job, p in zip(jobs, procs) if p.returncode != 0]
    if failed:
        killed = f" (killed: the {timeout:.0f} s deadline passed, or another child failed)"
        report = "\n".join(f"--- {mode} {out}: exit {rc}{killed if rc < 0 else ''}\n"
                           f"{(out / 'log.txt').read_text()[-4000:]}" for (mode, out, _), rc in failed)
        pytest.fail(f"distribute_worker children failed:\n{report}")
    return [json.loads((out / "result.json").read_text()) for _, out, _ in jobs]


def load(path: Path, prefix: str) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[k] for k in sorted(data.files) if k.rsplit("_", 1)[0] == prefix]


def max_change(before: list[np.ndarray], after: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(a - b))) for a, b in zip(before, after))


# ---------------------------------------------------------------------- in this process
def test_tf_config_cluster_size():
    assert runtime.cluster_size("") == 0
    assert runtime.cluster_size(json.dumps({"cluster": {"worker": ["a:1", "b:2"]}})) == 2
    assert runtime.cluster_size(json.dumps({"cluster": {"chief": ["c:0"], "worker": ["a:1"], "ps": ["p:1"]}})) == 3
    for bad in ("{not json", '{"task": {}}'):
        with pytest.raises(OptionsError):
            runtime.cluster_size(bad)


def test_a_cluster_of_several_machines_is_refused(monkeypatch):
    """dfd trains on one machine: a TF_CONFIG of several tasks stops the run before any strategy."""
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    monkeypatch.setattr(runtime, "local_devices", lambda: pytest.fail("looked for devices"))
    for cluster in ({"worker": ["a:1", "b:2"]}, {"chief": ["c:0"], "ps": ["p:1"]}):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
        with pytest.raises(OptionsError, match="TF_CONFIG describes a cluster of 2 tasks.*one machine"):
            runtime.distribution_strategy()
        with pytest.raises(OptionsError):
            with runtime.accelerator_scope("off"):
                pass
    assert not hasattr(runtime, "is_chief") and not hasattr(runtime, "cluster_strategy")


def test_a_one_task_tf_config_trains_as_one_machine(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["c:0"]}, "task": {"type": "chief", "index": 0}}))
    runtime.require_one_machine()  # no error: one machine


def test_one_device_trains_without_a_strategy(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if runtime.gpu_count() or runtime.local_devices()[1] > 1:
        pytest.skip("this process sees several devices")
    assert runtime.distribution_strategy() is None
    with runtime.accelerator_scope("off") as device:
        pass
    assert device == {"gpus": 0, "mixed_precision": False, "mirrored_strategy": False, "strategy": None,
                      "replicas": 1}


def test_other_backends_get_no_strategy(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    assert runtime.distribution_strategy() is None


# ---------------------------------------------------------------------- one process, two logical CPUs
@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_runs_the_train_cnn_loop(tmp_path):
    (result,) = run_children([("mirrored", tmp_path / "mirrored", child_env())], MIRRORED_TIMEOUT_S)
    loop = result["loop"]
    assert loop["device"]["strategy"] == "MirroredStrategy" and loop["device"]["replicas"] == 2
    assert loop["model_strategy"] == "MirroredStrategy"  # the model was built in the strategy's scope
    for copies in loop["replica_copies"]:  # every trainable variable lives on both devices, in sync
        assert [d.rsplit(":", 2)[-2:] for d in copies["devices"]] == [["CPU", "0"], ["CPU", "1"]]
        assert copies["equal"]
    assert loop["epochs"] == 3
    # one optimizer step per PyDataset batch: the batch is the global batch, split over the replicas
    assert loop["steps"] == [worker.TRAIN_BATCHES, 2 * worker.TRAIN_BATCHES, worker.TRAIN_BATCHES]
    assert all(np.isfinite(loop["losses"])) and all(0.0 <= auc <= 1.0 for auc in loop["val_auc"])
    weights = tmp_path / "mirrored" / "loop.npz"
    assert max_change(load(weights, "initial_trainable"), load(weights, "final_trainable")) > 1e-3
    assert (tmp_path / "mirrored" / "best.weights.h5").is_file()
