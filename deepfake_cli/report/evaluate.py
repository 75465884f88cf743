"""`dfd evaluate`: the numbers a researcher reports, from exported features.

Frame level: each face's CNN score. Video level: the CNN alone (its frame scores aggregated
as the bundle's video_aggregation says, uncalibrated) and the probability `predict` reports
("cnn+lstm": the LSTM over the ordered feature sequence; "cnn-calibrated", for a bundle
without an LSTM: the CNN's aggregate), temperature-calibrated. Both come from
deepfake_cli.scoring.scorer, so this is the served figure. With a bundle that has an uncertain
band, the share of videos in it, the accuracy outside it and each dataset's real videos called
fake. Splits are the ones the bundle was trained with (its config records the train and val
video ids); every other video counts under its stored split.

The figure is the served one only when the stored features are the bundle's current CNN's, and
the stored faces were found by the face rule `predict` serves the bundle by (faces.track_rule:
detection stride, identity linking, the main track): features of an older CNN, or faces cropped
by another rule, are refused in one line that says what to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfake_cli.errors import DfdError
from deepfake_cli.faces.track_rule import rule_difference
from deepfake_cli.nets.bundle import Bundle, load_bundle
from deepfake_cli.scoring.ensemble import is_ensemble, load_ensemble, member_probabilities
from deepfake_cli.scoring.metrics import binary_metrics, breakdown
from deepfake_cli.scoring.scorer import Scorer
from deepfake_cli.scoring.stored_scores import check_features_current, stored_windows
from deepfake_cli.scoring.windows import windowed_probability
from deepfake_cli.scoring.uncertainty import band_report
from deepfake_cli.data.store import Store

SPLIT_ORDER = ("train", "val", "test")
# the video probability `predict` reports: CNN + BiLSTM, or (a bundle without an LSTM) the CNN's aggregate, calibrated
SERVED_LSTM, SERVED_CNN = "cnn+lstm", "cnn-calibrated"


class EvaluateError(DfdError):
    """Nothing to evaluate, or stored data that would not give the served figure."""


@dataclass
class Evaluation:
    results: dict  # {"overall": {"<split> / <level> / <model>": metrics}, "dataset": {...}, ...}
    rows: list[dict]  # one per frame and per video and model, for scores.csv and plots


def split_of(video_id: str, stored_split: str, trained: dict[str, set[str]]) -> str:
    """The split a video was used in: the bundle's record first, then the store's."""
    for split, ids in trained.items():
        if video_id in ids:
            return split
    return "test" if stored_split == "test" else (stored_split or "unassigned") + " (unused)"


def evaluate(store: Store, bundle_dir: Path) -> Evaluation:
    """Frame and video metrics of a bundle's exported features (an ensemble: see evaluate_ensemble)."""
    if is_ensemble(bundle_dir):
        return evaluate_ensemble(store, bundle_dir)
    bundle = load_bundle(bundle_dir)
    config = bundle.config
    model_name = bundle.feature_model_name
    trained = {split: set(ids) for split, ids in (config.split_ids or {}).items() if split in ("train", "val")}
    scorer = Scorer(bundle, cnn=False)
    served = SERVED_LSTM if scorer.lstm is not None else SERVED_CNN
    entries = [e for e in store.entries()
               if e.ok and e.label in ("real", "fake") and store.has(e.video_id, f"features.{model_name}")]
    check_features_current(store, bundle, [e.video_id for e in entries], model_name)
    check_face_rule(store, bundle, entries)
    rows: list[dict] = []
    for entry in entries:
        feats = store.read_features(entry.video_id, model_name)
        if not len(feats.scores):
            continue
        base = {"video_id": entry.video_id, "split": split_of(entry.video_id, entry.split, trained),
                "label": entry.label, "dataset": entry.dataset, "method": entry.method,
                "compression": entry.compression, "path": entry.path}
        for index, score in zip(feats.frame_indices, feats.scores):
            rows.append(base | {"level": "frame", "model": "cnn", "frame": int(index), "score": float(score)})
        rows.append(base | {"level": "video", "model": "cnn", "score": scorer.cnn_score(feats.scores)})
        # what `predict` reports for this video: the LSTM's, or the CNN's score, calibrated (a video
        # stored in windows, extract --windows: each window's, aggregated as predict aggregates them)
        windows = stored_windows(store, entry.video_id, len(feats.scores)) if config.input == "face" else None
        rows.append(base | {"level": "video", "model": served,
                            "score": windowed_probability(scorer, feats.features, feats.scores, windows)})
    if not rows:
        raise EvaluateError(f"no labelled video in {store.path} has features of model {model_name!r}: "
                            f"run `dfd export-features --model {model_name}` first")
    cuts = {("frame", "cnn"): 0.5, ("video", "cnn"): 0.5, ("video", served): float(config.threshold)}
    results = _results(rows, cuts, served)
    if config.uncertain:
        results["uncertain"] = uncertain_by_split(rows, list(config.uncertain), served)
    stored = {e.windows for e in entries}  # windows each video stores (extract --windows; 1 before)
    if config.sampling == "consecutive" and stored != {config.windows}:
        measured = ("the one window" if stored == {1} else "the " + " or ".join(
            str(w or "all") for w in sorted(stored)) + " windows") + f" of {config.fpv} frames each video stores"
        results["note"] = (f"measured on {measured}; predict judges {config.windows or 'all'} windows of a longer "
                           "clip and averages them, so its probability for such a clip differs from this one "
                           "(`dfd extract --windows` stores as many)")
    return Evaluation(results=results, rows=rows)


def uncertain_by_split(rows: list[dict], band: list[float], served: str) -> dict:
    """Per split, the share of videos whose served probability falls in the bundle's uncertain
    band, the accuracy of the calls outside it and each dataset's real videos called fake."""
    videos = [r for r in rows if r["level"] == "video" and r["model"] == served]
    out = {}
    for split in sorted({r["split"] for r in videos}):
        mine = [r for r in videos if r["split"] == split]
        out[split] = band_report({r["video_id"]: r["score"] for r in mine},
                                 {r["video_id"]: int(r["label"] == "fake") for r in mine},
                                 {r["video_id"]: r["dataset"] for r in mine}, tuple(band))
    return out


def check_face_rule(store: Store, bundle: Bundle, entries: list) -> None:
    """EvaluateError when some videos' faces were not found by the face rule the bundle records
    (and `predict` serves it by): their figures would not be the served ones."""
    face = bundle.config.face
    if bundle.config.input != "face":
        return
    differing = {}
    for entry in entries:
        if store.has(entry.video_id, "faces"):
            why = rule_difference(face, store.faces_settings(entry.video_id),
                                  entry.sampling == "consecutive" and not entry.spread)
            if why:
                differing.setdefault(why, []).append(entry.path)
    if differing:
        why, paths = next(iter(differing.items()))
        count = sum(len(p) for p in differing.values())
        raise EvaluateError(f"{count} of {len(entries)} videos' faces in {store.path} were not found by the face rule "
                            f"of {bundle.path} ({paths[0]}: {why}), so predict would not serve what they measure: "
                            f"run `dfd crop --force --detect-every {face.get('detect_every', 1)}` and "
                            f"`dfd export-features --model {bundle.path.name}`")


def evaluate_ensemble(store: Store, ensemble_dir: Path) -> Evaluation:
    """Every member and the ensemble side by side, per video (members at their own thresholds).

    The ensemble's validation videos count as val (a blend's fitting half as "val (fit)": its
    figures there are in-sample); any member's training videos as train; the rest as stored.
    """
    ensemble = load_ensemble(ensemble_dir)
    split_ids = ensemble.config.split_ids
    trained = {"val (fit)": set(split_ids.get("val_fit", [])), "val": set(split_ids.get("val", [])),
               "train": set().union(*(set(b.config.split_ids.get("train", [])) for b in ensemble.members))}
    names = [b.path.name for b in ensemble.members]
    method = f"ensemble ({ensemble.config.method})"
    labelled = [e for e in store.entries() if e.ok and e.label in ("real", "fake")]
    ids, probabilities = member_probabilities(store, ensemble.members, [e.video_id for e in labelled])
    rows: list[dict] = []
    for vid, row in zip(ids, probabilities):
        entry = store.entry(vid)
        base = {"video_id": vid, "split": split_of(vid, entry.split, trained), "label": entry.label,
                "dataset": entry.dataset, "method": entry.method, "compression": entry.compression,
                "path": entry.path, "level": "video"}
        rows.extend(base | {"model": name, "score": float(p)} for name, p in zip(names, row))
        rows.append(base | {"model": method, "score": ensemble.probability(row)})
    if not rows:
        raise EvaluateError(f"no labelled video in {store.path} can be scored by every member of {ensemble_dir}")
    cuts = {("video", name): float(b.config.threshold) for name, b in zip(names, ensemble.members)}
    cuts[("video", method)] = float(ensemble.config.threshold)
    return Evaluation(results=_results(rows, cuts, method), rows=rows)


def _results(rows: list[dict], cuts: dict[tuple[str, str], float], primary: str) -> dict:
    """Metrics per split and (level, model) at each one's threshold in ``cuts``, and the
    ``primary`` model's video scores broken down by dataset, method and compression."""
    overall = {}
    splits = sorted({r["split"] for r in rows}, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 9, s))
    for split in splits:
        for (level, model), cut in cuts.items():
            chosen = [r for r in rows if r["split"] == split and r["level"] == level and r["model"] == model]
            if chosen:
                overall[f"{split} / {level} / {model}"] = binary_metrics(
                    np.array([r["label"] == "fake" for r in chosen], int), np.array([r["score"] for r in chosen]), cut)
    best_model = primary
    video = [r for r in rows if r["level"] == "video" and r["model"] == best_model]
    held_out = [s for s in ("val", "test") if any(r["split"] == s for r in video)] or splits
    results = {"overall": overall, "breakdown_rows": f"video / {best_model} / {', '.join(held_out)}"}
    cut = cuts[("video", best_model)]
    for by in ("dataset", "method", "compression"):
        results[by] = {}
        for split in held_out:
            in_split = [r for r in video if r["split"] == split]
            # methods and compressions are compared within a dataset: its fakes against its reals
            per_dataset = {"": in_split} if by == "dataset" else {
                d: [r for r in in_split if r["dataset"] == d] for d in sorted({r["dataset"] for r in in_split})}
            for dataset, chosen in per_dataset.items():
                for value, metrics in breakdown(chosen, by, threshold=cut).items():
                    name = " / ".join(x for x in (split, dataset, value or "none") if x)
                    results[by][name] = metrics
    return results
