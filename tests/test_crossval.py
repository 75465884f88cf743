"""`dfd crossval`: identity-group folds, out-of-fold thresholds, recipes, and a whole run that
resumes per fold and never trains on the fold it scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from deepfake_cli.data.splits import group_key
from deepfake_cli.data.store import Store
from deepfake_cli.errors import OptionsError
from deepfake_cli.nets.bundle import load_bundle
from deepfake_cli.train import TrainingDataError
from deepfake_cli.train.crossval import (SCORES_FILE, assign_folds, fold_plan, load_recipe, oof_thresholds,
                                         run_crossval, usable_entries)
from tests.helpers import synthetic_store, video_entry


def two_datasets() -> list:
    """ffpp: 6 people, each a real video and two fakes; dfdc: 8 source videos, each real + fake."""
    entries = []
    for person in range(6):
        entries.append(video_entry(f"f{person}r", label="real", dataset="ffpp", group=f"ffpp:{person}"))
        entries += [video_entry(f"f{person}x{k}", dataset="ffpp", group=f"ffpp:{person}") for k in range(2)]
    for source in range(8):
        entries.append(video_entry(f"d{source}r", label="real", dataset="dfdc", group=f"dfdc:{source}"))
        entries.append(video_entry(f"d{source}x", dataset="dfdc", group=f"dfdc:{source}"))
    return entries


def test_folds_hold_whole_groups_and_every_dataset():
    entries = two_datasets()
    fold_of = assign_folds(entries, 3, seed=0)
    assert set(fold_of) == {e.video_id for e in entries}
    by_group: dict[str, set[int]] = {}
    for e in entries:
        by_group.setdefault(group_key(e), set()).add(fold_of[e.video_id])
    assert all(len(folds) == 1 for folds in by_group.values())  # a person is never on both sides
    for k in range(3):
        held = [e for e in entries if fold_of[e.video_id] == k]
        assert {e.dataset for e in held} == {"ffpp", "dfdc"}
        assert {e.label for e in held} == {"real", "fake"}
    assert sorted(np.bincount([fold_of[e.video_id] for e in entries if e.dataset == "ffpp"])) == [6, 6, 6]
    assert assign_folds(entries, 3, seed=0) == fold_of
    assert assign_folds(entries, 3, seed=1) != fold_of


def test_too_few_groups_for_the_folds_is_an_error():
    with pytest.raises(TrainingDataError, match="ffpp has 6 identity group"):
        assign_folds(two_datasets(), 7)
    with pytest.raises(OptionsError):
        assign_folds(two_datasets(), 1)


def test_cross_dataset_arms_hold_out_one_dataset_each():
    plan = fold_plan(two_datasets(), 2, seed=0, cross_dataset=True)
    assert list(plan) == ["fold-0", "fold-1", "without-dfdc", "without-ffpp"]
    assert plan["without-dfdc"] == sorted(f"d{s}{t}" for s in range(8) for t in ("r", "x"))


def test_the_capped_threshold_keeps_every_datasets_real_fpr_under_the_cap():
    entries = {e.video_id: e for e in two_datasets()}
    label = {v: int(e.label == "fake") for v, e in entries.items()}
    rng = np.random.default_rng(0)
    # dfdc's real videos score high (its scores drift up), ffpp's low
    scores = {v: float(rng.uniform(0.5, 0.9) if e.dataset == "dfdc" else rng.uniform(0.1, 0.5)) + 0.1 * label[v]
              for v, e in entries.items()}
    cuts = oof_thresholds(entries, scores, label, max_real_fpr=0.1)
    capped = cuts["max_real_fpr_0.1"]
    assert all(rate <= 0.1 for rate in capped["real_fpr"].values())
    reals = sorted(s for v, s in scores.items() if entries[v].dataset == "dfdc" and not label[v])
    assert capped["threshold"] == pytest.approx(reals[-1], abs=1e-12)  # 8 reals: none may pass, just above the top one
    assert capped["threshold"] >= cuts["balanced"]["threshold"]
    assert cuts["balanced"]["real_fpr"]["dfdc"] > 0.1  # one threshold for both datasets misfires on dfdc


def test_a_recipe_names_train_cnn_options_only(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"about": "x", "train-cnn": {"backbone": "efficientnet-lite0", "epochs": 2}}))
    options = load_recipe(good)
    assert (options.backbone, options.epochs, options.rounds) == ("efficientnet-lite0", 2, 2)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train-cnn": {"epoch": 2}}))
    with pytest.raises(OptionsError, match="unknown train-cnn option.*epoch"):
        load_recipe(bad)
    bad.write_text("{not json")
    with pytest.raises(OptionsError, match="cannot read recipe"):
        load_recipe(bad)
    bad.write_text(json.dumps({"epochs": 2}))
    with pytest.raises(OptionsError, match="train-cnn"):
        load_recipe(bad)


def test_every_recipe_of_the_default_model_loads():
    """models/default's recipes are what train.sh and crossval run: each names known options only."""
    recipes = sorted((Path(__file__).parent.parent / "models" / "default").glob("recipe*.json"))
    assert len(recipes) >= 6
    engines = {load_recipe(r).engine for r in recipes}
    assert engines == {"keras", "torch"}


def test_train_cnn_refuses_training_options_typed_beside_a_recipe(tmp_path):
    from deepfake_cli.cli import app

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"train-cnn": {"epochs": 1}}))
    result = CliRunner().invoke(app, ["train-cnn", "--recipe", str(recipe), "--epochs", "3", "--lr", "0.1",
                                      "--store", str(tmp_path / "none.h5")])
    assert result.exit_code == 2
    assert "drop --epochs, --lr" in result.output


RECIPE = {"backbone": "efficientnet-lite0", "input_size": 32, "epochs": 1, "rounds": 1, "batch_size": 16,
          "learning_rate": 1e-3}


@pytest.mark.slow
def test_a_crossval_run_scores_every_video_out_of_fold_and_resumes(tmp_path):
    from deepfake_cli.train.cnn import CNNTrainOptions

    store_path = synthetic_store(tmp_path / "s.h5", n_videos=12, n_val=0)
    out = tmp_path / "cv"
    options = CNNTrainOptions(**RECIPE)
    with Store.open(store_path) as store:
        report = run_crossval(store, out, options, folds=2)
        held = {name: json.loads((out / name / SCORES_FILE).read_text()) for name in ("fold-0", "fold-1")}
        assert sorted(v for h in held.values() for v in h["scores"]) == sorted(e.video_id for e in usable_entries(store))
        for name, fold in held.items():
            trained_on = load_bundle(out / name).config.split_ids
            assert not set(fold["held_out"]) & (set(trained_on["train"]) | set(trained_on["val"]))
        row = report["within"]["synthetic"]
        assert (row["real"], row["fake"], len(row["folds"])) == (6, 6, 2)
        assert report["folds_done"] == ["fold-0", "fold-1"]
        assert set(report["thresholds"]) == {"balanced", "max_real_fpr_0.1"}
        stamp = (out / "fold-0" / SCORES_FILE).stat().st_mtime_ns
        again = run_crossval(store, out, options, folds=2)  # both folds done: nothing retrained
        assert (out / "fold-0" / SCORES_FILE).stat().st_mtime_ns == stamp
        assert again["within"] == report["within"]


def test_the_uncertain_band_holds_the_scores_that_cannot_be_told_apart():
    from deepfake_cli.scoring.uncertainty import band_report, uncertain_band

    # reals at 0.1..0.5, fakes at 0.4..0.9: the overlap 0.4-0.5 cannot be called either way
    real = np.linspace(0.1, 0.5, 41)
    fake = np.linspace(0.4, 0.9, 51)
    p = np.concatenate([real, fake])
    y = np.concatenate([np.zeros_like(real), np.ones_like(fake)])
    lo, hi = uncertain_band(p, y, threshold=0.45, level=0.9)
    assert 0.3 < lo <= 0.45 <= hi < 0.6
    ids = [str(i) for i in range(len(p))]
    report = band_report(dict(zip(ids, p)), dict(zip(ids, y.astype(int))), {v: "d" for v in ids}, (lo, hi))
    assert 0 < report["uncertain"] < 0.5 and report["accuracy_outside"] >= 0.9
    assert report["per_dataset"]["d"]["real_called_fake"] < 0.15  # reals above hi: at most 1 in 10 calls
    # a perfect separation leaves no band; no separation leaves one side open
    assert uncertain_band(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]), 0.5) == (0.5, 0.5)
    lo, hi = uncertain_band(np.array([0.4, 0.6, 0.4, 0.6]), np.array([0, 0, 1, 1]), 0.5)
    assert (lo, hi) == (0.0, 1.0)


def test_clip_rules_are_compared_on_the_same_held_out_videos():
    from deepfake_cli.train.scoring_rules import RULES, compare_rules, rule_scores

    # sequence frames say nothing; the spread frames' maximum tells fakes apart
    folds = {"fold-0": {"a": {"sequence": [0.5, 0.5], "spread": [0.1, 0.1, 0.9]},
                        "b": {"sequence": [0.5, 0.5], "spread": [0.1, 0.2, 0.6]}},
             "fold-1": {"c": {"sequence": [0.5, 0.5], "spread": [0.05, 0.05, 0.8]},
                        "d": {"sequence": [0.5], "spread": [0.35, 0.35, 0.35]},
                        "e": {"sequence": [0.7]}}}  # no spread frames: scored on its sequence
    label = {"a": 1, "b": 0, "c": 1, "d": 0, "e": 1}
    result = compare_rules(folds, label, {v: "x" for v in label})
    assert set(result["rules"]) == {f"{f} {a}" for f, a in RULES}
    assert result["chosen"] == result["best"] == ["spread", "max"]  # it gains in both folds: 0.5, 0.25
    assert rule_scores(folds["fold-1"], ("spread", "max"))["e"] == 0.7
    # a gain smaller than its spread over the folds keeps the old rule: spread max, best pooled
    # (0.75 against 0.67), gains 0.5 in fold 0 and nothing in fold 1
    folds["fold-1"]["c"]["spread"] = [0.05, 0.05, 0.35]
    close = compare_rules(folds, label, {v: "x" for v in label})
    assert close["best"] == ["spread", "max"] and close["gain_over_folds"] == [0.5, 0.0]
    assert close["chosen"] == ["sequence", "mean"]
    assert result["rules"]["sequence mean"]["mean"] < result["rules"]["spread max"]["mean"]
    # a store without spread frames: only the sequence rules, not the same figures twice
    no_spread = {k: {v: {"sequence": row["sequence"]} for v, row in fold.items()} for k, fold in folds.items()}
    alone = compare_rules(no_spread, label, {v: "x" for v in label})
    assert set(alone["rules"]) == {f"sequence {a}" for _, a in RULES[:len(RULES) // 2]}
    assert alone["chosen"][0] == "sequence"


@pytest.mark.slow
def test_crossval_chooses_a_clip_rule_and_writes_it_with_the_band(tmp_path):
    from deepfake_cli.train.cnn import CNNTrainOptions, train_cnn
    from deepfake_cli.train.crossval import apply_calibration
    from deepfake_cli.train.scoring_rules import FRAME_SCORES_FILE

    store_path = synthetic_store(tmp_path / "s.h5", n_videos=12, n_val=2)
    options = CNNTrainOptions(**RECIPE)
    with Store.open(store_path) as store:
        report = run_crossval(store, tmp_path / "cv", options, folds=2, choose_rule=True)
        assert (tmp_path / "cv" / "fold-0" / FRAME_SCORES_FILE).is_file()
        assert len(report["rule"]["rules"]) == 6 and report["rule"]["chosen"][0] in ("sequence", "spread")
        lo, hi = report["uncertain"]["band"]
        assert 0.0 <= lo <= report["thresholds"]["max_real_fpr_0.1"]["threshold"] <= hi <= 1.0
        train_cnn(store, tmp_path / "model", options)
    written = apply_calibration(report, tmp_path / "model")
    config = load_bundle(tmp_path / "model").config
    assert config.uncertain == [lo, hi] == written["uncertain"]
    assert config.video_aggregation == report["rule"]["chosen"][1]
