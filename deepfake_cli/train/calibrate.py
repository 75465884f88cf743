"""Make the bundle's probability mean what it says: temperature and thresholds from val.

Fitted on the validation videos the bundle was trained with (never on test): a temperature
T for sigmoid(logit(p) / T), the decision threshold that maximises balanced accuracy on
the calibrated scores, and thresholds for fixed false-positive rates (`predict --max-fpr`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepfake_cli.nets.bundle import load_bundle, save_config
from deepfake_cli.scoring.metrics import (apply_temperature, best_threshold, binary_metrics, fit_temperature, logit,
                                  threshold_for_max_fpr)
from deepfake_cli.scoring.stored_scores import StoredScores
from deepfake_cli.data.store import Store
from deepfake_cli.train import TrainingDataError

MAX_FPRS = (0.001, 0.01, 0.05, 0.1)


def validation_scores(store: Store, bundle) -> tuple[np.ndarray, np.ndarray]:
    """Uncalibrated video scores (LSTM when trained, else the CNN's) of the val videos in the
    store (from their current exported features, else computed from their faces)."""
    scores_of = StoredScores(store, bundle)
    labels, scores = [], []
    for video_id in bundle.config.split_ids.get("val", []):
        if not store.has(video_id, "frames"):  # not in this store
            continue
        score = scores_of.video_score(video_id)
        if score is not None:
            labels.append(int(store.entry(video_id).label == "fake"))
            scores.append(score)
    return np.array(labels, int), np.array(scores, float)


def fit_calibration(labels: np.ndarray, raw: np.ndarray) -> dict:
    """Temperature, decision threshold and thresholds at MAX_FPRS fitted on uncalibrated
    video scores ``raw`` with 0/1 ``labels``; also the val metrics at that threshold."""
    logits = logit(raw)
    temperature = float(fit_temperature(labels, logits))
    calibrated = apply_temperature(logits, temperature)  # as scoring.calibrate, one video at a time
    threshold = float(best_threshold(labels, calibrated))
    return {"temperature": temperature, "threshold": threshold,
            "thresholds_at_fpr": {str(f): float(threshold_for_max_fpr(labels, calibrated, f)) for f in MAX_FPRS},
            "val": binary_metrics(labels, calibrated, threshold=threshold)}


def calibrate_bundle(store: Store, bundle_dir: Path) -> dict:
    """Fit and save temperature and thresholds; returns what was fitted and val metrics."""
    bundle = load_bundle(bundle_dir)
    labels, raw = validation_scores(store, bundle)
    if len(set(labels.tolist())) < 2:
        raise TrainingDataError("calibration needs real and fake validation videos with exported features "
                                f"(found {len(labels)} video(s)); run `dfd export-features` first")
    fitted = fit_calibration(labels, raw)
    config = bundle.config
    config.temperature = fitted["temperature"]
    config.threshold = fitted["threshold"]
    config.thresholds_at_fpr = fitted["thresholds_at_fpr"]
    config.metrics["val_video_calibrated"] = fitted["val"]
    save_config(bundle_dir, config)
    return {"temperature": fitted["temperature"], "threshold": fitted["threshold"], "val_videos": int(len(labels)),
            **{f"val_{k}": v for k, v in fitted["val"].items()}}
