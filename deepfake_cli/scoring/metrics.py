"""Evaluation metrics for binary deepfake detection.

Conventions used throughout: label 1 = fake, 0 = real; a score is P(fake) in [0, 1];
a sample is called fake when ``score >= threshold``.

Metrics that need both classes (AUC, EER, AP) are ``float("nan")`` when only one class is
present rather than raising, so that a per-group breakdown over, say, a split holding only
real videos still yields its counts, accuracy and log loss. Data that cannot be measured (no
samples, NaN scores, one class where two are needed, a label that is neither real nor fake)
raises MetricsError, a DfdError the user reads (and a ValueError); a caller's misuse (an unknown
criterion, mismatched lengths) stays a plain ValueError.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from deepfake_cli.errors import DfdError

# scikit-learn and SciPy are imported inside the functions that use them: serving needs only the
# temperature and aggregation maths here. (Under the TensorFlow backend `import keras` loads
# sklearn and matplotlib itself, so today this saves nothing there; a serving path without
# Keras would not pay the ~1 s of sklearn.metrics.)

METRIC_NAMES = ("n", "n_real", "n_fake", "acc", "auc", "eer", "ap", "logloss", "threshold")
COUNT_NAMES = ("n", "n_real", "n_fake")
AGGREGATIONS = ("mean", "median", "max")
THRESHOLD_CRITERIA = ("balanced_accuracy",)
TEMPERATURE_BOUNDS = (0.05, 20.0)
PROB_EPS = 1e-7
TIE_TOLERANCE = 1e-12


class MetricsError(DfdError, ValueError):
    """Scores or labels that cannot be measured: the message says what is missing."""


def called_fake(score, threshold):
    """The verdict rule every stage shares: a score at or above the threshold is called fake
    (a bool for one score, a bool array for an array of scores)."""
    return np.asarray(score) >= threshold


_REAL_LABELS = ("0", "real", "false")
_FAKE_LABELS = ("1", "fake", "true")


# --------------------------------------------------------------------------- inputs


def _as_arrays(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert labels (0/1) and scores (finite floats) to 1-D arrays."""
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if y.size == 0:
        raise MetricsError("no samples: metrics need at least one labelled score")
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (real) or 1 (fake), got {sorted(set(y.tolist()))}")
    if not np.isfinite(s).all():
        raise MetricsError("scores must be finite (found NaN or inf)")
    return y.astype(np.int64), s


def _has_both_classes(y: np.ndarray) -> bool:
    return bool(y.min() == 0 and y.max() == 1)


def _require_both_classes(y: np.ndarray, what: str) -> None:
    if not _has_both_classes(y):
        raise MetricsError(f"{what} needs both real (0) and fake (1) samples")


def label_to_int(label) -> int:
    """Map a label written as 0/1, True/False, "0"/"1" or "real"/"fake" to 0 or 1."""
    if isinstance(label, (int, float, np.integer, np.floating)) and label in (0, 1):
        return int(label)
    text = str(label).strip().lower()
    if text in _REAL_LABELS:
        return 0
    if text in _FAKE_LABELS:
        return 1
    raise MetricsError(f"label {label!r} is neither real (0) nor fake (1)")


# --------------------------------------------------------------------------- metrics


def equal_error_rate(y_true, y_score) -> tuple[float, float]:
    """Equal error rate and the threshold where it is reached.

    The EER is where the false positive rate (reals called fake) equals the false negative
    rate (fakes called real). The ROC is piecewise linear between its operating points, so
    the crossing is found by linear interpolation between the two points around it; the
    threshold is interpolated the same way (between the two scores around the crossing).
    Returns ``(nan, nan)`` when only one class is present.
    """
    from sklearn.metrics import roc_curve
    y, s = _as_arrays(y_true, y_score)
    if not _has_both_classes(y):
        return math.nan, math.nan
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    gap = (1.0 - tpr) - fpr  # FNR - FPR: +1 at the first point, -1 at the last, non-increasing
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0:
        return float(fpr[i]), float(thresholds[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    eer = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    if not np.isfinite(thresholds[i - 1]):  # first ROC point sits at threshold +inf
        return float(eer), float(thresholds[i])
    return float(eer), float(thresholds[i - 1] + t * (thresholds[i] - thresholds[i - 1]))


def binary_metrics(y_true, y_score, threshold: float = 0.5) -> dict[str, float]:
    """All of METRIC_NAMES for one set of labelled scores.

    - ``n``, ``n_real``, ``n_fake``: counts (ints).
    - ``acc``: accuracy when ``score >= threshold`` means fake.
    - ``auc``: ROC AUC; ``eer``: equal error rate (see equal_error_rate); ``ap``: average
      precision with fake as the positive class. These three are NaN when only one class
      is present.
    - ``logloss``: binary cross-entropy with scores clipped to [1e-7, 1 - 1e-7]; defined
      for one class too.
    - ``threshold``: the threshold used for ``acc``.

    Raises MetricsError (a ValueError too) on empty input or non-finite scores, ValueError on
    mismatched lengths or labels other than 0/1.
    """
    from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score
    from sklearn.metrics import log_loss as sklearn_log_loss

    y, s = _as_arrays(y_true, y_score)
    both = _has_both_classes(y)
    n_fake = int(y.sum())
    return {
        "n": int(y.size),
        "n_real": int(y.size - n_fake),
        "n_fake": n_fake,
        "acc": float(accuracy_score(y, called_fake(s, threshold).astype(np.int64))),
        "auc": float(roc_auc_score(y, s)) if both else math.nan,
        "eer": equal_error_rate(y, s)[0] if both else math.nan,
        "ap": float(average_precision_score(y, s)) if both else math.nan,
        "logloss": float(sklearn_log_loss(y, np.clip(s, PROB_EPS, 1.0 - PROB_EPS), labels=[0, 1])),
        "threshold": float(threshold),
    }


# --------------------------------------------------------------------------- training


def safe_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, or NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def log_loss(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities (unweighted)."""
    p = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


# --------------------------------------------------------------------------- thresholds


def threshold_for_max_fpr(y_true, y_score, max_fpr: float) -> float:
    """Smallest threshold whose false positive rate on the reals is at most ``max_fpr``.

    Candidates are the observed scores (reals and fakes): the FPR only changes at a real's
    score, so the smallest qualifying candidate catches the most fakes. When no observed
    score qualifies (e.g. ``max_fpr=0`` and the highest score belongs to a real), the
    result is the next float above the highest score, so nothing is called fake. Needs at
    least one real; fakes are optional.
    """
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in [0, 1], got {max_fpr}")
    y, s = _as_arrays(y_true, y_score)
    reals = np.sort(s[y == 0])
    if reals.size == 0:
        raise MetricsError("threshold_for_max_fpr needs at least one real (0) sample")
    candidates = np.unique(s)  # ascending
    n_at_or_above = reals.size - np.searchsorted(reals, candidates, side="left")
    ok = n_at_or_above / reals.size <= max_fpr
    if ok.any():
        return float(candidates[np.argmax(ok)])
    return float(np.nextafter(candidates[-1], np.inf))


def best_threshold(y_true, y_score, criterion: str = "balanced_accuracy") -> float:
    """Threshold maximising balanced accuracy, i.e. Youden's J = TPR - FPR.

    Meant for validation data. Candidates are the observed scores; ties (up to float
    rounding) go to the highest threshold, i.e. the fewest false alarms. Needs both classes.
    """
    from sklearn.metrics import roc_curve
    if criterion not in THRESHOLD_CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose from {THRESHOLD_CRITERIA}")
    y, s = _as_arrays(y_true, y_score)
    _require_both_classes(y, "best_threshold")
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    j = (tpr - fpr)[1:]  # skip the +inf threshold (nothing called fake)
    best = int(np.argmax(j >= j.max() - TIE_TOLERANCE))  # first = highest of tied thresholds
    return float(thresholds[1:][best])


# --------------------------------------------------------------------------- calibration


def _sigmoid_nll(y: np.ndarray, logits: np.ndarray, temperature: float) -> float:
    """Mean binary NLL of sigmoid(logits / T), computed stably in log space."""
    z = logits / temperature
    return float(np.mean(np.where(y == 1, np.logaddexp(0.0, -z), np.logaddexp(0.0, z))))


def fit_temperature(y_true, logits) -> float:
    """Temperature T > 0 minimising the NLL of ``sigmoid(logits / T)`` (temperature scaling).

    Bounded scalar search over T in [0.05, 20]. The NLL is evaluated in log space rather
    than through sklearn's log_loss, whose probability clipping flattens the objective for
    confident logits. T > 1 means the model was over-confident. Needs both classes.
    """
    from scipy.optimize import minimize_scalar
    y, z = _as_arrays(y_true, logits)
    _require_both_classes(y, "fit_temperature")
    result = minimize_scalar(
        lambda t: _sigmoid_nll(y, z, t),
        bounds=TEMPERATURE_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(result.x)


def logit(probability) -> np.ndarray:
    """log(p / (1 - p)), with p clipped to [1e-7, 1 - 1e-7] so that 0 and 1 stay finite."""
    p = np.clip(np.asarray(probability, dtype=np.float64), PROB_EPS, 1.0 - PROB_EPS)
    return np.log(p / (1.0 - p))


def apply_temperature(logits, temperature: float) -> np.ndarray:
    """Calibrated P(fake) = sigmoid(logits / T)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow warnings


# --------------------------------------------------------------------------- aggregation


def aggregate_video_scores(frame_scores, method: str = "mean") -> float:
    """One video score from its per-frame scores: "mean", "median" or "max".

    MetricsError for no frames or NaN/inf scores; ValueError for an unknown method.
    """
    if method not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {method!r}; choose from {AGGREGATIONS}")
    s = np.asarray(frame_scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise MetricsError("no frame scores to aggregate")
    if not np.isfinite(s).all():
        raise MetricsError("frame scores must be finite (found NaN or inf)")
    return float({"mean": np.mean, "median": np.median, "max": np.max}[method](s))


# --------------------------------------------------------------------------- breakdowns


def _group_key(row: Mapping, by: str) -> str:
    value = row.get(by)
    return "" if value is None else str(value)


def _labels_scores(rows: Iterable[Mapping], score_key: str, label_key: str):
    rows = list(rows)
    labels = [label_to_int(r[label_key]) for r in rows]
    scores = [float(r[score_key]) for r in rows]
    return labels, scores


def _groups_plain(rows: Sequence[Mapping], by: str) -> dict[str, list[Mapping]]:
    groups: dict[str, list[Mapping]] = {}
    for row in rows:
        groups.setdefault(_group_key(row, by), []).append(row)
    return groups


def _groups_paired_with_reals(
    rows: Sequence[Mapping], by: str, label_key: str
) -> dict[str, list[Mapping]]:
    reals = [r for r in rows if label_to_int(r[label_key]) == 0]
    fakes = [r for r in rows if label_to_int(r[label_key]) == 1]
    return {key: group + reals for key, group in _groups_plain(fakes, by).items()}


def breakdown(
    rows: list[dict],
    by: str,
    score_key: str = "score",
    label_key: str = "label",
    threshold: float = 0.5,
    pair_reals: bool | None = None,
) -> dict[str, dict]:
    """binary_metrics per value of ``row[by]`` (e.g. "dataset", "method", "compression").

    Labels may be 0/1 or "real"/"fake"; a missing or None ``row[by]`` groups under "".

    By default (``pair_reals=None``) grouping by "method" pairs reals with each method:
    reals carry no manipulation method (``method == ""``), so every method's group is that
    method's fakes plus ALL the reals among ``rows``. This is how FaceForensics++ reports
    per-method AUC (e.g. Deepfakes vs. the original videos). There is no group for the reals
    alone. Pass only the rows of one dataset/split/compression if the reals should be
    limited to those. ``pair_reals=True``/``False`` forces this behaviour on/off for any
    key. Groups come back sorted by key.
    """
    rows = list(rows)
    if pair_reals is None:
        pair_reals = by == "method"
    groups = (
        _groups_paired_with_reals(rows, by, label_key) if pair_reals else _groups_plain(rows, by)
    )
    result = {}
    for key in sorted(groups):
        labels, scores = _labels_scores(groups[key], score_key, label_key)
        result[key] = binary_metrics(labels, scores, threshold=threshold)
    return result
