"""Child process of tests/test_distribute.py: train a tiny model under the strategy that
deepfake_cli.train.runtime picks, and save what happened.

    python -m tests.distribute_worker mirrored OUT_DIR   # one process, CPU split into 2 logical devices

A fresh process each time: TensorFlow's device configuration (logical CPU devices) can only be
set before TensorFlow initialises.

``mirrored`` trains the way `dfd train-cnn` does: runtime.seed_everything, accelerator_scope,
loop.compile_model and loop.run_phases (one Keras ``fit`` per epoch on a
keras.utils.PyDataset of (x, y, sample_weight) batches, validation through ``model.predict``,
checkpoints, a second round from the best weights). The data are seeded with SEED, the model
too. OUT_DIR receives ``result.json`` and ``loop.npz`` (weight arrays).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

SEED = 7
SIZE = 8  # input images are SIZE x SIZE x 3
BATCH = 8  # the batch the PyDataset yields: the global batch, split over the replicas of a step
TRAIN_BATCHES = 4  # per epoch
VAL_BATCHES = 2


def split_cpu(devices: int = 2) -> None:
    """Make TensorFlow see ``devices`` logical CPU devices (before it initialises)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)


def tiny_model():
    """A small stand-in for models.build_classifier: conv, batch norm and pooling, then the
    same head (float32 features, dropout, Dense(1, sigmoid))."""
    import keras

    image = keras.Input((SIZE, SIZE, 3), name="face")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(image)
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    features = keras.layers.Activation("linear", dtype="float32", name="features")(x)
    hidden = keras.layers.Dropout(0.2, name="head_dropout")(features)
    score = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="score")(hidden)
    return keras.Model(image, score, name="tiny_cnn")


def make_dataset(batches: int, shuffle: bool, seed: int):
    """A PyDataset shaped like face_dataset.FaceDataset: (x, y, sample_weight) batches of fixed
    seeded data, ``set_epoch(key)`` fixing the order, ``items`` listing the samples."""
    import keras

    class Faces(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=2, use_multiprocessing=False)  # loader threads, as train-cnn uses
            rng = np.random.default_rng(seed)
            n = batches * BATCH
            self.labels = (np.arange(n) % 2).astype("float32")
            self.x = rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")
            self.x[self.labels == 1, :, : SIZE // 2] = 255.0  # fakes: a bright left half (learnable)
            self.items = list(range(n))
            self.order = np.arange(n)

        def set_epoch(self, key):
            if shuffle:
                self.order = np.random.default_rng(tuple(int(k) for k in key)).permutation(len(self.items))

        def __len__(self):
            return batches

        def __getitem__(self, index):
            rows = self.order[index * BATCH:(index + 1) * BATCH]
            weights = np.where(self.labels[rows] == 1, 1.0, 2.0).astype("float32")  # like class weights
            return self.x[rows], self.labels[rows], weights

    return Faces()


def save_weights(path: Path, **models_weights) -> None:
    """``name=[arrays]`` -> one .npz with ``name_000``, ``name_001``, ... entries."""
    arrays = {f"{name}_{i:03d}": np.asarray(w) for name, ws in models_weights.items() for i, w in enumerate(ws)}
    np.savez(path, **arrays)


def replica_copies(model, strategy) -> list[dict]:
    """For each trainable variable: the devices holding a copy, and whether all copies are equal."""
    found = []
    for variable in model.trainable_variables:
        copies = strategy.experimental_local_results(variable.value)
        values = [np.asarray(c) for c in copies]
        found.append({"devices": [c.device for c in copies],
                      "equal": all(np.array_equal(values[0], v) for v in values[1:])})
    return found


def run_loop(out: Path, seed: int) -> dict:
    """train-cnn's path: accelerator_scope, a compiled model, training.run_phases (fit per epoch)."""
    from deepfake_cli.scoring.metrics import log_loss, safe_auc
    from deepfake_cli.train.runtime import accelerator_scope, seed_everything
    from deepfake_cli.train.loop import Checkpoints, Loop, Phase, new_state, run_phases, start_fresh

    train = make_dataset(TRAIN_BATCHES, shuffle=True, seed=SEED)
    val = make_dataset(VAL_BATCHES, shuffle=False, seed=SEED + 1)
    seed_everything(seed)
    losses, steps = [], []

    def evaluate(model):
        scores = np.asarray(model.predict(val, verbose=0), np.float32).reshape(-1)
        if scores.shape != val.labels.shape:
            raise AssertionError(f"predict returned {scores.shape[0]} scores for {len(val.labels)} faces")
        return {"val_auc": safe_auc(val.labels, scores), "val_loss": log_loss(val.labels, scores)}

    with accelerator_scope("off") as device:
        model = tiny_model()
        initial = model.get_weights()
        initial_trainable = [np.asarray(v) for v in model.trainable_variables]

        def on_epoch(report):
            losses.append(report["loss"])
            steps.append(int(model.optimizer.iterations.numpy()))  # optimizer steps so far in this phase

        loop = Loop(model=model, train=train, evaluate=evaluate, checkpoints=Checkpoints(out / "checkpoints"),
                    final_weights=out / "best.weights.h5", tag={"dfd_model": "tiny"}, patience=5, seed=SEED,
                    on_epoch=on_epoch)
        start_fresh(loop.checkpoints)
        phases = [Phase("round1", 1, 2, 1e-2), Phase("round2", 2, 1, 1e-3, start_from_best=True)]
        state = run_phases(loop, phases, new_state("tiny", {"seed": SEED}, {"train": [], "val": []}))
        copies = replica_copies(model, model.distribute_strategy)
        strategy = type(model.distribute_strategy).__name__
    save_weights(out / "loop.npz", initial=initial, final=model.get_weights(), initial_trainable=initial_trainable,
                 final_trainable=[np.asarray(v) for v in model.trainable_variables])
    return {"device": device, "model_strategy": strategy, "replica_copies": copies, "losses": losses,
            "steps": steps, "epochs": len(state["history"]), "val_auc": [r["val_auc"] for r in state["history"]]}


def main(argv: list[str]) -> int:
    mode, out = argv
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["KERAS_BACKEND"] = "tensorflow"
    if mode != "mirrored":
        raise SystemExit(f"unknown mode {mode!r}: mirrored")
    split_cpu(2)
    import keras

    keras.config.disable_traceback_filtering()  # a failure in a child shows its whole stack
    result = {"pid": os.getpid(), "loop": run_loop(out, SEED)}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
