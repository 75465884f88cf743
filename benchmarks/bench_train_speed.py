"""Where train-cnn's time goes: training images/s of Lite0 at 160 px, batch 32, per engine, in one run.

    python -m benchmarks.bench_train_speed [--steps 8] [--store runs/cv.h5]

Each engine runs in its own process (a Keras backend is chosen once per process) on the same
random batch, after two warm-up steps: a full training step (forward, backward, optimizer) of
train-cnn's classifier (nets.models.build_classifier, every layer trainable, batch-norm in
training mode):

* ``keras-tf``: what train-cnn runs today (TensorFlow backend, fp32);
* ``keras-tf-bf16``: the same under Keras' ``mixed_bfloat16`` policy (the CPU's AVX-512 BF16/AMX);
* ``keras-tf-xla``: the same step compiled with XLA (``jit_compile=True``);
* ``keras-torch`` / ``keras-torch-bf16``: the same Keras model on the PyTorch backend, trained by
  a PyTorch loop (AdamW), fp32 and under ``torch.autocast(bfloat16)``;
* ``torch`` / ``torch-bf16``: no Keras: the reference PyTorch EfficientNet-Lite0
  (``efficientnet_lite_pytorch``, the issue's probe), channels-last, the same loop;
  ``torch-compile``: under ``torch.compile``; ``torch-frozenN``: the stem and first N blocks
  frozen as ``train-cnn --freeze-blocks N`` freezes them. ``--size`` sets the step rows' face size.

With ``--store``, also the input side alone: train-cnn's FaceDataset batches (store read,
augmentation, resize) per second, to compare with the model's step; and the whole of train-cnn,
before and after, on that store's train split (epochs of ``--faces-per-video`` faces a video,
validation excluded; 3 epochs, the median of their rates, so that the first epoch's reading of every video into
train-cnn's cache counts once as in a real run): ``train-cnn/keras`` (Keras fit on TensorFlow, what train-cnn ran before) and
``train-cnn/torch`` (``--engine torch``: the PyTorch loop with the loader thread), each as the images/s
train-cnn records for the epoch (its step, data reading, augmentation and Python overhead), and
``train-cnn/torch-fast``: models/default/recipe-torch-fast.json's cheaper step on the same engine
(128 px faces, ``--freeze-blocks 3``: no backward pass through the stem and the first 3 blocks).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import machine

ENGINES = ("keras-tf", "keras-tf-bf16", "keras-tf-xla", "keras-torch", "keras-torch-bf16", "torch", "torch-bf16",
           "torch-compile", "torch-frozen3", "torch-frozen6")
BATCH, SIZE = 32, 160


def step_speed(engine: str, steps: int, size: int = SIZE) -> float:
    """Training images/s of one engine (run inside a fresh process) on ``size`` px faces."""
    import numpy as np

    x = (np.random.default_rng(0).random((BATCH, size, size, 3)) * 255).astype(np.float32)
    y = (np.arange(BATCH) % 2).astype(np.float32)[:, None]
    if engine.startswith("torch"):  # torch, torch-bf16, torch-compile, torch-frozenN
        frozen = int(engine[len("torch-frozen"):]) if engine.startswith("torch-frozen") else 0
        return plain_torch_speed(x, y, steps, bf16=engine == "torch-bf16", frozen=frozen,
                                 compiled=engine == "torch-compile")
    import keras

    from deepfake_cli.nets.models import build_classifier, set_backbone_trainable

    if engine == "keras-tf-bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    classifier, _ = build_classifier("efficientnet-lite0", size)
    set_backbone_trainable(classifier, True)
    if engine.startswith("keras-tf"):
        classifier.compile(optimizer=keras.optimizers.Adam(2e-4), loss="binary_crossentropy",
                           jit_compile=engine == "keras-tf-xla")

        def step():
            classifier.train_on_batch(x, y)
    else:
        import torch

        images, labels = torch.from_numpy(x), torch.from_numpy(y)
        optimizer = torch.optim.AdamW(classifier.parameters(), lr=2e-4)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=engine.endswith("bf16")):
                p = classifier(images, training=True)
            torch.nn.functional.binary_cross_entropy(p.float().clamp(1e-6, 1 - 1e-6), labels).backward()
            optimizer.step()

    return timed(step, steps)


def timed(step, steps: int) -> float:
    """Images/s of ``steps`` calls of a training step on one batch, after two warm-up calls."""
    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return BATCH * steps / (time.perf_counter() - start)


def plain_torch_speed(x, y, steps: int, bf16: bool, frozen: int = 0, compiled: bool = False) -> float:
    """Training images/s of the reference PyTorch Lite0 (random start: speed only), channels-last;
    ``frozen``: the stem and first blocks kept as train-cnn's --freeze-blocks keeps them;
    ``compiled``: under torch.compile (its compile time is in the warm-up, not timed)."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from deepfake_cli.train.torch_cnn import new_optimizer, set_trainable

    net = EfficientNet.from_name("efficientnet-lite0", num_classes=1, image_size=x.shape[1])
    net = net.to(memory_format=torch.channels_last)
    set_trainable(net, True, False, freeze_blocks=frozen)
    model = torch.compile(net) if compiled else net
    images = (torch.from_numpy(x).permute(0, 3, 1, 2) / 255.0).contiguous(memory_format=torch.channels_last)
    labels = torch.from_numpy(y)
    optimizer = new_optimizer(net, 2e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
        torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels).backward()
        optimizer.step()

    return timed(step, steps)


def input_speed(store_path: str, batches: int) -> float:
    """FaceDataset training images/s (read, augment, resize) of a store's train split."""
    from deepfake_cli.data.splits import training_splits
    from deepfake_cli.data.store import Store
    from deepfake_cli.train.face_dataset import FaceDataset, index_faces

    with Store.open(store_path) as store:
        train = training_splits(store.entries())["train"]
        items = index_faces(store, train, limit=16)
        labels = {v: int(store.entry(v).label == "fake") for v in train}
        dataset = FaceDataset(store, items, labels, BATCH, SIZE, augment=True, shuffle=True)
        dataset.set_epoch((0, 0, 0))
        start = time.perf_counter()
        for i in range(batches):
            dataset[i]
        return BATCH * batches / (time.perf_counter() - start)


# train-cnn/<variant>: the engine and what the variant changes in the step
TRAIN_CNN = {"keras": dict(engine="keras"), "torch": dict(engine="torch"),
             "torch-fast": dict(engine="torch", input_size=128, freeze_blocks=3)}


def train_cnn_speed(store_path: str, variant: str, faces: int) -> float:
    """Images/s of one train-cnn epoch (as train-cnn records it) of a TRAIN_CNN variant on a store's train split."""
    import tempfile

    from deepfake_cli.data.store import Store
    from deepfake_cli.train.cnn import CNNTrainOptions, train_cnn

    settings = {"input_size": SIZE, **TRAIN_CNN[variant]}
    options = CNNTrainOptions(backbone="efficientnet-lite0", weights="imagenet", epochs=3, rounds=1,
                              batch_size=BATCH, learning_rate=2e-4, batchnorm="train", max_frames_per_video=faces,
                              **settings)
    with Store.open(store_path) as store, tempfile.TemporaryDirectory() as out:
        return train_cnn(store, Path(out) / "bench", options)["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--store", help="also time train-cnn's input pipeline on this store")
    parser.add_argument("--faces-per-video", type=int, default=4, help="faces a video in the train-cnn epochs")
    parser.add_argument("--size", type=int, default=SIZE, help="face size of the training-step rows")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child.startswith("train-cnn/"):
            speed = train_cnn_speed(args.store, args.child.split("/")[1], args.faces_per_video)
        elif args.child == "input":
            speed = input_speed(args.store, args.steps)
        else:
            speed = step_speed(args.child, args.steps, args.size)
        print(json.dumps({"images_per_second": speed}))
        return
    print(f"machine: {machine()}; Lite0 {args.size} px steps, batch {BATCH}, {args.steps} timed steps")
    jobs = args.engines.split(",") + (["input"] + [f"train-cnn/{v}" for v in TRAIN_CNN] if args.store else [])
    for job in jobs:
        backend = "tensorflow" if job.startswith(("keras-tf", "input", "train-cnn")) else "torch"
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        command = [sys.executable, "-m", "benchmarks.bench_train_speed", "--child", job, "--steps", str(args.steps),
                   "--faces-per-video", str(args.faces_per_video), "--size", str(args.size)]
        if args.store:
            command += ["--store", args.store]
        run = subprocess.run(command, capture_output=True, text=True, env=env)
        if run.returncode:
            print(f"{job:18} failed: {run.stderr.strip().splitlines()[-1] if run.stderr.strip() else run.returncode}")
            continue
        speed = json.loads(run.stdout.strip().splitlines()[-1])["images_per_second"]
        what = {"input": "input pipeline (read, augment, resize)", "train-cnn/keras": "whole train-cnn epoch, before",
                "train-cnn/torch": "whole train-cnn epoch, --engine torch",
                "train-cnn/torch-fast": "whole train-cnn epoch, --engine torch, 128 px, --freeze-blocks 3"}.get(
                    job, "training step")
        print(f"{job:18} {speed:7.1f} images/s  ({what})", flush=True)


if __name__ == "__main__":
    main()
