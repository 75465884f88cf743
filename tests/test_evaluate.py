"""How `evaluate` groups its numbers: per split, then per dataset, method and compression."""

import pytest

from deepfake_cli.report.evaluate import _results


def video(vid, split, label, score, dataset="ffpp", method="", compression="c23"):
    return {"video_id": vid, "split": split, "level": "video", "model": "cnn+lstm", "label": label,
            "score": score, "dataset": dataset, "method": method, "compression": compression}


ROWS = [
    video("r1", "val", "real", 0.2), video("r2", "val", "real", 0.4, compression="c40"),
    video("f1", "val", "fake", 0.9, method="Deepfakes"), video("f2", "val", "fake", 0.3, method="FaceSwap",
                                                                  compression="c40"),
    video("d1", "val", "real", 0.7, dataset="dfdc", compression=""),
    video("d2", "val", "fake", 0.6, dataset="dfdc", method="dfdc", compression=""),
    video("t1", "test", "real", 0.1, dataset="dfdc", compression=""),
    video("t2", "test", "fake", 0.8, dataset="dfdc", method="dfdc", compression=""),
    video("x1", "train", "fake", 0.5, method="Deepfakes"),
]


CUTS = {("frame", "cnn"): 0.5, ("video", "cnn"): 0.5, ("video", "cnn+lstm"): 0.5}  # as evaluate() passes them


def test_breakdowns_cover_every_held_out_split_and_stay_within_a_dataset():
    results = _results(ROWS, CUTS, "cnn+lstm")
    assert results["breakdown_rows"] == "video / cnn+lstm / val, test"
    assert list(results["dataset"]) == ["val / dfdc", "val / ffpp", "test / dfdc"]
    assert results["dataset"]["val / ffpp"]["auc"] == pytest.approx(0.75)  # 3 of 4 pairs ordered
    assert results["dataset"]["val / dfdc"]["auc"] == 0.0
    # each FF++ method is its fakes against FF++'s reals only, not DFDC's real d1 (score 0.7)
    assert list(results["method"]) == ["val / dfdc / dfdc", "val / ffpp / Deepfakes", "val / ffpp / FaceSwap",
                                       "test / dfdc / dfdc"]
    assert results["method"]["val / ffpp / Deepfakes"]["auc"] == 1.0
    assert results["method"]["val / ffpp / FaceSwap"]["auc"] == 0.5
    assert list(results["compression"]) == ["val / dfdc / none", "val / ffpp / c23", "val / ffpp / c40",
                                            "test / dfdc / none"]
    assert "train" not in " ".join(results["method"])


def test_breakdowns_fall_back_to_the_splits_present():
    results = _results([r for r in ROWS if r["split"] == "train"] + [video("x2", "train", "real", 0.1)], CUTS,
                       "cnn+lstm")
    assert results["breakdown_rows"] == "video / cnn+lstm / train"
    assert list(results["dataset"]) == ["train / ffpp"]
