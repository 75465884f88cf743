"""A clip's probability from its windows, one rule for `predict` and the store (`evaluate`,
`crossval`, calibration through stored_scores).

A clip sampled in several windows of consecutive frames (extract/predict ``--windows``) has
each window tracked and scored on its own: per window one track is chosen (the main one, or
the most suspicious by the face rule) and calibrated, and the clip's probability is those
windows' probabilities aggregated by the bundle's ``video_aggregation`` (one window: its own).
"""

from __future__ import annotations

import numpy as np

from deepfake_cli.scoring.metrics import aggregate_video_scores


def choose_per_window(track_window: list[int], probabilities: list[float], choose: str,
                      aggregation: str) -> tuple[list[int], float]:
    """(the track chosen in each window, in window order; the clip's probability): per window the
    main track (its first) or, with ``choose`` "max", the most suspicious; the clip's is the
    chosen tracks' probabilities aggregated (one window: its own)."""
    per_window: dict[int, list[int]] = {}
    for track, window in enumerate(track_window):
        per_window.setdefault(window, []).append(track)
    chosen = [tracks[0] if choose == "main" else max(tracks, key=lambda t: probabilities[t])
              for _, tracks in sorted(per_window.items())]
    values = [probabilities[t] for t in chosen]
    return chosen, values[0] if len(values) == 1 else aggregate_video_scores(values, aggregation)


def window_rows(windows: np.ndarray) -> list[np.ndarray]:
    """The rows of each window, in window order (``windows``: the window of each row)."""
    windows = np.asarray(windows)
    return [np.flatnonzero(windows == w) for w in np.unique(windows)]


def windowed_probability(scorer, features: np.ndarray, scores: np.ndarray, windows: np.ndarray | None) -> float:
    """The calibrated P(fake) of a stored face sequence (features and CNN scores of its rows):
    with ``windows`` (the window of each row), each window's face track scored and calibrated
    on its own and combined by :func:`choose_per_window`, as `predict` combines them; without,
    the sequence as one window."""
    if windows is None:
        return scorer.probability(features, scores)
    rows = window_rows(windows)
    probabilities = [scorer.probability(features[r], scores[r]) for r in rows]
    _, clip = choose_per_window(list(range(len(rows))), probabilities, "main", scorer.config.video_aggregation)
    return float(clip)


def windowed_score(scorer, features: np.ndarray, scores: np.ndarray, windows: np.ndarray | None) -> float:
    """The uncalibrated video score of a stored face sequence: each window's score (with
    ``windows``) aggregated by the bundle's ``video_aggregation``, the one window's without."""
    if windows is None:
        return scorer.video_score(features, scores)
    values = [scorer.video_score(features[r], scores[r]) for r in window_rows(windows)]
    return values[0] if len(values) == 1 else float(aggregate_video_scores(values, scorer.config.video_aggregation))
