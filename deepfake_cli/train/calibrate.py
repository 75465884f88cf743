"""Make the bundle's probability mean what it says: temperature, threshold and band from val.

Fitted on the validation videos the bundle was trained with (never on test): a temperature
T for sigmoid(logit(p) / T); the decision threshold: the one that maximises balanced accuracy
on the calibrated scores, raised until no dataset's real videos are called fake more often than
``MAX_REAL_FPR`` (a threshold fitted on the pooled videos misfires on a dataset whose scores sit
higher); the uncertain band around it (scoring.uncertainty); and thresholds for fixed
false-positive rates (`predict --max-fpr`). `crossval` fits the same on out-of-fold scores.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from deepfake_cli.nets.bundle import load_bundle, save_config
from deepfake_cli.scoring.metrics import (apply_temperature, best_threshold, binary_metrics, fit_temperature, logit,
                                  threshold_for_max_fpr)
from deepfake_cli.scoring.stored_scores import StoredScores
from deepfake_cli.scoring.uncertainty import band_report, uncertain_band
from deepfake_cli.data.store import Store
from deepfake_cli.train import TrainingDataError

MAX_FPRS = (0.001, 0.01, 0.05, 0.1)
MAX_REAL_FPR = 0.10  # no dataset's real videos called fake more often than this at the threshold


def real_fpr(labels: np.ndarray, scores: np.ndarray, datasets: np.ndarray, threshold: float) -> dict[str, float]:
    """{dataset: share of its real videos scoring at or above ``threshold``}."""
    return {str(d): float(np.mean(scores[(datasets == d) & (labels == 0)] >= threshold))
            for d in sorted(set(datasets.tolist())) if np.any((datasets == d) & (labels == 0))}


def capped_threshold(labels: np.ndarray, scores: np.ndarray, datasets: np.ndarray, start: float,
                     max_real_fpr: float = MAX_REAL_FPR) -> float:
    """The lowest threshold >= ``start`` that calls no dataset's real videos fake more often than
    ``max_real_fpr``: per dataset, just above its k-th highest real score."""
    capped = float(start)
    for dataset in sorted(set(datasets.tolist())):
        reals = np.sort(scores[(datasets == dataset) & (labels == 0)])
        if len(reals):
            allowed = int(math.floor(max_real_fpr * len(reals)))
            capped = max(capped, float(np.nextafter(reals[len(reals) - allowed - 1], np.inf)))
    return capped


def validation_scores(store: Store, bundle) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, uncalibrated video scores (LSTM when trained, else the CNN's) and datasets of the
    val videos in the store (from their current exported features, else computed from their faces)."""
    scores_of = StoredScores(store, bundle)
    labels, scores, datasets = [], [], []
    for video_id in bundle.config.split_ids.get("val", []):
        if not store.has(video_id, "frames"):  # not in this store
            continue
        score = scores_of.video_score(video_id)
        if score is not None:
            entry = store.entry(video_id)
            labels.append(int(entry.label == "fake"))
            scores.append(score)
            datasets.append(entry.dataset or "")
    return np.array(labels, int), np.array(scores, float), np.array(datasets, str)


def fit_calibration(labels: np.ndarray, raw: np.ndarray, datasets: np.ndarray | None = None) -> dict:
    """Temperature, decision threshold, uncertain band and thresholds at MAX_FPRS fitted on
    uncalibrated video scores ``raw`` with 0/1 ``labels``; also the val metrics at that threshold.
    With ``datasets`` (one name per video) the threshold is capped (:func:`capped_threshold`) and
    each dataset's real-video false-positive rate is reported; without, it is the balanced one."""
    labels = np.asarray(labels, int)
    logits = logit(raw)
    temperature = float(fit_temperature(labels, logits))
    calibrated = apply_temperature(logits, temperature)  # as scoring.calibrate, one video at a time
    balanced = float(best_threshold(labels, calibrated))
    threshold = balanced if datasets is None else capped_threshold(labels, calibrated, np.asarray(datasets), balanced)
    fitted = {"temperature": temperature, "threshold": threshold, "balanced_threshold": balanced,
              "uncertain": list(uncertain_band(calibrated, labels, threshold)),
              "thresholds_at_fpr": {str(f): float(threshold_for_max_fpr(labels, calibrated, f)) for f in MAX_FPRS},
              "val": binary_metrics(labels, calibrated, threshold=threshold)}
    if datasets is not None:
        ids = [str(i) for i in range(len(labels))]
        fitted["real_fpr"] = real_fpr(labels, calibrated, np.asarray(datasets), threshold)
        fitted["band"] = band_report(dict(zip(ids, calibrated.tolist())), dict(zip(ids, labels.tolist())),
                                     dict(zip(ids, np.asarray(datasets).tolist())), tuple(fitted["uncertain"]))
    return fitted


def calibrate_bundle(store: Store, bundle_dir: Path) -> dict:
    """Fit and save temperature, threshold (every dataset's real FPR capped) and uncertain band;
    returns what was fitted and val metrics."""
    bundle = load_bundle(bundle_dir)
    labels, raw, datasets = validation_scores(store, bundle)
    if len(set(labels.tolist())) < 2:
        raise TrainingDataError(f"{bundle_dir}: calibration needs real and fake videos of the model's validation "
                                f"split in the store {store.path} (found {len(labels)} scored); extract and crop "
                                "them into it, or run `dfd export-features` first")
    fitted = fit_calibration(labels, raw, datasets)
    config = bundle.config
    config.temperature = fitted["temperature"]
    config.threshold = fitted["threshold"]
    config.uncertain = fitted["uncertain"]
    config.thresholds_at_fpr = fitted["thresholds_at_fpr"]
    config.metrics["val_video_calibrated"] = fitted["val"] | {
        "balanced_threshold": fitted["balanced_threshold"], "real_fpr": fitted["real_fpr"], "uncertain": fitted["band"]}
    save_config(bundle_dir, config)
    return {"temperature": fitted["temperature"], "threshold": fitted["threshold"], "uncertain": fitted["uncertain"],
            "val_videos": int(len(labels)), **{f"val_{k}": v for k, v in fitted["val"].items()},
            "val_real_fpr": fitted["real_fpr"], "val_uncertain": fitted["band"]["uncertain"]}
