"""Where training runs: seeds, devices, mixed precision, several GPUs of one machine.

Models use only the public Keras 3 API, so any Keras backend runs dfd; the backend-specific
lines (seeding TensorFlow or PyTorch, counting GPUs, tf.distribute strategies) are all here.

Under the TensorFlow backend, :func:`distribution_strategy` picks how training is spread:
several local devices (GPUs, or logical CPU devices a test configured) train under
MirroredStrategy, one device under no strategy at all. Several machines are not supported: a
``TF_CONFIG`` cluster is refused. docs/distributed.md says how to use it.
"""

from __future__ import annotations

import contextlib
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


def cluster_size(tf_config: str | None = None) -> int:
    """Tasks (chief, workers, parameter servers) in the cluster that ``TF_CONFIG`` describes; 0 without one.

    ``tf_config`` defaults to the environment variable. A value that is not a JSON cluster
    description is refused rather than ignored.
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
        raise OptionsError('TF_CONFIG needs a "cluster" object, e.g. {"cluster": {"chief": ["host:12345"]}}; '
                           "dfd trains on one machine: unset TF_CONFIG")
    return sum(len(cluster.get(kind) or []) for kind in ("chief", "worker", "ps"))


def require_one_machine() -> None:
    """Refuse a ``TF_CONFIG`` cluster of several tasks: dfd trains on one machine (several of its
    GPUs under MirroredStrategy), so a machine meant to join a cluster must not train alone."""
    tasks = cluster_size()
    if tasks > 1:
        raise OptionsError(f"TF_CONFIG describes a cluster of {tasks} tasks, but dfd trains on one machine only "
                           "(all of its GPUs together); unset TF_CONFIG: see docs/distributed.md")


def local_devices() -> tuple[str, int]:
    """("GPU", n) when GPUs are visible, else ("CPU", logical CPU devices); TensorFlow only.

    Counts logical devices from their configuration, without initialising TensorFlow's runtime
    (which would fix the device configuration).
    """
    import tensorflow as tf

    def logical(kind: str) -> int:
        return sum(len(tf.config.get_logical_device_configuration(d) or [None])
                   for d in tf.config.list_physical_devices(kind))

    gpus = logical("GPU")
    return ("GPU", gpus) if gpus else ("CPU", logical("CPU"))


def distribution_strategy():
    """The tf.distribute strategy to train under, or None (one device, or not TensorFlow).

    * more than one local GPU, or logical CPU device: MirroredStrategy over them;
    * else None.

    A ``TF_CONFIG`` cluster of several tasks is refused (:func:`require_one_machine`).
    """
    if keras.backend.backend() != "tensorflow":
        return None
    require_one_machine()
    import tensorflow as tf  # tf.distribute exists under the TensorFlow backend only

    kind, count = local_devices()
    if count <= 1:
        return None
    if kind == "GPU":
        return tf.distribute.MirroredStrategy()  # every GPU
    return tf.distribute.MirroredStrategy(devices=[d.name for d in tf.config.list_logical_devices("CPU")])


def describe_strategy(strategy) -> dict:
    """What accelerator_scope reports about a strategy (None: one device): its public class
    name and the replicas that train in sync."""
    if strategy is None:
        return {"strategy": None, "replicas": 1}
    import tensorflow as tf

    name = "MirroredStrategy" if isinstance(strategy, tf.distribute.MirroredStrategy) else type(strategy).__name__
    return {"strategy": name, "replicas": int(strategy.num_replicas_in_sync)}


@contextlib.contextmanager
def accelerator_scope(mixed_precision: str = "auto") -> Iterator[dict]:
    """Build and compile models inside this: mixed precision on GPU, a tf.distribute strategy
    on several local devices (see :func:`distribution_strategy`).

    Yields a description of what was used: ``gpus``, ``mixed_precision``, ``mirrored_strategy``
    (a strategy is in use), ``strategy`` (its class name, or None) and ``replicas`` (devices
    that train in sync). On one CPU it changes nothing. The batch size of the data fed to
    ``fit`` is the global batch: each step splits it over the replicas.
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
