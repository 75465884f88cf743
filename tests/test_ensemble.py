"""Ensembles of bundles, bagging by identity groups, and full-frame models (issue 11).

The rules are checked on known numbers; the commands end to end through the CLI on a small
real set: clips of a face extracted and cropped (MTCNN), tiny CNNs trained on the faces and
on the whole frames, every ensemble method built from them, and `predict` / `evaluate`
taking each result like a single bundle.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from deepfake_cli.cli.app import app
from deepfake_cli.train.cnn import bootstrap_groups
from deepfake_cli.scoring.ensemble import EnsembleError, combine, load_ensemble
from deepfake_cli.train.ensemble_fit import blend_halves, fit_params
from deepfake_cli.data.inputs import letterbox, letterboxed
from deepfake_cli.data.store import Store
from tests.helpers import synthetic_store, write_face_clip

TINY = ["--backbone", "efficientnet-lite0", "--input-size", "32", "--epochs", "1", "--rounds", "1",
        "--batch-size", "8", "--quiet"]


# ---------------------------------------------------------------------- the rules
def test_vote_is_the_smoothed_share_of_members_calling_fake():
    p = np.array([[0.9, 0.2, 0.7], [0.1, 0.2, 0.3], [0.9, 0.9, 0.9]])
    thresholds = np.array([0.5, 0.5, 0.8])
    np.testing.assert_allclose(combine("vote", {}, p, thresholds), [(1 + 0.5) / 4, 0.5 / 4, 3.5 / 4])
    np.testing.assert_allclose(combine("average", {}, p, thresholds), p.mean(axis=1))


def test_weighted_gives_a_member_at_chance_no_weight():
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 50)
    good = np.clip(0.5 + 0.3 * (labels - 0.5) + rng.normal(0, 0.1, 100), 0.01, 0.99)
    chance = rng.uniform(0.01, 0.99, 100)
    params = fit_params("weighted", labels, np.stack([good, chance], axis=1))
    assert params["weights"][0] > 0.9 and params["weights"][0] + params["weights"][1] == pytest.approx(1.0)
    raw = combine("weighted", params, np.array([[0.8, 0.1]]), np.array([0.5, 0.5]))
    assert raw[0] == pytest.approx(0.8 * params["weights"][0] + 0.1 * params["weights"][1])


def test_stack_learns_which_member_to_trust():
    rng = np.random.default_rng(1)
    labels = np.array([0, 1] * 100)
    good = np.clip(0.5 + 0.4 * (labels - 0.5) + rng.normal(0, 0.1, 200), 0.01, 0.99)
    inverted = 1 - good  # a member that is right, but the other way round
    params = fit_params("stack", labels, np.stack([rng.uniform(0.01, 0.99, 200), inverted], axis=1))
    assert params["coef"][1] < 0 and abs(params["coef"][1]) > 5 * abs(params["coef"][0])
    raw = combine("stack", params, np.array([[0.5, 0.05], [0.5, 0.95]]), np.array([0.5, 0.5]))
    assert raw[0] > 0.9 and raw[1] < 0.1


def test_blend_halves_never_split_an_identity_and_hold_both_labels(tmp_path):
    store_path = synthetic_store(tmp_path / "s.h5", n_videos=24, n_val=0)  # groups of two videos: one real, one fake
    with Store.open(store_path) as store:
        ids = [e.video_id for e in store.entries()]
        first, second = blend_halves(store, ids, seed=0)
        assert sorted(first + second) == sorted(ids)
        groups = [{store.entry(v).group for v in half} for half in (first, second)]
        assert not groups[0] & groups[1]
        for half in (first, second):
            assert {store.entry(v).label for v in half} == {"real", "fake"}
        assert blend_halves(store, ids, seed=0) == (first, second)
        assert blend_halves(store, ids, seed=5) != (first, second)


def test_bootstrap_resamples_whole_identity_groups(tmp_path):
    store_path = synthetic_store(tmp_path / "s.h5", n_videos=20, n_val=0)
    with Store.open(store_path) as store:
        ids = [e.video_id for e in store.entries()]
        one = bootstrap_groups(store, ids, seed=0, member=1)
        assert bootstrap_groups(store, ids, seed=0, member=1) == one  # a resumed member replays it
        assert bootstrap_groups(store, ids, seed=0, member=2) != one
        assert len(one) == len(ids) and len(set(one)) < len(ids)  # as many draws, with replacement: some left out
        by_group: dict[tuple[str, str], int] = {}
        for vid in one:
            entry = store.entry(vid)
            by_group[(entry.group, entry.label)] = by_group.get((entry.group, entry.label), 0) + 1
        assert {store.entry(v).label for v in one} == {"real", "fake"}
        members = {(store.entry(v).group, store.entry(v).label): v for v in ids}
        assert set(by_group) <= set(members)


def test_members_must_be_distinct_single_bundles(tmp_path):
    from deepfake_cli.train.ensemble_fit import build_ensemble
    from deepfake_cli.errors import OptionsError

    for d in ("a/face", "b/face"):
        (tmp_path / d).mkdir(parents=True)
    with pytest.raises(OptionsError, match="share a directory name \\(face\\)"):
        build_ensemble(None, tmp_path / "ens", [tmp_path / "a/face", tmp_path / "b/face"], "vote")
    with pytest.raises(OptionsError, match="at least two members"):
        build_ensemble(None, tmp_path / "ens", [tmp_path / "a/face"], "vote")
    with pytest.raises(OptionsError, match="method must be one of"):
        build_ensemble(None, tmp_path / "ens", [tmp_path / "a/face", tmp_path / "b/face"], "median")


def test_a_malformed_ensemble_file_is_refused_with_its_reason(tmp_path):
    from dataclasses import asdict

    from deepfake_cli.scoring.ensemble import EnsembleConfig

    members = [{"name": n, "path": f"../{n}", "sha256": {}} for n in ("face", "frame")]
    good = asdict(EnsembleConfig(name="w", method="weighted", members=members, params={"weights": [0.5, 0.5]}))
    EnsembleConfig.from_json(json.dumps(good), "ok.json")  # the well-formed one is read
    for broken, reason in ((dict(good, params={}), "must hold weights"),
                           (dict(good, params={"weights": [1.0]}), "one weight per member"),
                           (dict(good, members=[dict(good["members"][0], sha256="x")] * 2), "members must be"),
                           (dict(good, method="median"), "method must be one of")):
        copy = tmp_path / reason.replace(" ", "_")
        copy.mkdir()
        (copy / "ensemble.json").write_text(json.dumps(broken))
        with pytest.raises(EnsembleError, match=reason):
            load_ensemble(copy)


def test_letterbox_keeps_the_aspect_ratio():
    wide = np.full((40, 160, 3), 200, np.uint8)
    boxed = letterbox(wide, 64)
    assert boxed.shape == (64, 64, 3)
    rows = np.where(boxed[:, 32, 0] > 0)[0]
    assert len(rows) == 16 and rows[0] == 24  # 160x40 -> 64x16, centred
    assert letterbox(np.full((64, 64, 3), 9, np.uint8), 64).min() == 9  # a square fills the box


# ---------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """16 clips (8 train, 8 val, one identity group each) extracted and cropped, a tiny face
    CNN, a tiny frame CNN and a 2-member bagging ensemble trained on them through the CLI."""
    root = tmp_path_factory.mktemp("ensembles")
    rows = ["path,label,split,group"]
    (root / "clips").mkdir()
    for i in range(16):
        label = "fake" if i % 2 else "real"
        clip = write_face_clip(root / "clips" / f"c{i:02d}.mp4", shift=i, fake=label == "fake", frames=6)
        rows.append(f"{clip},{label},{'val' if i >= 8 else 'train'},g{i}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    store, models = root / "dfd.h5", root / "models"
    common = ["--store", str(store), "--models-dir", str(models)]
    runner = CliRunner()

    def dfd(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.stdout

    dfd("extract", "--labels", str(root / "labels.csv"), "--fpv", "6", "--store", str(store), "-q")
    dfd("crop", "--size", "64", "--device", "cpu", "--store", str(store), "-q")
    dfd("train-cnn", "-m", "face", *TINY, *common)
    dfd("train-cnn", "-m", "frame", "--input", "frame", *TINY, *common)
    bagged = json.loads(dfd("train-cnn", "-m", "bag", "--bagging", "2", *TINY[:-1], "--json", *common))
    return {"root": root, "store": store, "models": models, "common": common, "dfd": dfd, "bagged": bagged,
            "runner": runner}


@pytest.mark.slow
def test_a_frame_model_trains_exports_evaluates_and_predicts_without_a_face(workspace):
    dfd, common, root = workspace["dfd"], workspace["common"], workspace["root"]
    config = json.loads((workspace["models"] / "frame" / "config.json").read_text())
    assert config["input"] == "frame" and config["face"] == {}
    assert json.loads(dfd("export-features", "-m", "frame", "--json", *common))["exported"] == 16
    assert "val / video / cnn" in dfd("evaluate", "-m", "frame", *common)
    blank = root / "no_face.mp4"
    import cv2

    writer = cv2.VideoWriter(str(blank), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    for t in range(6):
        writer.write(np.full((64, 96, 3), 40 + 10 * t, np.uint8))
    writer.release()
    runner = workspace["runner"]
    face = runner.invoke(app, ["predict", str(blank), "-m", "face", "--device", "cpu", *common[2:]])
    assert face.exit_code == 4  # no face: the face model has nothing to score
    frame = runner.invoke(app, ["predict", str(blank), "-m", "frame", "--json", *common[2:]])
    assert frame.exit_code == 0, frame.output
    [result] = json.loads(frame.stdout)
    assert result["faces"] == 0 and result["frames"] == 6
    # exactly the frame model's own score of the clip's 6 frames, letterboxed, and its verdict at its threshold
    from deepfake_cli.data.video import sample_frames
    from deepfake_cli.nets.bundle import load_bundle
    from deepfake_cli.scoring.scorer import Scorer

    bundle = load_bundle(workspace["models"] / "frame")
    _, kept, frames = sample_frames(blank, bundle.config.fpv, bundle.config.sampling)
    scorer = Scorer(bundle)
    features, scores = scorer.frames(letterboxed(list(frames), int(bundle.config.input_size)))
    assert len(kept) == 6 and result["frame_scores"] == pytest.approx(scores.tolist(), abs=1e-5)
    assert result["probability"] == pytest.approx(scorer.probability(features, scores), abs=1e-6)
    assert result["threshold"] == pytest.approx(bundle.config.threshold, abs=1e-12)
    assert result["verdict"] == ("fake" if result["probability"] >= result["threshold"] else "real")
    assert any("ran no face detector" in w for w in result["warnings"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["vote", "weighted", "stack", "blend"])
def test_every_method_builds_an_ensemble_that_predict_and_evaluate_take(workspace, method):
    dfd, common, root = workspace["dfd"], workspace["common"], workspace["root"]
    summary = json.loads(dfd("ensemble", method, "--members", "face,frame", "--method", method, "--json", *common))
    name = f"ensemble ({method})"
    assert set(summary["val"]) >= {"face", "frame", name} and summary["val"][name]["n"] == 8
    if method == "blend":
        halves = [summary["val"][f"{name}, fitting half"]["n"], summary["val"][f"{name}, held-out half"]["n"]]
        assert sum(halves) == 8 and min(halves) >= 2
    ensemble = load_ensemble(workspace["models"] / method)
    assert [b.path.name for b in ensemble.members] == ["face", "frame"]

    clip = root / "clips" / "c09.mp4"
    [served] = json.loads(dfd("predict", str(clip), "-m", method, "--device", "cpu", "--json", *common[2:]))
    assert [m["model"] for m in served["members"]] == ["face", "frame"]
    members = [m["probability"] for m in served["members"]]
    assert served["probability"] == pytest.approx(ensemble.probability(members), abs=1e-6)
    lo, hi = ensemble.config.uncertain  # fitted with the threshold (each dataset's real FPR capped)
    assert lo <= ensemble.config.threshold == hi and served["uncertain_band"] == pytest.approx([lo, hi])
    assert served["verdict"] == ("uncertain" if lo <= served["probability"] < hi else
                                 "fake" if served["probability"] >= hi else "real")
    evaluated = json.loads(dfd("evaluate", "-m", method, "--json", *common))["results"]["overall"]
    assert {f"val / video / {n}" for n in ("face", "frame", name)} <= set(evaluated)
    rows = {r: m for r, m in evaluated.items() if r.startswith("val")}
    assert sum(m["n"] for r, m in rows.items() if r.endswith(name)) == 8
    if method == "stack":  # once is enough: how a member scores, and --max-fpr
        [alone] = json.loads(dfd("predict", str(clip), "-m", "face", "--device", "cpu", "--json", *common[2:]))
        assert members[0] == pytest.approx(alone["probability"], abs=1e-5)  # a member scores as it does alone
        fpr = workspace["runner"].invoke(app, ["predict", str(clip), "-m", method, "--max-fpr", "0.1",
                                               "--device", "cpu", *common[2:]])
        assert fpr.exit_code == 0 and f"threshold {ensemble.config.thresholds_at_fpr['0.1']:.3f}" in fpr.stdout
        assert "uncertain" not in fpr.stdout  # --max-fpr: a call, no band


@pytest.mark.slow
def test_bagging_trains_members_on_different_identity_resamples(workspace):
    bagged, models = workspace["bagged"], workspace["models"]
    assert bagged["method"] == "average" and len(bagged["members"]) == 2
    configs = [json.loads((models / f"bag-bag{k}" / "config.json").read_text()) for k in (1, 2)]
    assert [c["training"]["cnn_options"]["bootstrap"] for c in configs] == [1, 2]
    assert configs[0]["split_ids"]["val"] == configs[1]["split_ids"]["val"]
    assert configs[0]["split_ids"]["train"] != configs[1]["split_ids"]["train"]  # two different resamples
    # each member carries its model card, written before the ensemble recorded the members' config.json
    assert all(c["card"]["validation"] and (models / f"bag-bag{k}" / "MODEL_CARD.md").is_file()
               for k, c in zip((1, 2), configs))
    listed = {r["name"]: r for r in json.loads(workspace["dfd"]("models", "--json", "--models-dir", str(models)))}
    assert listed["bag"]["backbone"] == "ensemble of bag-bag1, bag-bag2"
    assert listed["bag"]["validation_auc"] == pytest.approx(bagged["val"]["ensemble (average)"]["auc"])
    assert any("tiny" in w for w in listed["bag"]["warnings"])  # 8 validation videos
    [served] = json.loads(workspace["dfd"]("predict", str(workspace["root"] / "clips" / "c03.mp4"), "-m", "bag",
                                           "--device", "cpu", "--json", *workspace["common"][2:]))
    assert len(served["members"]) == 2
    rerun = json.loads(workspace["dfd"]("train-cnn", "-m", "bag", "--bagging", "2", "--resume", *TINY[:-1],
                                        "--json", *workspace["common"]))
    assert [m["epochs_run"] for m in rerun["members"]] == [m["epochs_run"] for m in bagged["members"]]


@pytest.mark.slow
def test_a_member_changed_after_the_ensemble_was_built_is_refused(workspace, tmp_path):
    dfd, common = workspace["dfd"], workspace["common"]
    models = tmp_path / "models"
    shutil.copytree(workspace["models"] / "face", models / "face")
    shutil.copytree(workspace["models"] / "frame", models / "frame")
    dfd("ensemble", "pair", "--members", "face,frame", "--method", "weighted", "-q", "--store", common[1],
        "--models-dir", str(models))
    load_ensemble(models / "pair")
    weights = models / "frame" / "cnn.weights.h5"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(EnsembleError, match="member frame .* changed since the ensemble was built"):
        load_ensemble(models / "pair")
    result = workspace["runner"].invoke(app, ["predict", str(workspace["root"] / "clips" / "c01.mp4"), "-m", "pair",
                                              "--models-dir", str(models), "--device", "cpu"])
    assert result.exit_code != 0 and "changed since the ensemble was built" in result.output
    refused = workspace["runner"].invoke(app, ["export-features", "-m", "pair", *common[:2], "--models-dir",
                                               str(models)])
    assert refused.exit_code != 0 and "is an ensemble" in refused.output
