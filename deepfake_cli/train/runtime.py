"""Where training runs: seeds, devices, mixed precision, several GPUs or machines.

Models use only the public Keras 3 API, so any Keras backend runs dfd; the backend-specific
lines (seeding TensorFlow or PyTorch, counting GPUs, tf.distribute strategies) are all here.

Under the TensorFlow backend, :func:`distribution_strategy` picks how training is spread:
a ``TF_CONFIG`` cluster of several workers trains under MultiWorkerMirroredStrategy, several
local devices (GPUs, or logical CPU devices a test configured) under MirroredStrategy, and
one device under no strategy at all. docs/distributed.md says how to use it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
from typing import Iterator

import keras
import numpy as np

from deepfake_cli.errors import OptionsError


def gpu_count() -> int:
    """GPUs visible to the active Keras backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "torch":
        import torch

        return torch.cuda.device_count()
    if backend == "jax":
        import jax

        return sum(d.platform == "gpu" for d in jax.devices())
    return 0


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the backend (Keras layers draw their seeds from Python's random).

    keras.utils.set_random_seed imports TensorFlow under every backend, so it is used only
    when TensorFlow is the backend.
    """
    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    random.seed(seed)
    np.random.seed(seed)
    if keras.backend.backend() == "torch":
        import torch

        torch.manual_seed(seed)


def use_mixed_precision(mode: str, gpus: int) -> bool:
    """auto: mixed_float16 only on a GPU; on / off force it."""
    if mode not in ("auto", "on", "off"):
        raise OptionsError(f"mixed_precision must be auto, on or off, not {mode!r}")
    return mode == "on" or (mode == "auto" and gpus > 0)


def cluster_workers(tf_config: str | None = None) -> int:
    """Workers (a ``chief`` included) in the cluster that ``TF_CONFIG`` describes; 0 without one.

    ``tf_config`` defaults to the environment variable. A value that is not a JSON cluster
    description, or one with parameter servers, is refused rather than silently ignored: a
    machine that meant to join a cluster must not train alone.
    """
    raw = os.environ.get("TF_CONFIG", "") if tf_config is None else tf_config
    if not raw.strip():
        return 0
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise OptionsError(f"TF_CONFIG is not valid JSON: {exc}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict):
        raise OptionsError('TF_CONFIG needs a "cluster" object, e.g. {"cluster": {"worker": ["host1:12345", '
                           '"host2:12345"]}, "task": {"type": "worker", "index": 0}}')
    if cluster.get("ps"):
        raise OptionsError("TF_CONFIG describes parameter servers; dfd trains with MultiWorkerMirroredStrategy "
                           "(chief and worker tasks only)")
    return sum(len(cluster.get(kind) or []) for kind in ("chief", "worker"))


def is_chief(tf_config: str | None = None) -> bool:
    """Whether this process is the cluster's chief (the ``chief`` task, else worker 0); True alone.

    The chief is the worker that should write shared files; see docs/distributed.md.
    """
    raw = os.environ.get("TF_CONFIG", "") if tf_config is None else tf_config
    if cluster_workers(raw) <= 1:
        return True
    config = json.loads(raw)
    task = config.get("task") or {}
    if config["cluster"].get("chief"):
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


def local_devices() -> tuple[str, int]:
    """("GPU", n) when GPUs are visible, else ("CPU", logical CPU devices); TensorFlow only.

    Counts logical devices from their configuration, without initialising TensorFlow's runtime
    (which would fix the device configuration and forbid a later MultiWorkerMirroredStrategy).
    """
    import tensorflow as tf

    def logical(kind: str) -> int:
        return sum(len(tf.config.get_logical_device_configuration(d) or [None])
                   for d in tf.config.list_physical_devices(kind))

    gpus = logical("GPU")
    return ("GPU", gpus) if gpus else ("CPU", logical("CPU"))


def distribution_strategy():
    """The tf.distribute strategy to train under, or None (one device, or not TensorFlow).

    * ``TF_CONFIG`` with more than one worker: MultiWorkerMirroredStrategy (each worker's
      GPUs, or its CPU, hold a replica; gradients are all-reduced across machines);
    * else more than one local GPU, or logical CPU device: MirroredStrategy over them;
    * else None.

    Call it before TensorFlow runs its first operation when a cluster is configured
    (MultiWorkerMirroredStrategy must configure the runtime's collective ops). Every worker
    must then run the same training steps in the same order.
    """
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf  # tf.distribute exists under the TensorFlow backend only

    if cluster_workers() > 1:
        return cluster_strategy(os.environ["TF_CONFIG"])
    kind, count = local_devices()
    if count <= 1:
        return None
    if kind == "GPU":
        return tf.distribute.MirroredStrategy()  # every GPU
    return tf.distribute.MirroredStrategy(devices=[d.name for d in tf.config.list_logical_devices("CPU")])


@functools.lru_cache(maxsize=None)
def cluster_strategy(tf_config: str):
    """The process's MultiWorkerMirroredStrategy for this TF_CONFIG, created on first use.

    TensorFlow configures a cluster's collective ops once per process; a second strategy for
    the same cluster in one process breaks the collectives (heartbeat errors, aborted broadcasts).
    """
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


def describe_strategy(strategy) -> dict:
    """What accelerator_scope reports about a strategy (None: one device): its public class
    name, the replicas that train in sync (all workers together) and the workers."""
    if strategy is None:
        return {"strategy": None, "replicas": 1, "workers": 1}
    import tensorflow as tf

    replicas = int(strategy.num_replicas_in_sync)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):  # class CollectiveAllReduceStrategy
        return {"strategy": "MultiWorkerMirroredStrategy", "replicas": replicas, "workers": max(cluster_workers(), 1)}
    name = "MirroredStrategy" if isinstance(strategy, tf.distribute.MirroredStrategy) else type(strategy).__name__
    return {"strategy": name, "replicas": replicas, "workers": 1}


@contextlib.contextmanager
def accelerator_scope(mixed_precision: str = "auto") -> Iterator[dict]:
    """Build and compile models inside this: mixed precision on GPU, a tf.distribute strategy
    on several devices or workers (see :func:`distribution_strategy`).

    Yields a description of what was used: ``gpus``, ``mixed_precision``, ``mirrored_strategy``
    (a strategy is in use), ``strategy`` (its class name, or None), ``replicas`` (devices
    that train in sync, all workers together) and ``workers``. On one CPU it changes nothing.
    The batch size of the data fed to ``fit`` is the global batch: each step splits it over
    the replicas (under MultiWorkerMirroredStrategy, over every worker's replicas).
    """
    gpus = gpu_count()
    mixed = use_mixed_precision(mixed_precision, gpus)
    previous = keras.config.dtype_policy()
    strategy = distribution_strategy()
    scope = contextlib.nullcontext() if strategy is None else strategy.scope()
    try:
        if mixed:
            keras.config.set_dtype_policy("mixed_float16")
        with scope:
            yield {"gpus": gpus, "mixed_precision": mixed, "mirrored_strategy": strategy is not None,
                   **describe_strategy(strategy)}
    finally:
        keras.config.set_dtype_policy(previous)
