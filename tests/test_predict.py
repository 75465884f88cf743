"""Which faces `predict` scores."""

import numpy as np

from deepfake_cli.detectors import Detection
from deepfake_cli.predict import tracks_to_score


def face(x: float, side: float) -> Detection:
    return Detection(box=np.array([x, 0, x + side, side], np.float32), landmarks=np.zeros((5, 2), np.float32),
                     score=0.99)


def track(side: float, x: float, seen: int, n: int = 8) -> list:
    return [face(x, side) if t < seen else None for t in range(n)]


def test_bystanders_posters_and_passers_by_are_not_scored():
    main, partner = track(80, 0, 8), track(60, 200, 8)  # two people in an interview
    poster, passer_by = track(30, 400, 8), track(90, 600, 1)  # small face; seen in one frame of eight
    assert tracks_to_score([main, partner, poster, passer_by], 8) == [main, partner]


def test_the_main_track_is_scored_even_when_nothing_else_qualifies():
    brief = track(40, 0, 1)
    assert tracks_to_score([brief], 8) == [brief]
    assert tracks_to_score([], 8) == []
