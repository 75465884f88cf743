"""Train the frame classifier: a Keras backbone transfer-learned on stored face crops.

The reference recipe, on a bundle directory:

* faces of the train-split videos train the model, faces of the val-split videos pick the
  best epoch (validation AUC); test videos are never read. Labels: 1 = fake, 0 = real; the
  class imbalance (FF++ is 1 real : 4 fake) is evened out with per-sample class weights.
* an optional warm-up trains only the head with the backbone frozen, then every layer
  trains (transfer learning);
* round 1 starts from the chosen weights; every further round restarts from the best
  weights so far with a fresh Adam optimizer and the learning rate times 0.1 per round;
* early stopping on validation AUC with ``patience`` (per round); the best model of all
  rounds ends up in ``cnn.weights.h5``;
* every epoch writes a checkpoint (weights, optimizer state, loop state) so that
  ``resume=True`` continues a killed run from its last completed epoch.

Models use only the public Keras 3 API, so any Keras backend runs this module; the
TensorFlow-only pieces (MirroredStrategy) are isolated in :func:`accelerator_scope`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import shlex
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

from deepfake_cli.augment import augment_face, resize_crop
from deepfake_cli.bundle import (CHECKPOINT_DIR, CNN_WEIGHTS, CONFIG_FILE, LSTM_WEIGHTS, BundleConfig,
                                 BundleError, atomic_write_text, build_classifier, dfd_version,
                                 keras_backend, load_optimizer_state, load_weights_checked, now_iso,
                                 read_config, save_config, save_optimizer_state, save_weights_atomic,
                                 set_backbone_trainable, weights_tag)
from deepfake_cli.pseudo import (KINDS, PseudoFakes, check_options, describe, expected_class_weights,
                                 make_pseudo_fakes, mix_shares, require_landmarks68)
from deepfake_cli.splits import training_splits
from deepfake_cli.store import Store

ROUND_LR_FACTOR = 0.1  # round r trains with learning_rate * ROUND_LR_FACTOR ** (r - 1)
STATE_FILE = "state.json"
CNN_CHECKPOINTS = "cnn"  # bundle_dir/checkpoints/cnn


@dataclass
class CNNTrainOptions:
    """Settings of one `train_cnn` run (recorded in the bundle and the checkpoint)."""

    backbone: str = "efficientnet-b0"
    weights: str = "none"  # none | imagenet | PATH
    input_size: int | None = None  # default: the backbone's native size
    epochs: int = 20  # per round; warm-up epochs count towards round 1
    patience: int = 5
    rounds: int = 2
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_epochs: int = 0  # round 1 starts with this many head-only epochs (frozen backbone)
    seed: int = 0
    augment: bool = True
    val_fraction: float = 0.15
    mixed_precision: str = "auto"  # auto (only on GPU) | on | off
    max_frames_per_video: int | None = None
    dropout: float = 0.2  # before the Dense(1, sigmoid) head
    batchnorm: str = "auto"  # frozen | train | auto (= frozen for pretrained weights, train for "none")
    workers: int = 2  # PyDataset loader threads (decode, augment, resize)
    balance: str = "label"  # label: real and fake weigh the same | dataset: each (dataset, label) does
    pseudo_fakes: str = "none"  # none | sbi: real training faces become self-blended fakes (pseudo.py)
    pseudo_ratio: float = 0.5  # the probability that a drawn real face becomes a pseudo-fake

    def __post_init__(self) -> None:
        """Refuse bad settings before anything is read or written."""
        frozen_batchnorm(self)
        use_mixed_precision(self.mixed_precision, 0)
        check_options(self.pseudo_fakes, self.pseudo_ratio)
        if self.balance not in ("label", "dataset"):
            raise ValueError(f"balance must be label or dataset, not {self.balance!r}")


# ---------------------------------------------------------------------- data
def face_count(store: Store, video_id: str) -> int:
    """Number of stored faces of a video, reading only the frame-index array."""
    # Store has no public count; its segment reader opens the faces file without the crops.
    with store._read_segment(video_id, "faces") as f:
        return int(f["frame_indices"].shape[0])


def pick_rows(count: int, limit: int | None) -> list[int]:
    """Rows 0..count-1, or ``limit`` of them evenly spread."""
    if limit is None or count <= limit:
        return list(range(count))
    return sorted({int(round(x)) for x in np.linspace(0, count - 1, limit)})


def index_faces(store: Store, video_ids: list[str], limit: int | None = None) -> list[tuple[str, int]]:
    """(video_id, row) for every usable face of the given videos (videos without faces skipped)."""
    items = []
    for vid in video_ids:
        if store.has(vid, "faces"):
            items.extend((vid, row) for row in pick_rows(face_count(store, vid), limit))
    return items


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Weights n / (2 n_c) so that both classes weigh the same in the loss."""
    n = len(labels)
    counts = {c: int(np.sum(labels == c)) for c in (0, 1)}
    return {c: (n / (2.0 * k) if k else 0.0) for c, k in counts.items()}


def cell_weights(cells: list[tuple[str, int]]) -> dict[tuple[str, int], float]:
    """Weights n / (k n_c) per (dataset, label) cell, so that each of the k cells weighs the same.

    With FF++ (1 real : 3 fake) and DFDC (1 : 1) in one training set, balancing labels alone
    would still let the model learn "looks like FF++, so fake"; balancing the cells does not.
    """
    counts: dict[tuple[str, int], int] = {}
    for cell in cells:
        counts[cell] = counts.get(cell, 0) + 1
    return {cell: len(cells) / (len(counts) * k) for cell, k in counts.items()}


def windowed_order(items: list[tuple[str, int]], rng: np.random.Generator,
                   window: int) -> list[tuple[str, int]]:
    """Shuffle videos, then shuffle faces within windows of ``window`` videos.

    Batches then touch few videos at a time, so a small cache of decoded videos suffices.
    """
    by_video: dict[str, list[tuple[str, int]]] = OrderedDict()
    for item in items:
        by_video.setdefault(item[0], []).append(item)
    videos = list(by_video)
    rng.shuffle(videos)
    order: list[tuple[str, int]] = []
    for start in range(0, len(videos), window):
        chunk = [item for vid in videos[start:start + window] for item in by_video[vid]]
        rng.shuffle(chunk)
        order.extend(chunk)
    return order


class FaceDataset(keras.utils.PyDataset):
    """Batches (x, y[, sample_weight]) of face crops read lazily from the store.

    Memory holds only the (video_id, row) index and an LRU of a few decoded videos.
    Call :meth:`set_epoch` before an epoch: order and augmentation derive from its key.
    """

    def __init__(self, store: Store, items: list[tuple[str, int]], labels: dict[str, int],
                 batch_size: int, input_size: int, *, augment: bool = False, shuffle: bool = False,
                 weights: dict[int, float] | None = None, video_weights: dict[str, float] | None = None,
                 cache_videos: int = 32, pseudo: PseudoFakes | None = None, **kwargs):
        super().__init__(**kwargs)
        self.store, self.items, self.labels = store, list(items), labels
        self.batch_size, self.input_size = batch_size, input_size
        self.augment, self.shuffle, self.weights = augment, shuffle, weights
        self.video_weights = video_weights  # per video; wins over the per-label ``weights``
        self.cache_videos = max(2, cache_videos)
        self.pseudo = pseudo  # turns real faces into labelled pseudo-fakes (needs landmarks68)
        self._order = list(self.items)
        self._key: tuple[int, ...] = (0,)
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._mix: dict[int, dict[str, int]] = {}  # batch index -> faces of each kind fed

    def set_epoch(self, key: tuple[int, ...]) -> None:
        """Fix this epoch's order and augmentation from ``key``."""
        self._key = tuple(int(k) for k in key)
        self._mix = {}
        if self.shuffle:
            rng = np.random.default_rng(self._key)
            self._order = windowed_order(self.items, rng, max(1, self.cache_videos // 2))

    def __len__(self) -> int:
        return math.ceil(len(self._order) / self.batch_size)

    def ordered_items(self) -> list[tuple[str, int]]:
        """The (video_id, row) of each sample in the current epoch order."""
        return list(self._order)

    def epoch_mix(self) -> dict[str, float]:
        """Shares of real, labelled-fake and pseudo-fake faces fed so far this epoch."""
        with self._lock:
            batches = list(self._mix.values())
        return mix_shares({k: sum(b[k] for b in batches) for k in KINDS})

    def _faces(self, video_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(crops, landmarks68 or None) of a video, through the LRU cache."""
        with self._lock:
            if video_id in self._cache:
                self._cache.move_to_end(video_id)
                return self._cache[video_id]
        faces = self.store.read_faces(video_id)
        with self._lock:
            self._cache[video_id] = (faces.crops, faces.landmarks68)
            while len(self._cache) > self.cache_videos:
                self._cache.popitem(last=False)
        return faces.crops, faces.landmarks68

    def _sample(self, video_id: str, row: int, rng: np.random.Generator | None) -> tuple[np.ndarray, int, str]:
        """(model input, label, kind) of one face: kind is real, fake or pseudo_fake."""
        crops, points = self._faces(video_id)
        crop, label = crops[row], self.labels[video_id]
        kind = "fake" if label else "real"
        if self.pseudo is not None and rng is not None and label == 0:
            if points is None:
                raise ValueError(f"video {video_id} has no 68-point landmarks: re-run `dfd crop --force`")
            fake = self.pseudo(crop, points[row], rng)
            if fake is not None:
                crop, label, kind = fake, 1, "pseudo_fake"
        if self.augment and rng is not None:
            crop = augment_face(crop, rng)
        return resize_crop(crop, self.input_size), label, kind

    def __getitem__(self, index: int):
        batch = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        rng = np.random.default_rng(self._key + (index,)) if self.augment or self.pseudo else None
        samples = [self._sample(vid, row, rng) for vid, row in batch]
        x = np.stack([image for image, _, _ in samples]).astype(np.float32)
        y = np.array([label for _, label, _ in samples], np.float32)
        kinds = [kind for _, _, kind in samples]
        with self._lock:
            self._mix[index] = {k: kinds.count(k) for k in KINDS}
        if self.video_weights is not None:
            return x, y[:, None], np.array([self.video_weights[vid] for vid, _ in batch], np.float32)
        if self.weights is None:
            return x, y[:, None]
        w = np.array([self.weights[int(v)] for v in y], np.float32)
        return x, y[:, None], w


# ---------------------------------------------------------------------- devices
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
        raise ValueError(f"mixed_precision must be auto, on or off, not {mode!r}")
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
        import tensorflow as tf  # the only TensorFlow-specific line of the training code

        strategy = tf.distribute.MirroredStrategy().scope()
    try:
        if mixed:
            keras.config.set_dtype_policy("mixed_float16")
        with strategy:
            yield {"gpus": gpus, "mixed_precision": mixed, "mirrored_strategy": distributed}
    finally:
        keras.config.set_dtype_policy(previous)


# ---------------------------------------------------------------------- metrics
def safe_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, or NaN when only one class is present."""
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def log_loss(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities (unweighted)."""
    p = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def video_means(video_ids: list[str], scores: np.ndarray) -> dict[str, float]:
    """Mean frame score per video."""
    sums: dict[str, list[float]] = {}
    for vid, s in zip(video_ids, scores):
        sums.setdefault(vid, []).append(float(s))
    return {vid: float(np.mean(v)) for vid, v in sums.items()}


def evaluate_faces(model, dataset: FaceDataset) -> dict:
    """Frame-level val AUC and loss, and video-level AUC of the mean frame score."""
    scores = np.asarray(model.predict(dataset, verbose=0), np.float32).reshape(-1)
    items = dataset.ordered_items()
    labels = np.array([dataset.labels[vid] for vid, _ in items], np.float32)
    per_video = video_means([vid for vid, _ in items], scores)
    video_labels = np.array([dataset.labels[v] for v in per_video], np.float32)
    return {"val_auc": safe_auc(labels, scores), "val_loss": log_loss(labels, scores),
            "val_video_auc": safe_auc(video_labels, np.array(list(per_video.values())))}


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


def cnn_phases(options: CNNTrainOptions) -> list[Phase]:
    """Warm-up (optional), round 1, and rounds 2.. restarting from the best weights."""
    warmup = min(max(options.warmup_epochs, 0), options.epochs)
    phases = []
    if warmup:
        phases.append(Phase("warmup", 1, warmup, options.learning_rate, frozen=True))
    if options.epochs - warmup > 0:
        phases.append(Phase("round1", 1, options.epochs - warmup, options.learning_rate))
    for r in range(2, options.rounds + 1):
        phases.append(Phase(f"round{r}", r, options.epochs,
                            options.learning_rate * ROUND_LR_FACTOR ** (r - 1), start_from_best=True))
    return phases


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


def train_one_epoch(loop: Loop, index: int, state: dict) -> tuple[float, float]:
    """One pass over the training data; returns (loss, seconds)."""
    loop.train.set_epoch((loop.seed, index, state["phase_epoch"]))
    clock = time.perf_counter()
    history = loop.model.fit(loop.train, epochs=1, verbose=0)
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
    tmp = loop.final_weights.with_name(f".tmp{os.getpid()}.{loop.final_weights.name}")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, loop.final_weights)
    finally:
        tmp.unlink(missing_ok=True)


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


# ---------------------------------------------------------------------- train_cnn
def check_splits(store: Store, splits: dict[str, list[str]]) -> None:
    """Train and val must both hold real and fake videos."""
    for name in ("train", "val"):
        labels = {store.entry(v).label for v in splits[name]}
        if labels != {"real", "fake"}:
            raise ValueError(f"the {name} split needs real and fake videos with faces; it has "
                             f"{len(splits[name])} video(s) labelled {sorted(labels) or 'nothing'}. "
                             "Label more videos, or set the splits when extracting")


def usable_splits(store: Store, options: CNNTrainOptions) -> dict[str, list[str]]:
    """Train / val video ids that have faces (test ids are dropped: never used here)."""
    splits = training_splits(store.entries(), seed=options.seed, val_fraction=options.val_fraction)
    return {name: [v for v in splits[name] if store.has(v, "faces")] for name in ("train", "val")}


def frozen_batchnorm(options: CNNTrainOptions) -> bool:
    """Whether batch-norm statistics stay fixed while fine-tuning (auto: for pretrained weights)."""
    if options.batchnorm not in ("auto", "train", "frozen"):
        raise ValueError(f"batchnorm must be auto, train or frozen, not {options.batchnorm!r}")
    if options.batchnorm == "auto":
        return str(options.weights).lower() != "none"
    return options.batchnorm == "frozen"


def resolve_input_size(options: CNNTrainOptions) -> int:
    """The requested input size, or the backbone's native one."""
    from deepfake_cli.backbones import get_backbone

    return int(options.input_size or get_backbone(options.backbone).input_size)


def label_map(store: Store, video_ids: list[str]) -> dict[str, int]:
    """video_id -> 1 (fake) / 0 (real)."""
    return {v: int(store.entry(v).label == "fake") for v in video_ids}


def make_datasets(store: Store, splits: dict, options: CNNTrainOptions,
                  input_size: int) -> tuple[FaceDataset, FaceDataset, dict]:
    """Training (shuffled, augmented, class-weighted) and validation datasets."""
    labels = label_map(store, splits["train"] + splits["val"])
    train_items = index_faces(store, splits["train"], options.max_frames_per_video)
    val_items = index_faces(store, splits["val"], options.max_frames_per_video)
    if not train_items or not val_items:
        raise ValueError("no faces to train on: run `dfd extract` with face cropping first")
    pseudo = make_pseudo_fakes(options.pseudo_fakes, options.pseudo_ratio)
    if pseudo is not None:
        require_landmarks68(store, [v for v in splits["train"] if labels[v] == 0])
        weights = expected_class_weights(np.array([labels[v] for v, _ in train_items]), pseudo.ratio)
    else:
        weights = class_weights(np.array([labels[v] for v, _ in train_items]))
    video_weights = None
    if options.balance == "dataset":
        cell = {v: (store.entry(v).dataset, labels[v]) for v in splits["train"]}
        per_cell = cell_weights([cell[v] for v, _ in train_items])
        video_weights = {v: per_cell[c] for v, c in cell.items() if c in per_cell}
        weights = {k: float(np.mean([w for (_, label), w in per_cell.items() if label == k]))
                   for k in (0, 1)}  # recorded only: the per-cell weights are what trains
    loader = {"workers": max(1, options.workers), "use_multiprocessing": False}
    train = FaceDataset(store, train_items, labels, options.batch_size, input_size,
                        augment=options.augment, shuffle=True, weights=weights, video_weights=video_weights,
                        pseudo=pseudo, **loader)
    val = FaceDataset(store, val_items, labels, options.batch_size, input_size, **loader)
    return train, val, weights


def initial_config(store: Store, bundle_dir: Path, options: CNNTrainOptions, input_size: int,
                   feature_dim: int, splits: dict) -> BundleConfig:
    """The bundle config before training: model, face and sampling settings, data used."""
    first = store.entry(splits["train"][0])
    return BundleConfig(
        name=bundle_dir.name, backbone=options.backbone, input_size=input_size, feature_dim=feature_dim,
        weights_origin=options.weights, face=store.faces_settings(first.video_id), fpv=int(first.fpv),
        sampling=first.sampling, head_dropout=options.dropout,
        lstm={"units": 128, "dropout": 0.3, "seq_len": int(first.fpv), "feature_model": bundle_dir.name,
              "trained": False},
        split_ids={"train": list(splits["train"]), "val": list(splits["val"])},
        dfd_version=dfd_version(), keras_backend=keras_backend())


def training_description(store: Store, splits: dict, train: FaceDataset, val: FaceDataset,
                         weights: dict, options: CNNTrainOptions, device: dict) -> dict:
    """The `training` section of config.json."""
    def count(ids):
        labels = [store.entry(v).label for v in ids]
        return {"videos": len(ids), "real": labels.count("real"), "fake": labels.count("fake")}

    return {"store": str(store.path), "train": {**count(splits["train"]), "faces": len(train.items)},
            "val": {**count(splits["val"]), "faces": len(val.items)},
            "datasets": sorted({store.entry(v).dataset for v in splits["train"]}),
            "class_weights": {"real": weights[0], "fake": weights[1]},
            "cnn_options": asdict(options), "device": device, "pseudo_fakes": describe(train.pseudo),
            "schedule": (f"round r: fresh Adam at learning_rate * {ROUND_LR_FACTOR}**(r-1); rounds >= 2 "
                         "restart from the best weights; warm-up epochs train the head only"),
            "early_stopping": f"validation frame AUC, patience {options.patience}",
            "batchnorm": ("frozen: pretrained statistics, inference mode while fine-tuning"
                          if frozen_batchnorm(options) else "trained (batch statistics)")}


def record_command(config: BundleConfig, step: str, command: str | None) -> None:
    """Append the command line that ran a step."""
    # the program's name, not its install path: the record must read the same on every machine
    argv = ["dfd", *sys.argv[1:]]  # also when run as `python -m deepfake_cli`
    config.commands.append({"step": step, "command": command or shlex.join(argv), "at": now_iso()})


def cnn_metrics(state: dict) -> dict:
    """The `metrics.cnn` section: the best epoch's validation metrics."""
    best = state.get("best") or {}
    return {k: best[k] for k in best if k.startswith("val_") or k in ("round", "epoch")} | {
        "epochs_run": len(state["history"])}


def images_per_second(state: dict) -> float:
    """Median training throughput over epochs (robust to the first epoch's graph tracing)."""
    rates = [r["images_per_second"] for r in state["history"] if r.get("images_per_second")]
    return float(np.median(rates)) if rates else 0.0


def cnn_summary(bundle_dir: Path, state: dict, config: BundleConfig, resumed_at: int | None) -> dict:
    """What train_cnn returns."""
    best = state.get("best") or {}
    seconds = state["train_seconds"]
    return {"bundle": str(bundle_dir), "backbone": config.backbone, "input_size": config.input_size,
            "train_videos": config.training["train"]["videos"], "val_videos": config.training["val"]["videos"],
            "train_faces": config.training["train"]["faces"], "val_faces": config.training["val"]["faces"],
            "rounds": max([r["round"] for r in state["history"]], default=0),
            "epochs_run": len(state["history"]), "best_val_auc": best.get("val_auc", float("nan")),
            "best_val_video_auc": best.get("val_video_auc", float("nan")),
            "best_round": best.get("round", 0), "best_epoch": best.get("epoch", 0),
            "images_per_second": images_per_second(state),
            "images_per_second_overall": state["train_images"] / seconds if seconds > 0 else 0.0,
            "resumed_from_epoch": resumed_at, "stopped_early": state.get("stopped_early", []),
            "weights": str(bundle_dir / CNN_WEIGHTS), "history": state["history"]}


def prepare_state(checkpoints: Checkpoints, resume: bool, kind: str, options,
                  splits_fn: Callable[[], dict]) -> tuple[dict, object, int | None]:
    """(state, options, resumed_at_epoch): the checkpoint's when resuming, else fresh ones.

    When resuming, the checkpoint's options win (the run continues as it was started);
    without a checkpoint to resume, a fresh run starts. A fresh run touches nothing on disk
    here: the caller calls :func:`start_fresh` once its inputs and model are known to be good,
    so that a run that fails early (bad option, no faces, weights offline) leaves the bundle
    as it was.
    """
    state = checkpoints.load() if resume else None
    if state is not None and state.get("kind") == kind:
        checkpoints.prune(state)
        known = {f.name for f in fields(type(options))}
        saved = type(options)(**{k: v for k, v in state["options"].items() if k in known})
        return state, saved, len(state["history"])
    return new_state(kind, asdict(options), splits_fn()), options, None


def start_fresh(checkpoints: Checkpoints, bundle_dir: Path | None = None) -> None:
    """Delete an earlier run's checkpoints; with ``bundle_dir`` (a new CNN) also its LSTM and
    the LSTM's checkpoints, which a new CNN makes meaningless."""
    checkpoints.clear()
    if bundle_dir is not None:
        shutil.rmtree(bundle_dir / CHECKPOINT_DIR / "lstm", ignore_errors=True)
        (bundle_dir / LSTM_WEIGHTS).unlink(missing_ok=True)


def cnn_config(store: Store, bundle_dir: Path, options: CNNTrainOptions, resumed: bool, input_size: int,
               feature_dim: int, splits: dict) -> BundleConfig:
    """The bundle config at the start of a run: the existing one when resuming."""
    if resumed and (bundle_dir / CONFIG_FILE).is_file():
        return read_config(bundle_dir)
    return initial_config(store, bundle_dir, options, input_size, feature_dim, splits)


def train_cnn(store: Store, bundle_dir: Path, options: CNNTrainOptions, resume: bool = False,
              on_epoch: Callable[[dict], None] | None = None, command: str | None = None) -> dict:
    """Train the frame classifier into ``bundle_dir``; returns a summary (see module doc)."""
    bundle_dir = Path(bundle_dir)
    checkpoints = Checkpoints(bundle_dir / CHECKPOINT_DIR / CNN_CHECKPOINTS)
    state, options, resumed_at = prepare_state(checkpoints, resume, "cnn", options,
                                               lambda: usable_splits(store, options))
    splits = state["splits"]
    check_splits(store, splits)
    input_size = resolve_input_size(options)
    train, val, weights = make_datasets(store, splits, options, input_size)
    seed_everything(options.seed)
    with accelerator_scope(options.mixed_precision) as device:
        classifier, feature_model = build_classifier(options.backbone, input_size, options.weights,
                                                     options.dropout)
        config = cnn_config(store, bundle_dir, options, resumed_at is not None, input_size,
                            int(feature_model.outputs[0].shape[-1]), splits)
        config.training = training_description(store, splits, train, val, weights, options, device)
        record_command(config, "train-cnn" + (" --resume" if resumed_at is not None else ""), command)
        if resumed_at is None:
            start_fresh(checkpoints, bundle_dir)
        save_config(bundle_dir, config)
        loop = Loop(model=classifier, train=train, evaluate=lambda m: evaluate_faces(m, val),
                    checkpoints=checkpoints, final_weights=bundle_dir / CNN_WEIGHTS,
                    tag=weights_tag("cnn", config), patience=options.patience, seed=options.seed,
                    on_epoch=on_epoch,
                    trainable=partial(set_backbone_trainable, freeze_batchnorm=frozen_batchnorm(options)))
        if not state["done"]:
            state = run_phases(loop, cnn_phases(options), state)
    config.metrics["cnn"] = cnn_metrics(state)
    config.training["images_per_second"] = images_per_second(state)
    save_config(bundle_dir, config)
    return cnn_summary(bundle_dir, state, config, resumed_at)
