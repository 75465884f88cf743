"""Calibration values against an independent computation (brute force, no shared code)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepfake_cli.train.calibrate import MAX_FPRS, fit_calibration


def known_validation_scores(seed: int = 3, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z), reported by an over-confident model as sigmoid(2.5 z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return labels, 1 / (1 + np.exp(-2.5 * z))


def nll(labels, raw, temperature: float) -> float:
    total = 0.0
    for y, p in zip(labels, raw):
        p = min(max(float(p), 1e-7), 1 - 1e-7)
        q = 1 / (1 + math.exp(-math.log(p / (1 - p)) / temperature))
        total -= math.log(q) if y else math.log(1 - q)
    return total / len(labels)


def calibrated(raw, temperature: float) -> list[float]:
    out = []
    for p in raw:
        p = min(max(float(p), 1e-7), 1 - 1e-7)
        out.append(1 / (1 + math.exp(-math.log(p / (1 - p)) / temperature)))
    return out


def test_temperature_minimises_the_validation_nll():
    labels, raw = known_validation_scores()
    fitted = fit_calibration(labels, raw)
    grid = np.arange(0.5, 6.0, 0.01)
    best = grid[int(np.argmin([nll(labels, raw, t) for t in grid]))]
    assert fitted["temperature"] == pytest.approx(best, abs=0.011)
    assert 1.5 < fitted["temperature"] < 4.0  # the model is over-confident: T > 1 undoes it
    assert nll(labels, raw, fitted["temperature"]) <= nll(labels, raw, best) + 1e-9


def test_threshold_maximises_balanced_accuracy_and_fpr_thresholds_hold():
    labels, raw = known_validation_scores()
    fitted = fit_calibration(labels, raw)
    scores = calibrated(raw, fitted["temperature"])
    reals = [s for s, y in zip(scores, labels) if not y]
    fakes = [s for s, y in zip(scores, labels) if y]

    def balanced_accuracy(t: float) -> float:
        return 0.5 * (sum(s >= t for s in fakes) / len(fakes) + sum(s < t for s in reals) / len(reals))

    candidates = sorted(set(scores))
    best = max(balanced_accuracy(t) for t in candidates)
    highest_best = max(t for t in candidates if balanced_accuracy(t) >= best - 1e-12)
    assert fitted["threshold"] == pytest.approx(highest_best, abs=1e-9)
    accuracy = (sum(s >= fitted["threshold"] for s in fakes) + sum(s < fitted["threshold"] for s in reals)) / len(scores)
    assert fitted["val"]["acc"] == pytest.approx(accuracy, abs=1e-12)
    assert fitted["val"]["threshold"] == fitted["threshold"]

    assert set(fitted["thresholds_at_fpr"]) == {str(f) for f in MAX_FPRS}
    for fpr in MAX_FPRS:
        expected = min(t for t in candidates if sum(s >= t for s in reals) / len(reals) <= fpr)
        assert fitted["thresholds_at_fpr"][str(fpr)] == pytest.approx(expected, abs=1e-9), fpr


def test_with_datasets_the_threshold_keeps_every_datasets_real_fpr_under_the_cap_and_the_band_holds_it():
    labels, raw = known_validation_scores()
    datasets = np.array(["a" if i % 2 else "b" for i in range(len(labels))])
    raw = np.where(datasets == "b", np.clip(raw + 0.15, 0, 0.999), raw)  # b's scores drift up, reals too
    plain = fit_calibration(labels, raw)
    fitted = fit_calibration(labels, raw, datasets)
    assert fitted["balanced_threshold"] == plain["threshold"] and fitted["temperature"] == plain["temperature"]
    scores = np.array(calibrated(raw, fitted["temperature"]))
    for name in ("a", "b"):
        reals = scores[(datasets == name) & (labels == 0)]
        assert np.mean(reals >= fitted["threshold"]) <= 0.1, name
        assert fitted["real_fpr"][name] == pytest.approx(np.mean(reals >= fitted["threshold"]))
    reals_b = np.sort(scores[(datasets == "b") & (labels == 0)])
    assert np.mean(reals_b >= plain["threshold"]) > 0.1  # the pooled threshold misfires on b
    lo, hi = fitted["uncertain"]
    assert lo <= fitted["threshold"] <= hi
    inside = np.mean((scores >= lo) & (scores < hi))
    assert fitted["band"]["uncertain"] == pytest.approx(inside)
    assert fitted["val"]["threshold"] == fitted["threshold"]
