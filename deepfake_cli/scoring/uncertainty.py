"""The uncertain band: where a verdict is too close to call.

On calibrated probabilities of videos the model was not trained on (validation, or out of
fold), the band [lo, hi) around the threshold holds the probabilities where a call would be
right less often than ``level`` at equal numbers of real and fake clips: a "fake" call needs
P >= hi, where TPR / (TPR + FPR) >= level over the videos above hi; a "real" call needs P < lo,
where TNR / (TNR + FNR) >= level over the videos below lo. Calibration (train.calibrate on
validation videos, `crossval --calibrate-model` out of fold) writes it into a bundle
(``uncertain``), `predict` says "uncertain" inside it and `evaluate` reports how many videos
fall in it and how right the calls outside it are.
"""

from __future__ import annotations

import numpy as np

BAND_LEVEL = 0.8


def uncertain_band(probabilities: np.ndarray, labels: np.ndarray, threshold: float,
                   level: float = BAND_LEVEL) -> tuple[float, float]:
    """(lo, hi) around ``threshold`` (see the module doc); lo = threshold = hi when every call is
    sure enough, lo = 0 or hi = 1 when no region on that side is."""
    p, y = np.asarray(probabilities, np.float64), np.asarray(labels).astype(bool)
    real, fake = p[~y], p[y]
    hi = 1.0
    for t in np.unique(np.concatenate([p[p >= threshold], [threshold]])):
        tpr, fpr = np.mean(fake >= t), np.mean(real >= t)
        if tpr + fpr > 0 and tpr / (tpr + fpr) >= level:
            hi = float(t)
            break
    lo = 0.0
    for t in np.unique(np.concatenate([p[p <= threshold], [threshold]]))[::-1]:
        tnr, fnr = np.mean(real < t), np.mean(fake < t)
        if tnr + fnr > 0 and tnr / (tnr + fnr) >= level:
            lo = float(t)
            break
    return lo, hi


def band_report(probabilities: dict[str, float], label: dict[str, int], dataset: dict[str, str],
                band: tuple[float, float]) -> dict:
    """Share of videos inside the band, accuracy outside it, and per dataset the share called
    uncertain and the real videos called fake (P >= hi)."""
    lo, hi = band
    ids = sorted(probabilities)
    inside = [v for v in ids if lo <= probabilities[v] < hi]
    outside = [v for v in ids if not lo <= probabilities[v] < hi]
    correct = [int(probabilities[v] >= hi) == label[v] for v in outside]
    per_dataset = {}
    for name in sorted({dataset[v] for v in ids}):
        mine = [v for v in ids if dataset[v] == name]
        reals = [v for v in mine if not label[v]]
        per_dataset[name] = {"uncertain": float(np.mean([lo <= probabilities[v] < hi for v in mine])),
                             "real_called_fake": float(np.mean([probabilities[v] >= hi for v in reals])) if reals else None,
                             "videos": len(mine)}
    return {"band": [lo, hi], "level": BAND_LEVEL, "uncertain": len(inside) / max(1, len(ids)),
            "accuracy_outside": float(np.mean(correct)) if correct else None, "per_dataset": per_dataset}
