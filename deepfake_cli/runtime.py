"""Where training runs: seeds, devices, mixed precision, several GPUs.

Models use only the public Keras 3 API, so any Keras backend runs dfd; the backend-specific
lines (seeding TensorFlow or PyTorch, counting GPUs, MirroredStrategy) are all here.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def accelerator_scope(mixed_precision: str = "auto") -> Iterator[dict]:
    """Build and compile models inside this: mixed precision on GPU, MirroredStrategy on >1 GPU.

    Yields a description of what was used. On CPU it changes nothing.
    """
    gpus = gpu_count()
    mixed = use_mixed_precision(mixed_precision, gpus)
    previous = keras.config.dtype_policy()
    strategy = contextlib.nullcontext()
    distributed = gpus > 1 and keras.backend.backend() == "tensorflow"
    if distributed:
        import tensorflow as tf  # MirroredStrategy exists under the TensorFlow backend only

        strategy = tf.distribute.MirroredStrategy().scope()
    try:
        if mixed:
            keras.config.set_dtype_policy("mixed_float16")
        with strategy:
            yield {"gpus": gpus, "mixed_precision": mixed, "mirrored_strategy": distributed}
    finally:
        keras.config.set_dtype_policy(previous)
