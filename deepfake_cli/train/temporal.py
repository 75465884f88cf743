"""Per-frame CNN features into the store, and the bidirectional LSTM over them.

``export_features`` runs a bundle's feature model over every video's face sequence (in
frame order, through deepfake_cli.scoring.scorer, exactly as `predict` does) and stores (n, D)
features plus per-frame scores under the model's name. ``train_lstm`` learns P(fake) of a
video from that sequence, on the same train / val videos the CNN was trained with (recorded
in the bundle), with early stopping on val AUC and per-epoch checkpoints: the loop of
deepfake_cli.train.loop, which the CNN uses too. The trained bundle is then calibrated on the
same val videos (deepfake_cli.train.calibrate), so its config.json is complete for `predict`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from deepfake_cli.nets.bundle import (CHECKPOINT_DIR, LSTM_CHECKPOINTS, LSTM_WEIGHTS, Bundle, load_bundle,
                                 record_weights_hashes, save_config, weights_tag)
from deepfake_cli.train.calibrate import calibrate_bundle
from deepfake_cli.errors import DfdError, OptionsError
from deepfake_cli.data.inputs import STAGE, has_images, stored_images
from deepfake_cli.scoring.metrics import log_loss, safe_auc
from deepfake_cli.nets.models import LSTM_DROPOUT, LSTM_UNITS, build_lstm_model, pad_sequence
from deepfake_cli.progress import Reporter
from deepfake_cli.train.pseudo import check_options, mix_shares
from deepfake_cli.train.pseudo_clips import pseudo_fake_clips
from deepfake_cli.train.runtime import seed_everything
from deepfake_cli.scoring.scorer import Scorer
from deepfake_cli.scoring.stored_scores import (bundle_role, check_features_current, export_settings, same_features,
                                               video_export_settings)
from deepfake_cli.data.shards import Shard
from deepfake_cli.data.store import DamagedSegmentError, Features, Store
from deepfake_cli.train.loop import (Checkpoints, Loop, Phase, class_weights, prepare_state, record_command, run_phases,
                                   start_fresh)


class SequenceDataError(DfdError):
    """The store holds no sequences the LSTM can learn from as the bundle would serve them."""


@dataclass
class LSTMTrainOptions:
    """Settings of one `train_lstm` run."""

    units: int = LSTM_UNITS
    dropout: float = LSTM_DROPOUT
    epochs: int = 30
    patience: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    seq_len: int | None = None  # default: the bundle's frames per video
    features_model: str | None = None  # stored features to use; default: the bundle's
    pseudo_fakes: str = "none"  # none | sbi: real training clips become self-blended fake clips (pseudo_clips.py)
    pseudo_ratio: float = 0.5  # the probability that a real training clip becomes one

    def __post_init__(self):
        check_options(self.pseudo_fakes, self.pseudo_ratio)


# ---------------------------------------------------------------------- sequences
class SequenceDataset(keras.utils.PyDataset):
    """Batches of padded feature sequences read from the store one batch at a time (and from
    ``pseudo``, the features of pseudo-fake clips, which are kept in memory)."""

    def __init__(self, store: Store, video_ids: list[str], labels: dict[str, int], model_name: str,
                 seq_len: int, batch_size: int, *, shuffle: bool = False,
                 weights: dict[int, float] | None = None, pseudo: dict[str, np.ndarray] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.store, self.items, self.labels = store, list(video_ids), labels
        self.model_name, self.seq_len, self.batch_size = model_name, seq_len, batch_size
        self.shuffle, self.weights, self.pseudo = shuffle, weights, pseudo or {}
        self._order = list(self.items)

    def set_epoch(self, key: tuple[int, ...]) -> None:
        """Fix this epoch's order from ``key``."""
        if self.shuffle:
            self._order = list(self.items)
            np.random.default_rng(tuple(int(k) for k in key)).shuffle(self._order)

    def ordered_items(self) -> list[str]:
        return list(self._order)

    def __len__(self) -> int:
        return math.ceil(len(self._order) / self.batch_size)

    def __getitem__(self, index: int):
        batch = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        x = np.stack([pad_sequence(self.pseudo[v] if v in self.pseudo else
                                   self.store.read_features(v, self.model_name).features, self.seq_len)
                      for v in batch])
        y = np.array([self.labels[v] for v in batch], np.float32)
        if self.weights is None:
            return x, y[:, None]
        return x, y[:, None], np.array([self.weights[int(v)] for v in y], np.float32)


def evaluate_sequences(model, dataset: SequenceDataset) -> dict:
    """Video-level validation AUC and loss."""
    scores = np.asarray(model.predict(dataset, verbose=0), np.float32).reshape(-1)
    labels = np.array([dataset.labels[v] for v in dataset.ordered_items()], np.float32)
    return {"val_auc": safe_auc(labels, scores), "val_loss": log_loss(labels, scores)}


# ---------------------------------------------------------------------- export
def export_targets(store: Store, model_name: str, settings: Callable[[str], dict], force: bool, counts: dict,
                   input_kind: str = "face") -> list[str]:
    """Video ids to export; counts the ones left out by reason.

    Features of another version of the CNN (a retrained bundle), of another test-time flip
    setting or of other frames are recomputed ("stale"); ``settings(video_id)``: what they should be.
    """
    todo = []
    for entry in store.entries():
        vid = entry.video_id
        if not entry.ok:
            counts["failed"] += 1
        elif not has_images(store, vid, input_kind):
            counts["missing_faces"] += 1
        elif store.has(vid, f"features.{model_name}") and not force:
            if same_features(store.features_settings(vid, model_name), settings(vid)):
                counts["skipped"] += 1
            else:
                counts["stale"] += 1
                todo.append(vid)
        else:
            todo.append(vid)
    return todo


def export_features(store: Store, bundle_dir: Path, model_name: str | None = None, batch_size: int = 32,
                    on_video: Callable[[str], None] | None = None, force: bool = False,
                    reporter: Reporter | None = None, shard: Shard | None = None) -> dict:
    """Store features and per-frame scores of every face sequence (resumable; see module doc)."""
    bundle = load_bundle(bundle_dir)
    name = model_name or bundle.feature_model_name
    scorer = Scorer(bundle, lstm=False, batch_size=batch_size)
    reporter = reporter or Reporter()
    counts = {"exported": 0, "skipped": 0, "stale": 0, "no_faces": 0, "missing_faces": 0, "failed": 0,
              "damaged": 0, "faces": 0}
    settings = export_settings(bundle)
    kind = bundle.config.input
    def video_settings(vid: str) -> dict:
        return video_export_settings(store, vid, bundle, settings)

    todo = export_targets(store, name, video_settings, force, counts, kind)
    if shard is not None:
        todo = [vid for vid in todo if shard.holds(vid)]
    reporter.start(len(todo), "features")
    for vid in todo:
        try:
            indices, crops = stored_images(store, vid, kind, int(bundle.config.input_size),
                                           role=bundle_role(store, vid, bundle))
        except DamagedSegmentError as exc:
            counts["damaged"] += 1
            reporter.warn(f"{store.entry(vid).path}: its {STAGE[kind]} in {exc.segment} are damaged ({exc.reason}); "
                          f"dropped them: run `dfd {'crop' if kind == 'face' else 'extract'}` again to redo this video")
            store.drop_segment(vid, STAGE[kind])
            reporter.advance(vid)
            continue
        if len(crops):
            feats, scores = scorer.frames(crops)
            store.write_features(vid, name, Features(indices, feats, scores, settings=video_settings(vid)))
            counts["exported"] += 1
            counts["faces"] += len(crops)
        else:
            counts["no_faces"] += 1
        reporter.advance(vid)
        if on_video is not None:
            on_video(vid)
    reporter.finish()
    store.commit()
    return {"model": name, "bundle": str(bundle_dir), "feature_dim": bundle.config.feature_dim, **counts}


# ---------------------------------------------------------------------- train_lstm
def lstm_splits(store: Store, bundle: Bundle, model_name: str) -> dict[str, list[str]]:
    """The CNN's train / val videos that have stored features of ``model_name``; features of an
    older CNN than the bundle's are refused (stored_scores.check_features_current)."""
    recorded = bundle.config.split_ids
    if not recorded.get("train") or not recorded.get("val"):
        raise SequenceDataError(f"bundle {bundle.path} records no train/val videos: train its CNN first")
    stage = f"features.{model_name}"
    splits = {s: [v for v in recorded[s] if store.has(v, stage)] for s in ("train", "val")}
    for s in ("train", "val"):
        labels = {store.entry(v).label for v in splits[s]}
        if labels != {"real", "fake"}:
            raise SequenceDataError(f"the {s} videos with features of {model_name!r} are labelled "
                                    f"{sorted(labels) or 'nothing'}; run `dfd export-features` first")
    check_features_current(store, bundle, splits["train"] + splits["val"], model_name)
    return splits


def sequence_labels(store: Store, video_ids: list[str]) -> dict[str, int]:
    """1 for a labelled fake, 0 for a real clip."""
    return {v: int(store.entry(v).label == "fake") for v in video_ids}


def lstm_datasets(store: Store, splits: dict, model_name: str, seq_len: int, options: LSTMTrainOptions,
                  pseudo: dict[str, np.ndarray] | None = None) -> tuple[SequenceDataset, SequenceDataset]:
    """Training (shuffled, class-weighted, with the pseudo-fake clips labelled fake) and
    validation sequence datasets."""
    pseudo = pseudo or {}
    labels = sequence_labels(store, splits["train"] + splits["val"]) | {key: 1 for key in pseudo}
    items = splits["train"] + sorted(pseudo)
    weights = class_weights(np.array([labels[v] for v in items]))
    train = SequenceDataset(store, items, labels, model_name, seq_len, options.batch_size,
                            shuffle=True, weights=weights, pseudo=pseudo)
    val = SequenceDataset(store, splits["val"], labels, model_name, seq_len, options.batch_size)
    return train, val


def lstm_pseudo_fakes(store: Store, bundle: Bundle, train_ids: list[str], options: LSTMTrainOptions,
                      reporter: Reporter | None = None) -> dict[str, np.ndarray]:
    """The features of the run's pseudo-fake clips ({} for ``--pseudo-fakes none``)."""
    if options.pseudo_fakes == "none":
        return {}
    if bundle.config.input != "face":
        raise OptionsError("--pseudo-fakes blends faces by their landmarks: the bundle's CNN reads whole frames")
    return pseudo_fake_clips(store, Scorer(bundle, lstm=False), train_ids, sequence_labels(store, train_ids),
                             options.pseudo_ratio, options.seed, reporter)


def training_mix(train: SequenceDataset) -> dict[str, float]:
    """Shares of real, labelled-fake and pseudo-fake clips among the training sequences."""
    kinds = ["pseudo_fake" if v in train.pseudo else ("fake" if train.labels[v] else "real") for v in train.items]
    return mix_shares({kind: kinds.count(kind) for kind in set(kinds)})


def lstm_config(config, options: LSTMTrainOptions, model_name: str, seq_len: int, counts: dict) -> None:
    """Record the LSTM settings (not trained yet) in the bundle config."""
    config.lstm = {"units": options.units, "dropout": options.dropout, "seq_len": seq_len,
                   "feature_model": model_name, "trained": False}
    config.training["lstm_options"] = asdict(options)
    config.training["lstm_data"] = counts


def lstm_results(config, state: dict) -> dict:
    """Mark the LSTM trained and record its best validation metrics; returns the best epoch."""
    best = state.get("best") or {}
    config.lstm["trained"] = bool(best)
    config.metrics["lstm"] = {k: best[k] for k in best if k.startswith("val_") or k == "epoch"} | {
        "epochs_run": len(state["history"])}
    return best


def resolve_seq_len(options: LSTMTrainOptions, bundle: Bundle, sampling: tuple[int, str] | None = None) -> int:
    """Sequence length: the option, else the frames per video of the sequences it learns from."""
    fpv = sampling[0] if sampling else 0
    seq_len = int(options.seq_len or fpv or bundle.config.fpv or bundle.config.lstm.get("seq_len") or 0)
    if seq_len <= 0:
        raise SequenceDataError("the bundle records no frames per video: train its CNN on a store made by "
                                "`dfd extract --fpv N`")
    return seq_len


def sequence_sampling(store: Store, video_ids: list[str], face: dict) -> tuple[int, str] | None:
    """(frames per video, sampling) of the videos the LSTM learns from (the most common one).

    The LSTM learns the order and spacing of the frames it is trained on, so `predict` must
    sample clips the same way: a CNN trained on a store of uniformly spread faces, whose LSTM
    is trained on a store of 25 consecutive frames, serves 25 consecutive frames. The face
    crops of that store must be made like the CNN's (size, margin, alignment), or the LSTM
    would learn from faces that serving never produces.
    """
    counts: dict[tuple[int, str], int] = {}
    for vid in video_ids:
        entry = store.entry(vid)
        if entry.frame_count > 1 and entry.fpv > 0 and entry.sampling:
            counts[(int(entry.fpv), entry.sampling)] = counts.get((int(entry.fpv), entry.sampling), 0) + 1
        if face and store.has(vid, "faces"):
            settings = store.faces_settings(vid)
            differing = sorted(k for k in ("size", "align", "margin", "detector")
                               if k in face and settings.get(k) != face[k])
            if differing:
                raise SequenceDataError(f"the faces of {entry.path} in {store.path} were cropped with other "
                                        f"settings than the bundle's CNN ({', '.join(differing)}): run `dfd crop "
                                        f"--force` with {', '.join(f'{k}={face[k]}' for k in differing)}")
    return max(counts, key=counts.get) if counts else None


def train_lstm(store: Store, bundle_dir: Path, options: LSTMTrainOptions, resume: bool = False,
               on_epoch: Callable[[dict], None] | None = None, command: str | None = None,
               reporter: Reporter | None = None) -> dict:
    """Train the BiLSTM of a bundle on its stored features, then calibrate the bundle on val
    (temperature and thresholds, as `dfd train-lstm` does); returns a summary whose
    "calibration" entry is what calibrate_bundle fitted. ``reporter`` shows the making of the
    pseudo-fake clips."""
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    config = bundle.config
    checkpoints = Checkpoints(bundle_dir / CHECKPOINT_DIR / LSTM_CHECKPOINTS)
    state, options, resumed_at = prepare_state(
        checkpoints, resume, "lstm", options,
        lambda: lstm_splits(store, bundle, options.features_model or bundle.feature_model_name))
    model_name = options.features_model or bundle.feature_model_name
    sampling = sequence_sampling(store, state["splits"]["train"], config.face)
    seq_len = resolve_seq_len(options, bundle, sampling)
    pseudo = lstm_pseudo_fakes(store, bundle, state["splits"]["train"], options, reporter)
    train, val = lstm_datasets(store, state["splits"], model_name, seq_len, options, pseudo)
    mix = training_mix(train)
    lstm_config(config, options, model_name, seq_len,
                {"train_videos": len(state["splits"]["train"]), "val_videos": len(val.items),
                 "pseudo_fake_clips": len(pseudo), "train_mix": mix})
    if sampling is not None:
        config.fpv, config.sampling = sampling  # predict samples clips as the LSTM saw them
    record_command(config, "train-lstm" + (" --resume" if resumed_at is not None else ""), command)
    if resumed_at is None:
        start_fresh(checkpoints)
    save_config(bundle_dir, config)
    seed_everything(options.seed)
    loop = Loop(model=build_lstm_model(seq_len, config.feature_dim, options.units, options.dropout), train=train,
                evaluate=lambda m: evaluate_sequences(m, val), checkpoints=checkpoints,
                final_weights=bundle_dir / LSTM_WEIGHTS, tag=weights_tag("lstm", config),
                patience=options.patience, seed=options.seed, on_epoch=on_epoch)
    if not state["done"]:
        state = run_phases(loop, [Phase("lstm", 1, options.epochs, options.learning_rate)], state)
    best = lstm_results(config, state)
    record_weights_hashes(config, bundle_dir)
    save_config(bundle_dir, config)
    return {"bundle": str(bundle_dir), "features_model": model_name, "seq_len": seq_len,
            "train_videos": len(state["splits"]["train"]), "val_videos": len(val.items),
            "pseudo_fake_clips": len(pseudo), "train_mix": mix,
            "epochs_run": len(state["history"]), "best_val_auc": best.get("val_auc", float("nan")),
            "best_epoch": best.get("epoch", 0), "resumed_from_epoch": resumed_at,
            "weights": str(bundle_dir / LSTM_WEIGHTS), "history": state["history"],
            "calibration": calibrate_bundle(store, bundle_dir)}
