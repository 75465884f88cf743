"""Choose, out of fold, how a CNN bundle turns a clip's faces into one score, and where its
verdicts are too close to call.

A clip rule is which of a video's stored frames are scored ("sequence": the --fpv consecutive
frames from the middle of the clip, a second or so; "spread": the --spread frames spread over
the whole clip, what `predict` then samples as ``sampling: uniform``) and how their face scores
become the clip's ("mean", "median", "max": metrics.AGGREGATIONS); a rule replaces the
bundles' old one (--fpv frames, mean) only when it beats it by more than the folds' spread. Cross-validation keeps each
fold's bundle, so every rule can be scored on the same held-out videos: each fold's CNN scores
every stored face of its held-out videos once (``frame_scores.json`` in the fold's folder,
recomputed when the fold's weights change), and the rules aggregate those scores.

The uncertain band that goes with the chosen rule is fitted on its calibrated out-of-fold
probabilities (scoring.uncertainty).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from deepfake_cli.data.inputs import has_images, stored_images
from deepfake_cli.data.store import ROLE_SEQUENCE, ROLE_SPREAD, Store
from deepfake_cli.files import atomic_write_text, file_sha256
from deepfake_cli.nets.bundle import load_bundle
from deepfake_cli.scoring.metrics import AGGREGATIONS, aggregate_video_scores, safe_auc
from deepfake_cli.scoring.scorer import Scorer

FRAME_SCORES_FILE = "frame_scores.json"
FRAMES = ("sequence", "spread")
RULES = [(frames, aggregation) for frames in FRAMES for aggregation in AGGREGATIONS]


def rule_name(rule: tuple[str, str]) -> str:
    return f"{rule[0]} {rule[1]}"


def fold_frame_scores(store: Store, fold_dir: Path, video_ids: list[str]) -> dict[str, dict[str, list[float]]]:
    """{video id: {"sequence": face scores, "spread": face scores}} of held-out videos under the
    fold's bundle (frames in order; a role with no face left out), cached in the fold's folder."""
    bundle = load_bundle(fold_dir)
    path = Path(fold_dir) / FRAME_SCORES_FILE
    digest = file_sha256(bundle.cnn_weights)
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("cnn_sha256") == digest and set(video_ids) <= set(cached["scores"]):
            return {v: cached["scores"][v] for v in video_ids}
    scorer = Scorer(bundle, lstm=False)
    kind, size = bundle.config.input, int(bundle.config.input_size)
    scores: dict[str, dict[str, list[float]]] = {}
    for vid in video_ids:
        if not has_images(store, vid, kind):
            continue
        row = {}
        for name, role in (("sequence", ROLE_SEQUENCE), ("spread", ROLE_SPREAD)):
            _, images = stored_images(store, vid, kind, size, role=role)
            if len(images):
                row[name] = [round(float(s), 7) for s in scorer.frames(images)[1]]
        if row:
            scores[vid] = row
    atomic_write_text(path, json.dumps({"cnn_sha256": digest, "scores": scores}) + "\n")
    return scores


def rule_scores(frame_scores: dict[str, dict[str, list[float]]], rule: tuple[str, str]) -> dict[str, float]:
    """{video id: clip score} under ``rule``; a video without spread frames (a single image, a
    store extracted without --spread) is scored on its sequence frames, as predict would."""
    frames, aggregation = rule
    out = {}
    for vid, row in frame_scores.items():
        faces = row.get(frames) or row.get("sequence")
        if faces:
            out[vid] = aggregate_video_scores(faces, aggregation)
    return out


def dataset_mean_auc(scores: dict[str, float], label: dict[str, int], dataset: dict[str, str]) -> tuple[dict, float]:
    """({dataset: video AUC}, their mean: datasets weigh the same; NaN where a dataset lacks a class)."""
    per_dataset = {}
    for name in sorted({dataset[v] for v in scores}):
        ids = [v for v in scores if dataset[v] == name]
        per_dataset[name] = safe_auc(np.array([label[v] for v in ids]), np.array([scores[v] for v in ids]))
    finite = [a for a in per_dataset.values() if np.isfinite(a)]
    return per_dataset, float(np.mean(finite)) if finite else float("nan")


def compare_rules(folds: dict[str, dict[str, dict[str, list[float]]]], label: dict[str, int],
                  dataset: dict[str, str]) -> dict:
    """Each rule's pooled out-of-fold video AUC per dataset and their mean (datasets weigh the
    same), and that mean in each fold; ``folds``: each fold's frame scores. A rule replaces the
    first of RULES (the --fpv frames and the mean: what bundles did before) only when its gain
    over it, fold by fold, is larger than the spread of that gain over the folds (mean > sample
    sd of the paired per-fold differences): a difference smaller than what the folds move is
    no evidence. Without spread frames in any held-out video (a store extracted without
    --spread) the spread rules are left out: they would only repeat the sequence ones."""
    has_spread = any("spread" in row for fold in folds.values() for row in fold.values())
    table = {}
    for rule in [r for r in RULES if has_spread or r[0] != "spread"]:
        pooled = {v: s for fold in folds.values() for v, s in rule_scores(fold, rule).items()}
        per_dataset, mean = dataset_mean_auc(pooled, label, dataset)
        per_fold = [dataset_mean_auc(rule_scores(fold, rule), label, dataset)[1] for fold in folds.values()]
        table[rule_name(rule)] = {"per_dataset": per_dataset, "mean": mean, "folds": per_fold}
    incumbent = RULES[0]
    ranked = [r for r in RULES if rule_name(r) in table and np.isfinite(table[rule_name(r)]["mean"])]
    best = max(ranked, key=lambda r: table[rule_name(r)]["mean"]) if ranked else incumbent
    gains = np.array(table[rule_name(best)]["folds"]) - np.array(table[rule_name(incumbent)]["folds"])
    gains = gains[np.isfinite(gains)]
    clear = len(gains) >= 2 and float(gains.mean()) > float(gains.std(ddof=1))
    chosen = best if clear else incumbent
    return {"rules": table, "best": list(best), "chosen": list(chosen),
            "gain_over_folds": [round(float(g), 4) for g in gains]}
