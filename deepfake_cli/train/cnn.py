"""Train the frame classifier: a Keras backbone transfer-learned on stored face crops.

The reference recipe, on a bundle directory:

* faces of the train-split videos train the model, faces of the val-split videos pick the
  best epoch (validation AUC); test videos are never read. Labels: 1 = fake, 0 = real; the
  class imbalance (FF++ here is about 1 real : 3 fake) is evened out with per-sample class weights;
* every training video must have been extracted (frames per video, sampling) and cropped
  (size, alignment, margin, detector) alike: the bundle records those settings for serving.
* an optional warm-up trains only the head with the backbone frozen, then every layer trains;
* round 1 starts from the chosen weights; every further round restarts from the best
  weights so far with a fresh Adam optimizer and the learning rate times 0.1 per round;
* early stopping on validation AUC with ``patience`` (per round); the best model ends up in ``cnn.weights.h5``;
* every epoch writes a checkpoint (weights, optimizer state, loop state) so that
  ``resume=True`` continues a killed run from its last completed epoch.

The epoch loop, checkpoints and resume are deepfake_cli.train.loop's (shared with the LSTM);
seeds, devices (one machine, several of its GPUs together) and mixed precision are
deepfake_cli.train.runtime's. Models use only the public Keras 3 API, so any Keras backend
runs this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from deepfake_cli.nets.bundle import (CHECKPOINT_DIR, CNN_CHECKPOINTS, CNN_WEIGHTS, CONFIG_FILE, INPUTS, LSTM_CHECKPOINTS,
                                 LSTM_WEIGHTS, BundleConfig, dfd_version, keras_backend, read_config,
                                 record_weights_hashes, save_config, weights_tag)
from deepfake_cli.errors import OptionsError
from deepfake_cli.train.face_dataset import FaceDataset, cache_size, index_faces
from deepfake_cli.train.validation import evaluate_faces, face_metrics
from deepfake_cli.data.inputs import has_images
from deepfake_cli.nets.models import LSTM_DROPOUT, LSTM_UNITS, build_classifier, set_backbone_trainable
from deepfake_cli.train.runtime import accelerator_scope, seed_everything, use_mixed_precision
from deepfake_cli.train.torch_cnn import TorchRun, check_options as check_torch_options, distributed, train_torch
from deepfake_cli.train.pseudo import (check_options, describe, expected_class_weights, make_pseudo_fakes,
                                 require_landmarks68)
from deepfake_cli.data.splits import group_key, training_splits
from deepfake_cli.data.store import Store
from deepfake_cli.train import TrainingDataError
from deepfake_cli.train.loop import (Checkpoints, Loop, Phase, cell_weights, class_weights, prepare_state,
                                   record_command, run_phases, start_fresh)

ROUND_LR_FACTOR = 0.1  # round r trains with learning_rate * ROUND_LR_FACTOR ** (r - 1)


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
    sampling: str = "weights"  # weights: the balance weighs the loss | balanced: it sets how often faces are drawn
    shift_augment: bool = False  # also downscale-upscale and noise faces (augment.py), with --augment
    pseudo_fakes: str = "none"  # none | sbi: real training faces become self-blended fakes (pseudo.py)
    pseudo_ratio: float = 0.5  # the probability that a drawn real face becomes a pseudo-fake
    test_time_flip: bool = False  # the bundle scores each face and its mirror (scoring.py); so does validation
    input: str = "face"  # face: the stored face crops | frame: the stored frames, letterboxed (inputs.py)
    bootstrap: int = 0  # k > 0: bagging member k, trained on a bootstrap resample of the train identity groups
    engine: str = "keras"  # keras: Keras fit (any backend) | torch: a PyTorch loop, Lite backbones (torch_cnn.py)
    freeze_blocks: int = 0  # torch engine: the stem and the first N blocks keep their ImageNet weights

    def __post_init__(self) -> None:
        """Refuse bad settings before anything is read or written."""
        frozen_batchnorm(self)
        use_mixed_precision(self.mixed_precision, 0)
        check_options(self.pseudo_fakes, self.pseudo_ratio)
        if self.balance not in ("label", "dataset"):
            raise OptionsError(f"balance must be label or dataset, not {self.balance!r}")
        if self.sampling not in ("weights", "balanced"):
            raise OptionsError(f"sampling must be weights or balanced, not {self.sampling!r}")
        if self.input not in INPUTS:
            raise OptionsError(f"input must be one of {', '.join(INPUTS)}, not {self.input!r}")
        if self.input == "frame" and self.pseudo_fakes != "none":
            raise OptionsError("--pseudo-fakes blends faces by their landmarks: it needs --input face")
        if self.engine not in ("keras", "torch"):
            raise OptionsError(f"engine must be keras or torch, not {self.engine!r}")
        if self.engine == "torch":
            check_torch_options(self.backbone, self.weights, self.freeze_blocks)
        elif self.freeze_blocks:
            raise OptionsError("--freeze-blocks needs --engine torch")
        if self.bootstrap < 0:
            raise OptionsError("bootstrap must be 0 (none) or a bagging member number")


# ---------------------------------------------------------------------- schedule
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


# ---------------------------------------------------------------------- train_cnn
def check_splits(store: Store, splits: dict[str, list[str]]) -> None:
    """Train and val must both hold real and fake videos."""
    for name in ("train", "val"):
        labels = {store.entry(v).label for v in splits[name]}
        if labels != {"real", "fake"}:
            raise TrainingDataError(f"the {name} split needs real and fake videos with faces; it has "
                                    f"{len(splits[name])} video(s) labelled {sorted(labels) or 'nothing'}. "
                                    "Label more videos, or set the splits when extracting")


def usable_splits(store: Store, options: CNNTrainOptions,
                  splits: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Train / val video ids that have what the model reads (faces, or frames); test ids are
    dropped (never used here). ``splits`` (train and val ids, e.g. a cross-validation fold's)
    replaces the store's recorded splits. A bagging member's train list is its bootstrap resample."""
    if splits is None:
        splits = training_splits(store.entries(), seed=options.seed, val_fraction=options.val_fraction)
    usable = {name: [v for v in splits[name] if has_images(store, v, options.input)] for name in ("train", "val")}
    if options.bootstrap:
        usable["train"] = bootstrap_groups(store, usable["train"], seed=options.seed, member=options.bootstrap)
    return usable


def bootstrap_groups(store: Store, video_ids: list[str], seed: int, member: int) -> list[str]:
    """A bootstrap resample of identity groups (never of frames or videos, which would put one
    person on both sides of a comparison): as many groups as there are, drawn with replacement,
    each bringing all its videos; a group drawn twice is listed twice (it weighs double).
    Real and fake are drawn separately, so every member sees both."""
    groups: dict[tuple[str, str], list[str]] = {}
    for vid in video_ids:
        entry = store.entry(vid)
        groups.setdefault((entry.label, group_key(entry)), []).append(vid)
    rng = np.random.default_rng((seed, member))
    resample: list[str] = []
    for label in ("real", "fake"):
        keys = sorted(k for k in groups if k[0] == label)
        drawn = rng.integers(0, len(keys), len(keys)) if keys else []
        for i in sorted(drawn):
            resample.extend(groups[keys[i]])
    return resample


def frozen_batchnorm(options: CNNTrainOptions) -> bool:
    """Whether batch-norm statistics stay fixed while fine-tuning (auto: for pretrained weights)."""
    if options.batchnorm not in ("auto", "train", "frozen"):
        raise OptionsError(f"batchnorm must be auto, train or frozen, not {options.batchnorm!r}")
    if options.batchnorm == "auto":
        return str(options.weights).lower() != "none"
    return options.batchnorm == "frozen"


def resolve_input_size(options: CNNTrainOptions) -> int:
    """The requested input size, or the backbone's native one."""
    from deepfake_cli.nets.backbones import get_backbone

    return int(options.input_size or get_backbone(options.backbone).input_size)


def label_map(store: Store, video_ids: list[str]) -> dict[str, int]:
    """video_id -> 1 (fake) / 0 (real)."""
    return {v: int(store.entry(v).label == "fake") for v in video_ids}


def make_datasets(store: Store, splits: dict, options: CNNTrainOptions,
                  input_size: int) -> tuple[FaceDataset, FaceDataset, dict]:
    """Training (shuffled, augmented, class-weighted) and validation datasets."""
    labels = label_map(store, splits["train"] + splits["val"])
    train_items = index_faces(store, splits["train"], options.max_frames_per_video, options.input)
    val_items = index_faces(store, splits["val"], options.max_frames_per_video, options.input)
    if not train_items or not val_items:
        raise TrainingDataError("no faces to train on: run `dfd crop` first" if options.input == "face" else
                                "no frames to train on: run `dfd extract` first")
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
    draw = None
    if options.sampling == "balanced":  # the same balance, by how often each face is drawn
        per_face = np.array([video_weights[v] if video_weights is not None else weights[labels[v]]
                             for v, _ in train_items], np.float64)
        draw, video_weights = per_face / per_face.sum(), None
    train = FaceDataset(store, train_items, labels, options.batch_size, input_size,
                        augment=options.augment, shuffle=True, weights=weights, video_weights=video_weights,
                        draw=draw, shift_augment=options.shift_augment, pseudo=pseudo, input_kind=options.input,
                        cache_videos=cache_size(store, splits["train"], options.input, input_size), **loader)
    val = FaceDataset(store, val_items, labels, options.batch_size, input_size, input_kind=options.input, **loader)
    return train, val, weights


SAME_FACES = ("size", "align", "margin", "detector")  # what makes a crop; train-lstm compares the same


def training_settings(store: Store, video_ids: list[str], input_kind: str) -> tuple[int, str, dict]:
    """(frames per video, sampling, face settings) that every training video shares.

    Images (one frame) have no sampling and are left out of that comparison; with no video of
    several frames, the first video's values are taken. A mix is refused, naming two videos
    that differ: the bundle records one of each for `predict` to sample and crop clips alike.
    """
    ids = list(dict.fromkeys(video_ids))
    first = store.entry(ids[0])
    sampled, cropped = None, None  # (entry, its settings) of the first video with each
    for vid in ids:
        entry = store.entry(vid)
        if entry.frame_count > 1 and entry.fpv > 0 and entry.sampling:
            sampling = {"fpv": int(entry.fpv), "sampling": entry.sampling}
            sampled = sampled or (entry, sampling)
            refuse_mix("extracted", sampled, (entry, sampling), "extract them again with one --fpv and --sampling")
        if input_kind == "face":
            settings = store.faces_settings(vid)
            cropped = cropped or (entry, settings)
            shared = [k for k in SAME_FACES if k in settings and k in cropped[1]]  # an older store may lack one
            refuse_mix("cropped", (cropped[0], {k: cropped[1][k] for k in shared}),
                       (entry, {k: settings[k] for k in shared}), "crop them again alike (`dfd crop --force`)")
    fpv, sampling = (sampled[1]["fpv"], sampled[1]["sampling"]) if sampled else (int(first.fpv), first.sampling)
    return fpv, sampling, (cropped[1] if cropped else {})


def refuse_mix(made: str, seen: tuple, this: tuple, fix: str) -> None:
    """A TrainingDataError naming both videos when their settings (entry, dict) differ."""
    differing = [k for k in seen[1] if seen[1][k] != this[1].get(k)]
    if differing:
        def show(settings: dict) -> str:
            return ", ".join(f"{k} {settings.get(k)}" for k in differing)

        raise TrainingDataError(f"the training videos were not all {made} alike: {seen[0].path} has {show(seen[1])}, "
                                f"{this[0].path} has {show(this[1])}; {fix}, or train on one kind")


def initial_config(bundle_dir: Path, options: CNNTrainOptions, input_size: int, feature_dim: int, splits: dict,
                   settings: tuple[int, str, dict]) -> BundleConfig:
    """The bundle config before training: model, face and sampling settings (``settings``, from
    :func:`training_settings`), data used."""
    fpv, sampling, face = settings
    return BundleConfig(
        name=bundle_dir.name, backbone=options.backbone, input_size=input_size, feature_dim=feature_dim,
        weights_origin=options.weights, input=options.input, face=face, fpv=fpv,
        sampling=sampling, head_dropout=options.dropout, test_time_flip=bool(options.test_time_flip),
        lstm={"units": LSTM_UNITS, "dropout": LSTM_DROPOUT, "seq_len": fpv, "feature_model": bundle_dir.name,
              "trained": False},
        split_ids={"train": list(dict.fromkeys(splits["train"])), "val": list(splits["val"])},
        dfd_version=dfd_version(), keras_backend=keras_backend())


def training_description(store: Store, splits: dict, train: FaceDataset, val: FaceDataset,
                         weights: dict, options: CNNTrainOptions, device: dict) -> dict:
    """The `training` section of config.json."""
    def count(ids):
        labels = [store.entry(v).label for v in ids]
        return {"videos": len(ids), "real": labels.count("real"), "fake": labels.count("fake")}

    return {"store": str(store.path), "train": {**count(splits["train"]), "faces": len(train.items)},
            "input": options.input,
            "bootstrap": (f"member {options.bootstrap}: identity groups resampled with replacement "
                          f"({len(set(splits['train']))} distinct of the train videos)") if options.bootstrap else "none",
            "val": {**count(splits["val"]), "faces": len(val.items)},
            "datasets": sorted({store.entry(v).dataset for v in splits["train"]}),
            "class_weights": {"real": weights[0], "fake": weights[1]},
            "cnn_options": asdict(options), "device": device, "pseudo_fakes": describe(train.pseudo),
            "schedule": (f"round r: fresh Adam at learning_rate * {ROUND_LR_FACTOR}**(r-1); rounds >= 2 "
                         "restart from the best weights; warm-up epochs train the head only"),
            "early_stopping": f"validation frame AUC, patience {options.patience}",
            "batchnorm": ("frozen: pretrained statistics, inference mode while fine-tuning"
                          if frozen_batchnorm(options) else "trained (batch statistics)")}


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


def run_chief(options: CNNTrainOptions) -> bool:
    """True for the process that writes the bundle: the one, or torchrun's rank 0 (PyTorch engine)."""
    return options.engine == "keras" or distributed().chief


def train_with_torch(classifier, config: BundleConfig, bundle_dir: Path, checkpoints: Checkpoints, train: FaceDataset,
                     val: FaceDataset, options: CNNTrainOptions, state: dict, input_size: int, on_epoch) -> dict:
    """The PyTorch engine's run of the same phases, data and checkpoints (train/torch_cnn.py)."""
    run = TorchRun(train=train, val=val, evaluate=partial(face_metrics, val), checkpoints=checkpoints,
                   patience=options.patience, seed=options.seed, flip=bool(options.test_time_flip),
                   frozen_batchnorm=frozen_batchnorm(options), mixed_precision=options.mixed_precision,
                   workers=max(1, options.workers), freeze_blocks=options.freeze_blocks, on_epoch=on_epoch)
    return train_torch(classifier, run, cnn_phases(options), state, options, input_size,
                       bundle_dir / CNN_WEIGHTS, weights_tag("cnn", config))


def cnn_config(bundle_dir: Path, options: CNNTrainOptions, resumed: bool, input_size: int, feature_dim: int,
               splits: dict, settings: tuple[int, str, dict]) -> BundleConfig:
    """The bundle config at the start of a run: the existing one when resuming."""
    if resumed and (bundle_dir / CONFIG_FILE).is_file():
        return read_config(bundle_dir)
    return initial_config(bundle_dir, options, input_size, feature_dim, splits, settings)


def train_cnn(store: Store, bundle_dir: Path, options: CNNTrainOptions, resume: bool = False,
              on_epoch: Callable[[dict], None] | None = None, command: str | None = None,
              splits: dict[str, list[str]] | None = None) -> dict:
    """Train the frame classifier into ``bundle_dir``; returns a summary (see module doc).
    ``splits`` ({"train": ids, "val": ids}) overrides the store's splits (cross-validation)."""
    bundle_dir = Path(bundle_dir)
    checkpoints = Checkpoints(bundle_dir / CHECKPOINT_DIR / CNN_CHECKPOINTS)
    state, options, resumed_at = prepare_state(checkpoints, resume, "cnn", options,
                                               lambda: usable_splits(store, options, splits))
    splits = state["splits"]
    check_splits(store, splits)
    settings = training_settings(store, splits["train"], options.input)  # a mix is refused here
    input_size = resolve_input_size(options)
    train, val, weights = make_datasets(store, splits, options, input_size)
    seed_everything(options.seed)
    with accelerator_scope(options.mixed_precision) as device:
        classifier, feature_model = build_classifier(  # the PyTorch engine ports its own weights in
            options.backbone, input_size, "none" if options.engine == "torch" else options.weights, options.dropout)
        config = cnn_config(bundle_dir, options, resumed_at is not None, input_size,
                            int(feature_model.outputs[0].shape[-1]), splits, settings)
        config.training = training_description(store, splits, train, val, weights, options, device)
        record_command(config, "train-cnn" + (" --resume" if resumed_at is not None else ""), command)
        chief = run_chief(options)  # under torchrun only rank 0 writes
        if resumed_at is None and chief:
            start_fresh(checkpoints, [bundle_dir / CHECKPOINT_DIR / LSTM_CHECKPOINTS, bundle_dir / LSTM_WEIGHTS])
        if chief:
            save_config(bundle_dir, config)
        if options.engine == "torch":
            state = train_with_torch(classifier, config, bundle_dir, checkpoints, train, val, options, state,
                                     input_size, on_epoch)
        loop = Loop(model=classifier, train=train,
                    evaluate=lambda m: evaluate_faces(m, val, bool(options.test_time_flip)),
                    checkpoints=checkpoints, final_weights=bundle_dir / CNN_WEIGHTS,
                    tag=weights_tag("cnn", config), patience=options.patience, seed=options.seed,
                    on_epoch=on_epoch,
                    trainable=partial(set_backbone_trainable, freeze_batchnorm=frozen_batchnorm(options)))
        if not state["done"]:  # (done already when the PyTorch engine trained)
            state = run_phases(loop, cnn_phases(options), state)
    config.metrics["cnn"] = cnn_metrics(state)
    config.training["images_per_second"] = images_per_second(state)
    config.training["processes"] = state.get("processes", 1)
    if chief:
        record_weights_hashes(config, bundle_dir)
        save_config(bundle_dir, config)
    return cnn_summary(bundle_dir, state, config, resumed_at)
