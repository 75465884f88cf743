import math

import numpy as np
import pytest

from deepfake_cli.scoring.metrics import (
    METRIC_NAMES,
    aggregate_video_scores,
    apply_temperature,
    best_threshold,
    binary_metrics,
    breakdown,
    equal_error_rate,
    fit_temperature,
    label_to_int,
    threshold_for_max_fpr,
)

Y = [0, 0, 1, 1]
S = [0.1, 0.4, 0.35, 0.8]


def test_binary_metrics_hand_computed():
    m = binary_metrics(Y, S)
    assert tuple(m) == METRIC_NAMES
    assert (m["n"], m["n_real"], m["n_fake"]) == (4, 2, 2)
    # called fake at >= 0.5: only 0.8 -> real 0.1 ok, real 0.4 ok, fake 0.35 missed, fake 0.8 ok
    assert m["acc"] == pytest.approx(0.75)
    # pairs (fake, real) ranked correctly: (0.35>0.1), (0.8>0.1), (0.8>0.4); (0.35<0.4) wrong
    assert m["auc"] == pytest.approx(0.75)
    # ranking 0.8 F, 0.4 R, 0.35 F, 0.1 R: precision at the fakes 1/1 and 2/3 -> AP = (1 + 2/3)/2
    assert m["ap"] == pytest.approx(5 / 6)
    expected_logloss = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert m["logloss"] == pytest.approx(expected_logloss)
    # at 0.4: FPR = 1/2 (real 0.4), FNR = 1/2 (fake 0.35)
    assert m["eer"] == pytest.approx(0.5)
    assert m["threshold"] == 0.5


def test_accuracy_uses_threshold_inclusively():
    # at 0.35 the fake 0.35 counts as fake (and the real 0.4 too): 3/4 right
    assert binary_metrics(Y, S, threshold=0.35)["acc"] == pytest.approx(0.75)
    # just above 0.35 the fake is missed as well: 2/4
    assert binary_metrics(Y, S, threshold=0.351)["acc"] == pytest.approx(0.5)
    assert binary_metrics([1], [0.5], threshold=0.5)["acc"] == 1.0


def test_logloss_clips_extreme_scores():
    m = binary_metrics([0, 1], [1.0, 0.0])
    assert m["logloss"] == pytest.approx(-math.log(1e-7))


def test_one_class_gives_nan_not_error():
    m = binary_metrics([0, 0, 0], [0.1, 0.6, 0.2])
    assert math.isnan(m["auc"]) and math.isnan(m["eer"]) and math.isnan(m["ap"])
    assert m["acc"] == pytest.approx(2 / 3)
    assert m["logloss"] == pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.8)) / 3)
    assert (m["n_real"], m["n_fake"]) == (3, 0)
    assert all(math.isnan(v) for v in equal_error_rate([1, 1], [0.2, 0.9]))


@pytest.mark.parametrize(
    "y, s",
    [([], []), ([0, 1], [0.5]), ([0, 2], [0.1, 0.2]), ([0, 1], [0.1, float("nan")])],
)
def test_bad_input_raises(y, s):
    with pytest.raises(ValueError):
        binary_metrics(y, s)


def test_eer_perfectly_separable_is_zero():
    eer, thr = equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert eer == 0.0
    assert 0.2 < thr <= 0.8


def test_eer_interpolated_hand_case():
    # ranking 0.9 F, 0.7 R, 0.6 F, 0.5 R, 0.1 R (3 reals, 2 fakes)
    # at 0.7: FPR 1/3, FNR 1/2; at 0.6: FPR 1/3, FNR 0 -> FNR crosses FPR a third of the way
    # from 0.7 to 0.6 (FNR 1/2 - t/2 = 1/3 -> t = 1/3): EER 1/3 at threshold 0.7 - 0.1/3
    eer, thr = equal_error_rate([0, 0, 0, 1, 1], [0.1, 0.5, 0.7, 0.6, 0.9])
    assert eer == pytest.approx(1 / 3)
    assert thr == pytest.approx(0.7 - 0.1 / 3)


def test_eer_fully_inverted_is_one():
    eer, _ = equal_error_rate([0, 0, 1, 1], [0.8, 0.9, 0.1, 0.2])
    assert eer == pytest.approx(1.0)


def test_threshold_for_max_fpr():
    y = [0, 0, 0, 0, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.7, 0.25, 0.6, 0.9]
    # FPR(t) = share of reals with score >= t
    assert threshold_for_max_fpr(y, s, 0.25) == pytest.approx(0.6)  # 0.7 only: 1/4
    assert threshold_for_max_fpr(y, s, 0.5) == pytest.approx(0.25)  # 0.3, 0.7: 2/4
    assert threshold_for_max_fpr(y, s, 0.0) == pytest.approx(0.9)  # above every real
    assert threshold_for_max_fpr(y, s, 1.0) == pytest.approx(0.1)  # everything
    assert threshold_for_max_fpr(y, s, 0.4) == pytest.approx(0.6)  # 2/4 > 0.4 not allowed


def test_threshold_for_max_fpr_when_a_real_scores_highest():
    thr = threshold_for_max_fpr([0, 1, 0], [0.95, 0.5, 0.2], 0.0)
    assert thr > 0.95
    assert binary_metrics([0, 1, 0], [0.95, 0.5, 0.2], threshold=thr)["acc"] == pytest.approx(2 / 3)


def test_threshold_for_max_fpr_rejects_bad_input():
    with pytest.raises(ValueError):
        threshold_for_max_fpr([1, 1], [0.2, 0.3], 0.1)
    with pytest.raises(ValueError):
        threshold_for_max_fpr([0, 1], [0.2, 0.3], 1.5)


def test_best_threshold_maximises_balanced_accuracy():
    # at 0.6: TPR 2/3, FPR 0 -> J 2/3; at 0.35: TPR 1, FPR 1/3 -> J 2/3 too; tie -> higher one
    y = [0, 0, 0, 1, 1, 1]
    s = [0.1, 0.2, 0.5, 0.35, 0.6, 0.9]
    assert best_threshold(y, s) == pytest.approx(0.6)
    # unique optimum
    assert best_threshold([0, 0, 1, 1, 0, 1], [0.1, 0.3, 0.4, 0.8, 0.45, 0.7]) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        best_threshold(y, s, criterion="f1")
    with pytest.raises(ValueError):
        best_threshold([0, 0], [0.1, 0.2])


def test_fit_temperature_recovers_two():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 4.0, size=50_000)
    y = (rng.random(logits.size) < apply_temperature(logits, 2.0)).astype(int)
    assert fit_temperature(y, logits) == pytest.approx(2.0, rel=0.05)


def test_fit_temperature_is_one_for_calibrated_logits():
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 2.0, size=50_000)
    y = (rng.random(logits.size) < apply_temperature(logits, 1.0)).astype(int)
    assert fit_temperature(y, logits) == pytest.approx(1.0, rel=0.05)


def test_apply_temperature():
    p = apply_temperature([0.0, 2.0, -1000.0, 1000.0], 2.0)
    assert p == pytest.approx([0.5, 1 / (1 + math.exp(-1)), 0.0, 1.0])
    with pytest.raises(ValueError):
        apply_temperature([0.0], 0.0)


def test_aggregate_video_scores():
    frames = [0.1, 0.2, 0.9, 0.4]
    assert aggregate_video_scores(frames) == pytest.approx(0.4)
    assert aggregate_video_scores(frames, "median") == pytest.approx(0.3)
    assert aggregate_video_scores(frames, "max") == pytest.approx(0.9)
    assert aggregate_video_scores(np.array([0.7]), "median") == pytest.approx(0.7)
    with pytest.raises(ValueError):
        aggregate_video_scores([])
    with pytest.raises(ValueError):
        aggregate_video_scores(frames, "top-k")
    with pytest.raises(ValueError):
        aggregate_video_scores([0.1, float("nan")])


ROWS = [
    {"video_id": "r1", "label": 0, "score": 0.1, "method": "", "dataset": "ffpp"},
    {"video_id": "r2", "label": 0, "score": 0.5, "method": "", "dataset": "ffpp"},
    {"video_id": "d1", "label": 1, "score": 0.9, "method": "Deepfakes", "dataset": "ffpp"},
    {"video_id": "d2", "label": 1, "score": 0.6, "method": "Deepfakes", "dataset": "ffpp"},
    {"video_id": "n1", "label": 1, "score": 0.3, "method": "NeuralTextures", "dataset": "ffpp"},
    {"video_id": "c1", "label": "fake", "score": 0.2, "method": "", "dataset": "celebdf"},
    {"video_id": "c2", "label": "real", "score": 0.4, "method": None, "dataset": "celebdf"},
]


def test_breakdown_by_method_pairs_each_method_with_all_reals():
    b = breakdown(ROWS, "method")
    # c1 is a fake without a method: it gets the "" group, paired with the reals too
    assert list(b) == ["", "Deepfakes", "NeuralTextures"]
    assert (b["Deepfakes"]["n_real"], b["Deepfakes"]["n_fake"]) == (3, 2)
    assert b["Deepfakes"]["auc"] == pytest.approx(1.0)  # 0.9, 0.6 above 0.1, 0.5, 0.4
    assert (b["NeuralTextures"]["n_real"], b["NeuralTextures"]["n_fake"]) == (3, 1)
    assert b["NeuralTextures"]["auc"] == pytest.approx(1 / 3)  # 0.3 beats only 0.1
    assert b[""]["n_fake"] == 1


def test_breakdown_plain_grouping():
    b = breakdown(ROWS, "dataset", threshold=0.45)
    assert list(b) == ["celebdf", "ffpp"]
    assert (b["ffpp"]["n"], b["ffpp"]["n_real"], b["ffpp"]["n_fake"]) == (5, 2, 3)
    assert b["ffpp"]["acc"] == pytest.approx(3 / 5)  # r2 (0.5) and n1 (0.3) wrong
    assert b["ffpp"]["threshold"] == 0.45
    assert b["celebdf"]["auc"] == pytest.approx(0.0)
    # method without pairing: the reals form their own one-class group
    unpaired = breakdown(ROWS, "method", pair_reals=False)
    assert math.isnan(unpaired["NeuralTextures"]["auc"])
    assert unpaired[""]["n"] == 4


def test_breakdown_missing_key_and_custom_keys():
    rows = [{"y": 0, "p": 0.2}, {"y": 1, "p": 0.7}]
    b = breakdown(rows, "split", score_key="p", label_key="y")
    assert list(b) == [""]
    assert b[""]["auc"] == 1.0
    assert breakdown([], "dataset") == {}


@pytest.mark.parametrize(
    "label, expected",
    [(0, 0), (1, 1), (True, 1), (0.0, 0), ("1", 1), ("real", 0), ("FAKE", 1), (np.int64(1), 1)],
)
def test_label_to_int(label, expected):
    assert label_to_int(label) == expected


def test_label_to_int_rejects_unknown():
    with pytest.raises(ValueError):
        label_to_int("unknown")
