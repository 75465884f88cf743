"""Make the bundle's probability mean what it says: temperature and thresholds from val.

Fitted on the validation videos the bundle was trained with (never on test): a temperature
T for sigmoid(logit(p) / T), the decision threshold that maximises balanced accuracy on
the calibrated scores, and thresholds for fixed false-positive rates (`predict --max-fpr`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from deepfake_cli.bundle import load_bundle, save_config
from deepfake_cli.metrics import best_threshold, binary_metrics, fit_temperature, threshold_for_max_fpr
from deepfake_cli.store import Store

MAX_FPRS = (0.001, 0.01, 0.05, 0.1)


def _logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


def validation_scores(store: Store, bundle) -> tuple[np.ndarray, np.ndarray]:
    """Raw video-level scores (LSTM when trained, else mean CNN score) of the val videos."""
    name = bundle.feature_model_name
    lstm = bundle.build_lstm() if bundle.has_lstm else None
    labels, scores = [], []
    for video_id in bundle.config.split_ids.get("val", []):
        if not store.has(video_id, f"features.{name}"):
            continue
        features = store.read_features(video_id, name)
        if not len(features.scores):
            continue
        raw = bundle.score_sequence(lstm, features.features) if lstm is not None else float(np.mean(features.scores))
        labels.append(int(store.entry(video_id).label == "fake"))
        scores.append(raw)
    return np.array(labels, int), np.array(scores, float)


def calibrate_bundle(store: Store, bundle_dir: Path) -> dict:
    """Fit and save temperature and thresholds; returns what was fitted and val metrics."""
    bundle = load_bundle(bundle_dir)
    labels, raw = validation_scores(store, bundle)
    if len(set(labels.tolist())) < 2:
        raise ValueError("calibration needs real and fake validation videos with exported features "
                         f"(found {len(labels)} video(s)); run `dfd export-features` first")
    logits = np.array([_logit(p) for p in raw])
    temperature = float(fit_temperature(labels, logits))
    calibrated = 1.0 / (1.0 + np.exp(-logits / temperature))
    threshold = float(best_threshold(labels, calibrated))
    config = bundle.config
    config.temperature = temperature
    config.threshold = threshold
    config.thresholds_at_fpr = {str(f): float(threshold_for_max_fpr(labels, calibrated, f)) for f in MAX_FPRS}
    val = binary_metrics(labels, calibrated, threshold=threshold)
    config.metrics["val_video_calibrated"] = val
    save_config(bundle_dir, config)
    return {"temperature": temperature, "threshold": threshold, "val_videos": int(len(labels)),
            **{f"val_{k}": v for k, v in val.items()}}
