"""Cross-validation of a training recipe over identity groups, and across datasets.

A recipe (train-cnn's options, one JSON file: :func:`load_recipe`) is trained K times, each
time on all but one fold of the store's training videos, and the held-out fold is scored
through the bundle's own scoring rule (scoring.stored_scores: the stored sequence faces, the
CNN, the video aggregation or LSTM, exactly what `evaluate` measures and `predict` serves).
Folds hold whole identity groups (deepfake_cli.data.splits.group_key: an FF++ person, a
DFDC source video), assigned per dataset so every fold holds a share of each dataset's real
and fake groups. Inside the training folds, validation (the best epoch) is carved by group
as train-cnn always does; the held-out fold is never looked at until it is scored.

Cross-dataset arms train on every dataset but one and score that one (``without-<dataset>``).

Every fold writes ``<out>/<fold>/`` (a bundle like any other: folds can be ensembled) and
``<out>/<fold>/scores.json`` (its out-of-fold video scores) when done, so an interrupted run
resumes at the fold it was in (train-cnn resumes inside the fold). The report
(:func:`summarize`) gives, per dataset, method and compression, the video AUC of each fold,
its mean and sample standard deviation, the AUC of all out-of-fold scores pooled, and the
real-video false-positive rate at two thresholds fitted on the pooled out-of-fold scores:
the balanced-accuracy one, and the lowest one that calls no dataset's real videos fake more
often than ``max_real_fpr``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np

from deepfake_cli.data.splits import group_key, training_splits
from deepfake_cli.data.store import Store, VideoEntry
from deepfake_cli.errors import OptionsError
from deepfake_cli.files import atomic_write_text
from deepfake_cli.nets.bundle import load_bundle, save_config
from deepfake_cli.scoring.metrics import apply_temperature, best_threshold, logit, safe_auc
from deepfake_cli.scoring.stored_scores import StoredScores
from deepfake_cli.train import TrainingDataError
from deepfake_cli.train.calibrate import MAX_REAL_FPR, capped_threshold, fit_calibration, real_fpr
from deepfake_cli.train.cnn import CNNTrainOptions, train_cnn
from deepfake_cli.scoring.uncertainty import band_report, uncertain_band
from deepfake_cli.train.scoring_rules import compare_rules, fold_frame_scores, rule_name, rule_scores

SCORES_FILE = "scores.json"
REPORT_FILE = "crossval.json"


def load_recipe(path: Path) -> CNNTrainOptions:
    """train-cnn's options from a recipe file: a JSON object ``{"train-cnn": {option: value}}``
    whose keys are CNNTrainOptions fields (unknown keys are refused, missing ones default)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OptionsError(f"cannot read recipe {path}: {exc}") from None
    section = data.get("train-cnn") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise OptionsError(f"recipe {path} must hold a JSON object with a \"train-cnn\" object")
    known = {f.name for f in fields(CNNTrainOptions)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise OptionsError(f"recipe {path}: unknown train-cnn option(s) {', '.join(unknown)} "
                           f"(known: {', '.join(sorted(known))})")
    return CNNTrainOptions(**section)


def usable_entries(store: Store) -> list[VideoEntry]:
    """Labelled videos of the store's train (and val) splits: what folds are made of. Test
    videos stay out, as they stay out of training."""
    return [e for e in store.entries() if e.ok and e.label in ("real", "fake") and e.split in ("", "train", "val")]


def assign_folds(entries: list[VideoEntry], folds: int, seed: int = 0) -> dict[str, int]:
    """{video id: fold}: whole identity groups per fold, dealt round-robin per dataset in an
    order stratified by the group's majority label and shuffled by a seeded hash."""
    if folds < 2:
        raise OptionsError(f"cross-validation needs at least 2 folds, not {folds}")
    by_dataset: dict[str, dict[str, list[VideoEntry]]] = {}
    for entry in entries:
        by_dataset.setdefault(entry.dataset, {}).setdefault(group_key(entry), []).append(entry)
    fold_of: dict[str, int] = {}
    for dataset, groups in sorted(by_dataset.items()):
        if len(groups) < folds:
            raise TrainingDataError(f"dataset {dataset or '(unnamed)'} has {len(groups)} identity group(s): "
                                    f"too few for {folds} folds")

        def order(key: str) -> tuple[bool, str]:
            fakes = sum(e.label == "fake" for e in groups[key])
            return 2 * fakes > len(groups[key]), hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()

        for i, key in enumerate(sorted(groups, key=order)):
            for entry in groups[key]:
                fold_of[entry.video_id] = i % folds
    return fold_of


def fold_plan(entries: list[VideoEntry], folds: int, seed: int, cross_dataset: bool) -> dict[str, list[str]]:
    """{fold name: held-out video ids}: ``fold-0`` .. ``fold-{K-1}``, and with ``cross_dataset``
    one ``without-<dataset>`` arm per dataset (when the store holds two or more)."""
    fold_of = assign_folds(entries, folds, seed)
    plan = {f"fold-{k}": sorted(v for v, f in fold_of.items() if f == k) for k in range(folds)}
    datasets = sorted({e.dataset for e in entries})
    if cross_dataset and len(datasets) > 1:
        for dataset in datasets:
            plan[f"without-{dataset}"] = sorted(e.video_id for e in entries if e.dataset == dataset)
    return plan


def training_split(entries: list[VideoEntry], held_out: set[str], options: CNNTrainOptions) -> dict[str, list[str]]:
    """Train and val ids of the videos outside the held-out fold (val carved by group per dataset,
    as train-cnn carves it from a store's train split)."""
    rest = [replace(e, split="train") for e in entries if e.video_id not in held_out]
    splits = training_splits(rest, seed=options.seed, val_fraction=options.val_fraction)
    return {"train": splits["train"], "val": splits["val"]}


def score_fold(store: Store, bundle_dir: Path, video_ids: list[str]) -> dict[str, float]:
    """{video id: uncalibrated video score} of the held-out videos under the fold's bundle, through
    the same rule evaluate and predict use (videos with nothing to score are left out)."""
    scores = StoredScores(store, load_bundle(bundle_dir))
    out = {}
    for vid in video_ids:
        score = scores.video_score(vid)
        if score is not None:
            out[vid] = float(score)
    return out


def run_crossval(store: Store, out_dir: Path, options: CNNTrainOptions, folds: int = 3, seed: int = 0,
                 cross_dataset: bool = False, only: list[str] | None = None, choose_rule: bool = False,
                 on_fold: Callable[[str, dict], None] | None = None,
                 on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train and score every fold not yet done (``only``: these fold names), then summarise all
    the folds that are done; returns the report (also written to ``out_dir/crossval.json``)."""
    out_dir = Path(out_dir)
    entries = usable_entries(store)
    plan = fold_plan(entries, folds, seed, cross_dataset)
    unknown = sorted(set(only or ()) - set(plan))
    if unknown:
        raise OptionsError(f"no fold named {', '.join(unknown)} (folds: {', '.join(plan)})")
    recipe = asdict(options)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, held in plan.items():
        if only and name not in only:
            continue
        fold_dir = out_dir / name
        done = fold_dir / SCORES_FILE
        if done.is_file() and json.loads(done.read_text()).get("recipe") == recipe:
            continue
        splits = training_split(entries, set(held), options)
        summary = train_cnn(store, fold_dir, options, resume=True, on_epoch=on_epoch, splits=splits)
        scores = score_fold(store, fold_dir, held)
        atomic_write_text(done, json.dumps({"fold": name, "recipe": recipe, "held_out": held, "scores": scores,
                                            "train_videos": len(splits["train"]), "val_videos": len(splits["val"]),
                                            "best_val_auc": summary["best_val_auc"], "best_epoch": [summary["best_round"], summary["best_epoch"]],
                                            "images_per_second": summary["images_per_second"]}, indent=1) + "\n")
        if on_fold is not None:
            on_fold(name, {"videos": len(scores)})
    report = summarize(store, out_dir, plan, recipe, choose_rule=choose_rule)
    atomic_write_text(out_dir / REPORT_FILE, json.dumps(report, indent=1) + "\n")
    return report


# ---------------------------------------------------------------------- the report
def _auc_row(per_fold: list[float], pooled: float) -> dict:
    finite = [a for a in per_fold if math.isfinite(a)]
    return {"folds": [round(a, 4) if math.isfinite(a) else None for a in per_fold],
            "mean": float(np.mean(finite)) if finite else None,
            "sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
            "pooled": pooled if math.isfinite(pooled) else None}


def subsets(entries: dict[str, VideoEntry]) -> dict[str, Callable[[VideoEntry], bool]]:
    """Named slices of the videos: each dataset, each dataset's compressions, and each fake
    method against the same dataset's real videos."""
    out: dict[str, Callable[[VideoEntry], bool]] = {}
    for dataset in sorted({e.dataset for e in entries.values()}):
        mine = [e for e in entries.values() if e.dataset == dataset]
        out[dataset] = lambda e, d=dataset: e.dataset == d
        compressions = sorted({e.compression for e in mine if e.compression})
        for comp in compressions if len(compressions) > 1 else []:
            out[f"{dataset} {comp}"] = lambda e, d=dataset, c=comp: e.dataset == d and e.compression == c
        for method in sorted({e.method for e in mine if e.label == "fake" and e.method}):
            out[f"{dataset} {method}"] = lambda e, d=dataset, m=method: e.dataset == d and (
                e.label == "real" or e.method == m)
    return out


def summarize(store: Store, out_dir: Path, plan: dict[str, list[str]], recipe: dict, choose_rule: bool = False) -> dict:
    """The report of every finished fold under ``out_dir`` (see the module doc). ``choose_rule``:
    first choose the clip scoring rule out of fold (train.scoring_rules) and report under it."""
    done = {}
    for name in plan:
        path = out_dir / name / SCORES_FILE
        if path.is_file():
            data = json.loads(path.read_text())
            if data.get("recipe") == recipe:
                done[name] = data["scores"]
    entries = {e.video_id: e for e in store.entries()}
    label = {v: int(entries[v].label == "fake") for fold in done.values() for v in fold}
    chosen = None
    if choose_rule and any(k.startswith("fold-") for k in done):
        frame_scores = {name: fold_frame_scores(store, out_dir / name, sorted(done[name])) for name in done}
        chosen = compare_rules({k: v for k, v in frame_scores.items() if k.startswith("fold-")}, label,
                               {v: entries[v].dataset for fold in done.values() for v in fold})
        rule = tuple(chosen["chosen"])
        done = {name: rule_scores(frame_scores[name], rule) for name in done}
        spreads = [e.spread for e in entries.values() if e.spread > 0]
        chosen["fpv"] = max(set(spreads), key=spreads.count) if spreads else 0
    folds = {k: v for k, v in done.items() if k.startswith("fold-")}
    oof = {v: s for fold in folds.values() for v, s in fold.items()}
    report: dict = {"recipe": recipe, "folds_done": sorted(done), "folds_planned": list(plan),
                    "videos_scored": len(oof), "within": {}, "cross_dataset": {}, "thresholds": {}}
    if chosen is not None:
        report["rule"] = chosen
    for name, keep in subsets({v: entries[v] for v in oof}).items():
        per_fold = []
        for scores in folds.values():
            ids = [v for v in scores if keep(entries[v])]
            per_fold.append(safe_auc(np.array([label[v] for v in ids]), np.array([scores[v] for v in ids])))
        ids = [v for v in oof if keep(entries[v])]
        pooled = safe_auc(np.array([label[v] for v in ids]), np.array([oof[v] for v in ids]))
        report["within"][name] = _auc_row(per_fold, pooled) | {
            "real": sum(1 for v in ids if not label[v]), "fake": sum(1 for v in ids if label[v])}
    for name, scores in done.items():
        if name.startswith("without-"):
            ids = list(scores)
            report["cross_dataset"][name.removeprefix("without-")] = {
                "auc": safe_auc(np.array([label[v] for v in ids]), np.array([scores[v] for v in ids])),
                "videos": len(ids)}
    if oof and len(set(label[v] for v in oof)) == 2:
        ids = sorted(oof)
        fitted = fit_calibration(np.array([label[v] for v in ids]), np.array([oof[v] for v in ids]))
        temperature = fitted["temperature"]
        calibrated = {v: float(apply_temperature(logit(s), temperature)) for v, s in oof.items()}
        report["calibration"] = {"temperature": temperature, "thresholds_at_fpr": fitted["thresholds_at_fpr"]}
        report["thresholds"] = oof_thresholds({v: entries[v] for v in oof}, calibrated, label)
        capped = report["thresholds"][f"max_real_fpr_{MAX_REAL_FPR:g}"]["threshold"]
        band = uncertain_band(np.array([calibrated[v] for v in ids]), np.array([label[v] for v in ids]), capped)
        report["uncertain"] = band_report(calibrated, label, {v: entries[v].dataset for v in oof}, band)
    return report


def apply_calibration(report: dict, bundle_dir: Path, which: str = f"max_real_fpr_{MAX_REAL_FPR:g}",
                      source: str = "") -> dict:
    """Write the out-of-fold temperature and threshold ``which`` of a cross-validation report into a
    bundle trained by the same recipe on all the folds; returns what was written."""
    bundle = load_bundle(bundle_dir)
    if asdict(CNNTrainOptions(**{k: v for k, v in bundle.config.training.get("cnn_options", {}).items()
                                 if k in {f.name for f in fields(CNNTrainOptions)}})) != report["recipe"]:
        raise OptionsError(f"bundle {bundle_dir} was not trained with the cross-validated recipe: "
                           "train it with `dfd train-cnn --recipe` from the same file")
    if "calibration" not in report or which not in report["thresholds"]:
        raise TrainingDataError(f"the cross-validation report has no out-of-fold threshold {which!r}")
    config = bundle.config
    config.temperature = float(report["calibration"]["temperature"])
    config.threshold = float(report["thresholds"][which]["threshold"])
    config.thresholds_at_fpr = dict(report["calibration"]["thresholds_at_fpr"])
    written = {}
    if "rule" in report:  # the clip rule chosen out of fold: which frames, and their aggregation
        frames, aggregation = report["rule"]["chosen"]
        config.video_aggregation = aggregation
        if frames == "spread" and report["rule"].get("fpv"):
            config.sampling, config.fpv = "uniform", int(report["rule"]["fpv"])
        written["clip_rule"] = rule_name((frames, aggregation))
    if "uncertain" in report:
        config.uncertain = [float(x) for x in report["uncertain"]["band"]]
        written["uncertain"] = config.uncertain
    config.metrics["crossval"] = {"source": source, "threshold_rule": which, "within": report["within"],
                                  "cross_dataset": report["cross_dataset"], "thresholds": report["thresholds"],
                                  "clip_rules": report.get("rule"), "uncertain": report.get("uncertain")}
    save_config(bundle_dir, config)
    return {"temperature": config.temperature, "threshold": config.threshold, "rule": which} | written


def oof_thresholds(entries: dict[str, VideoEntry], scores: dict[str, float], label: dict[str, int],
                   max_real_fpr: float = MAX_REAL_FPR) -> dict:
    """Thresholds on the pooled out-of-fold video scores: the balanced-accuracy one, and the
    lowest that calls no dataset's real videos fake more often than ``max_real_fpr``
    (calibrate.capped_threshold, as val calibration fits it); each with every dataset's
    real-video false-positive rate and fake-video detection rate."""
    ids = sorted(scores)
    y = np.array([label[v] for v in ids])
    s = np.array([scores[v] for v in ids])
    d = np.array([entries[v].dataset for v in ids], str)
    balanced = float(best_threshold(y, s))
    capped = capped_threshold(y, s, d, balanced, max_real_fpr)

    def rates(t: float) -> dict:
        tpr = {str(name): float(np.mean(s[(d == name) & (y == 1)] >= t)) for name in sorted(set(d.tolist()))
               if np.any((d == name) & (y == 1))}
        return {"threshold": t, "real_fpr": real_fpr(y, s, d, t), "fake_tpr": tpr}

    return {"balanced": rates(balanced), f"max_real_fpr_{max_real_fpr:g}": rates(capped)}
