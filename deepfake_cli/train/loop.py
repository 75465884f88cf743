"""The training loop both models share: phases of epochs, early stopping, checkpoints, resume.

`train-cnn` (deepfake_cli.train.cnn) and `train-lstm` (deepfake_cli.train.temporal) each describe their
model, data and phases in a :class:`Loop` and hand it to :func:`run_phases`:

* a :class:`Phase` is a stretch of epochs with one optimizer (a round, or a frozen warm-up);
  a phase that starts from the best weights so far does so with a fresh optimizer;
* early stopping on validation AUC with ``patience`` (ties go to the lower validation loss);
  the best weights are published to the bundle's weights file;
* every epoch writes a checkpoint (weights, optimizer state, and the loop state in
  ``state.json``), so :func:`prepare_state` with ``resume=True`` continues a killed run
  from its last completed epoch; epoch order and augmentation derive from (seed, phase, epoch).

Serving never imports this module.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Iterable

import keras
import numpy as np

from deepfake_cli.nets.bundle import (BundleConfig, BundleError, load_optimizer_state, load_weights_checked, now_iso,
                                 save_optimizer_state, save_weights_atomic)
from deepfake_cli.errors import OptionsError
from deepfake_cli.files import atomic_write, atomic_write_text

STATE_FILE = "state.json"


# ---------------------------------------------------------------------- sample weights
def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Weights n / (2 n_c) so that both classes weigh the same in the loss."""
    n = len(labels)
    counts = {c: int(np.sum(labels == c)) for c in (0, 1)}
    return {c: (n / (2.0 * k) if k else 0.0) for c, k in counts.items()}


def cell_weights(cells: list[tuple[str, int]]) -> dict[tuple[str, int], float]:
    """Weights n / (k n_c) per (dataset, label) cell, so that each of the k cells weighs the same.

    With FF++ (about 1 real : 3 fake: ~30 real and ~100 fake videos in ../shared/data/ffpp) and
    DFDC (1 : 1) in one training set, balancing labels alone would still let the model learn
    "looks like FF++, so fake"; balancing the cells does not.
    """
    counts: dict[tuple[str, int], int] = {}
    for cell in cells:
        counts[cell] = counts.get(cell, 0) + 1
    return {cell: len(cells) / (len(counts) * k) for cell, k in counts.items()}


# ---------------------------------------------------------------------- checkpoints
class Checkpoints:
    """Per-epoch training state in one directory; ``state.json`` names the valid files."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)

    def path(self, name: str) -> Path:
        return self.dir / name

    def load(self) -> dict | None:
        """The last written state, or None when there is none."""
        path = self.path(STATE_FILE)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read checkpoint state {path}: {exc}") from None

    def clear(self) -> None:
        """Remove every checkpoint file (a fresh run); the directory exists afterwards."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for path in self.dir.iterdir():
            if path.is_file():
                path.unlink()

    def write(self, state: dict) -> None:
        """Write the state atomically, then delete files it no longer names."""
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path(STATE_FILE), json.dumps(state, indent=1) + "\n")
        self.prune(state)

    def prune(self, state: dict | None) -> None:
        """Delete checkpoint files that the state does not reference (older or half-written)."""
        if not self.dir.is_dir():
            return
        keep = {STATE_FILE} | set(referenced_files(state))
        for path in self.dir.iterdir():
            if path.is_file() and path.name not in keep:
                path.unlink(missing_ok=True)


def referenced_files(state: dict | None) -> list[str]:
    """File names a state depends on."""
    if not state:
        return []
    names = list((state.get("last") or {}).values())
    names.append((state.get("best") or {}).get("file"))
    return [n for n in names if n]


def new_state(kind: str, options: dict, splits: dict) -> dict:
    """The loop state of a run that has not trained yet."""
    return {"kind": kind, "options": options, "splits": splits, "phase": 0, "phase_epoch": 0,
            "bad_epochs": 0, "best": None, "last": None, "history": [], "done": False,
            "train_images": 0, "train_seconds": 0.0,
            "rng": {"seed": options["seed"], "epoch_order_and_augmentation": "numpy default_rng((seed, phase, epoch))",
                    "dropout": "Keras seed-generator state, saved with the weights"}}


# ---------------------------------------------------------------------- training loop
@dataclass(frozen=True)
class Phase:
    """A stretch of epochs with one optimizer: a round, or the frozen warm-up of round 1."""

    name: str
    round: int
    epochs: int
    learning_rate: float
    frozen: bool = False
    start_from_best: bool = False


@dataclass
class Loop:
    """What the generic epoch loop needs to know about one model."""

    model: object
    train: keras.utils.PyDataset  # with set_epoch(key) and items
    evaluate: Callable[[object], dict]
    checkpoints: Checkpoints
    final_weights: Path
    tag: dict
    patience: int
    seed: int
    on_epoch: Callable[[dict], None] | None = None
    trainable: Callable[[object, bool], None] | None = None
    fresh_model: bool = True  # weights not yet restored from the checkpoint
    compiled_frozen: bool | None = None  # backbone state the model was last compiled with


def compile_model(model, learning_rate: float) -> None:
    """Fresh Adam optimizer and binary cross-entropy loss."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                  loss=keras.losses.BinaryCrossentropy())


def start_phase(loop: Loop, phase: Phase, state: dict) -> None:
    """Put model and optimizer in the state this phase (or its resumed epoch) starts from."""
    ckpt = loop.checkpoints
    if loop.fresh_model and state["last"]:
        load_weights_checked(loop.model, ckpt.path(state["last"]["weights"]), loop.tag)
    loop.fresh_model = False
    if phase.start_from_best and state["phase_epoch"] == 0 and state["best"]:
        load_weights_checked(loop.model, ckpt.path(state["best"]["file"]), loop.tag)
    if loop.compiled_frozen != phase.frozen:
        if loop.trainable is not None:
            loop.trainable(loop.model, not phase.frozen)
        compile_model(loop.model, phase.learning_rate)
    elif not reset_optimizer(loop.model, phase.learning_rate):
        compile_model(loop.model, phase.learning_rate)
    loop.compiled_frozen = phase.frozen
    if state["phase_epoch"] > 0 and state["last"] and state["last"].get("optimizer"):
        loop.model.optimizer.build(loop.model.trainable_variables)
        load_optimizer_state(loop.model.optimizer, ckpt.path(state["last"]["optimizer"]))


def reset_optimizer(model, learning_rate: float) -> bool:
    """Make the compiled optimizer as new (zero state, new learning rate); False if it cannot.

    Equivalent to a fresh Adam, but keeps the traced training function (no recompile).
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not optimizer.built or isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return False
    for variable in optimizer.variables:
        variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
    optimizer.learning_rate = learning_rate
    return True


def improved(metrics: dict, best: dict | None) -> bool:
    """True when the val AUC beats the best so far, or ties it with a lower val loss.

    NaN never improves (except on the very first epoch).
    """
    auc = metrics["val_auc"]
    if best is None:
        return True
    if math.isnan(auc):
        return False
    if math.isnan(best["val_auc"]) or auc > best["val_auc"]:
        return True
    return auc == best["val_auc"] and metrics["val_loss"] < best["val_loss"]


class BatchProgress(keras.callbacks.Callback):
    """Calls ``report(batches done, batches in the epoch, loss so far)`` after each training batch."""

    def __init__(self, report: Callable[[int, int, float], None], total: int):
        super().__init__()
        self.report = report
        self.total = total

    def on_train_batch_end(self, batch, logs=None):
        self.report(batch + 1, self.total, float((logs or {}).get("loss", math.nan)))


def train_one_epoch(loop: Loop, index: int, state: dict) -> tuple[float, float]:
    """One pass over the training data; returns (loss, seconds). Progress inside the epoch: when
    ``loop.on_epoch`` also has an ``on_batch(done, total, loss)`` method, it is called after each
    batch (the command line draws a bar from it; training itself is the same either way)."""
    loop.train.set_epoch((loop.seed, index, state["phase_epoch"]))
    clock = time.perf_counter()
    on_batch = getattr(loop.on_epoch, "on_batch", None)
    callbacks = [BatchProgress(on_batch, len(loop.train))] if on_batch is not None else None
    history = loop.model.fit(loop.train, epochs=1, verbose=0, callbacks=callbacks)
    return float(history.history["loss"][-1]), time.perf_counter() - clock


def save_epoch(loop: Loop, phase: Phase, state: dict, record: dict, better: bool) -> None:
    """Write this epoch's checkpoint files, then the state that names them."""
    step = len(state["history"])
    last = {"weights": f"epoch-{step:04d}.weights.h5", "optimizer": f"epoch-{step:04d}.optimizer.npz"}
    save_weights_atomic(loop.model, loop.checkpoints.path(last["weights"]), loop.tag)
    save_optimizer_state(loop.model.optimizer, loop.checkpoints.path(last["optimizer"]))
    if better:
        best_file = f"best-{step:04d}.weights.h5"
        save_weights_atomic(loop.model, loop.checkpoints.path(best_file), loop.tag)
        state["best"] = {"file": best_file, "round": phase.round, "epoch": record["epoch"],
                         "phase": phase.name, **{k: record[k] for k in record if k.startswith("val_")}}
        state["bad_epochs"] = 0
    else:
        state["bad_epochs"] += 1
    state["last"] = last
    state["phase_epoch"] += 1
    state["history"].append(record)
    loop.checkpoints.write(state)
    if better:
        publish_best(loop, state)


def publish_best(loop: Loop, state: dict) -> None:
    """Copy the best checkpoint to the bundle's weights file (atomically)."""
    name = (state.get("best") or {}).get("file")
    if not name:
        return
    source = loop.checkpoints.path(name)
    if not source.is_file():
        return
    with atomic_write(loop.final_weights) as tmp:
        shutil.copyfile(source, tmp)


def run_epoch(loop: Loop, index: int, phase: Phase, state: dict) -> dict:
    """Train, validate, checkpoint and report one epoch; returns its record."""
    clock = time.perf_counter()
    loss, train_seconds = train_one_epoch(loop, index, state)
    metrics = loop.evaluate(loop.model)
    images = len(loop.train.items)
    round_epoch = sum(1 for r in state["history"] if r["round"] == phase.round) + 1
    better = improved(metrics, state["best"])
    record = {"round": phase.round, "epoch": round_epoch, "phase": phase.name, "loss": loss, **metrics,
              "images_per_second": images / train_seconds if train_seconds > 0 else 0.0}
    if hasattr(loop.train, "epoch_mix"):
        record["train_mix"] = loop.train.epoch_mix()  # shares of real, fake and pseudo-fake faces
    state["train_images"] += images
    state["train_seconds"] += train_seconds
    record["seconds"] = time.perf_counter() - clock
    save_epoch(loop, phase, state, record, better)
    report = dict(record, best_val_auc=state["best"]["val_auc"])
    if loop.on_epoch is not None:
        loop.on_epoch(report)
    return report


def run_phases(loop: Loop, phases: list[Phase], state: dict) -> dict:
    """Run (or resume) all phases; early stopping ends a phase after ``patience`` bad epochs."""
    for index in range(state["phase"], len(phases)):
        phase = phases[index]
        start_phase(loop, phase, state)
        while state["phase_epoch"] < phase.epochs and state["bad_epochs"] < loop.patience:
            run_epoch(loop, index, phase, state)
        state["stopped_early"] = state.get("stopped_early", []) + (
            [phase.name] if state["phase_epoch"] < phase.epochs else [])
        state.update(phase=index + 1, phase_epoch=0, bad_epochs=0)
        loop.checkpoints.write(state)
    publish_best(loop, state)
    finish_state(loop.checkpoints, state)
    return state


def finish_state(checkpoints: Checkpoints, state: dict) -> None:
    """Mark the run done and drop its weight files (the best one is published)."""
    state["done"] = True
    state["last"] = None
    if state.get("best"):
        state["best"]["file"] = None
    checkpoints.write(state)


# ---------------------------------------------------------------------- runs
def prepare_state(checkpoints: Checkpoints, resume: bool, kind: str, options,
                  splits_fn: Callable[[], dict]) -> tuple[dict, object, int | None]:
    """(state, options, resumed_at_epoch): the checkpoint's when resuming, else fresh ones.

    When resuming, the run continues with the checkpoint's options: an option left at its
    default takes the checkpoint's value, and one set to anything else must equal it, or
    :func:`check_resume_options` stops the run with an :class:`OptionsError` listing the
    differences (a resume never silently drops an option the caller gave). Without a
    checkpoint to resume, a fresh run starts. A fresh run touches nothing on disk here: the
    caller calls :func:`start_fresh` once its inputs and model are known to be good, so that a
    run that fails early (bad option, no faces, weights offline) leaves the bundle as it was.
    """
    state = checkpoints.load() if resume else None
    if state is not None and state.get("kind") == kind:
        known = {f.name for f in fields(type(options))}
        recorded = {k: v for k, v in state["options"].items() if k in known}
        check_resume_options(checkpoints, recorded, options)
        checkpoints.prune(state)
        # an option the checkpoint predates keeps the given value
        return state, replace(options, **recorded), len(state["history"])
    return new_state(kind, asdict(options), splits_fn()), options, None


def given_options(options) -> dict:
    """The options set to something other than their default (what a caller asked for)."""
    defaults = asdict(type(options)())
    return {k: v for k, v in asdict(options).items() if v != defaults[k]}


def check_resume_options(checkpoints: Checkpoints, recorded: dict, options) -> None:
    """Refuse to resume when an option given (not at its default) differs from the checkpoint's.

    An option at its default cannot be told apart from one left out, so it takes the
    checkpoint's value; comparing those too would make ``--resume`` alone (the way to continue
    a killed run as it was started) fail for every run started with non-default options.
    """
    differing = [f"{name} (checkpoint {recorded[name]!r}, given {value!r})"
                 for name, value in given_options(options).items() if name in recorded and value != recorded[name]]
    if differing:
        raise OptionsError(f"cannot resume {checkpoints.dir}: its run was started with other options: "
                           f"{', '.join(differing)}; resume with the same options (or none besides --resume), "
                           "or leave out --resume to start afresh")


def start_fresh(checkpoints: Checkpoints, stale: Iterable[Path] = ()) -> None:
    """Delete an earlier run's checkpoints, and the ``stale`` files or directories that a new
    run makes meaningless (a new CNN: the LSTM and its checkpoints)."""
    checkpoints.clear()
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def record_command(config: BundleConfig, step: str, command: str | None) -> None:
    """Append the command line that ran a step (the CLI passes it; "" when called from Python)."""
    config.commands.append({"step": step, "command": command or "", "at": now_iso()})
