"""The whole chain through the command line, on clips the test makes from a real face."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from deepfake_cli.cli.app import app
from tests.helpers import ASTRONAUT, write_face_clip

runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for label in ("real", "fake"):
        (root / label).mkdir()
        for i in range(4):
            write_face_clip(root / label / f"{label}{i}.mp4", shift=4 * i, fake=label == "fake")
    (root / "real" / "empty.mp4").write_bytes(b"")
    # explicit splits (both classes in val), as a user with their own data would give them
    lines = ["path,label,split"] + [f"{label}/{label}{i}.mp4,{label},{'val' if i == 3 else 'train'}"
                                    for label in ("real", "fake") for i in range(4)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def run(*args, expect: int = 0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == expect, f"dfd {' '.join(map(str, args))} -> {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def test_version_and_help():
    assert "dfd 0.1.0" in run("--version").output
    out = run("--help").output
    order = ["predict", "models", "extract", "crop", "merge", "explore", "compress", "check", "train-cnn", "ensemble",
             "export-features", "train-lstm", "evaluate", "export-onnx"]
    listed = [line.split()[1] for line in out.splitlines() if line.startswith("│ ") and line.split()[1] in order]
    assert listed == order  # the README's order, whichever module of deepfake_cli.cli declares each


def test_shared_options_read_the_same_in_every_command():
    import typer

    commands = typer.main.get_command(app).commands
    helps = {name: {p.name: p.help for p in commands[name].params} for name in ("extract", "crop", "export-features")}
    assert len({h["shard"] for h in helps.values()}) == len({h["wait"] for h in helps.values()}) == 1
    assert helps["crop"]["wait"] == "Wait for another writer to finish instead of exiting."


@pytest.mark.slow
def test_whole_chain(dataset, tmp_path):
    store = tmp_path / "s.h5"
    models = tmp_path / "models"
    labels = ("--labels", dataset / "labels.csv")
    # --spread 3: the CNN trains on frames 0, 2, 5 of each 6-frame clip, the sequence is frames 1-4
    summary = json.loads(run("extract", dataset, *labels, "--fpv", 4, "--spread", 3, "--store", store, "--json",
                             "--quiet").stdout)
    assert summary["added"] == 8 and summary["failed"] == 1  # the empty file is recorded, the rest carry on
    assert summary["frames"] == 8 * 6
    assert "already in store" in run("extract", dataset, *labels, "--fpv", 4, "--spread", 3, "--store", store).output
    again = json.loads(run("extract", dataset, *labels, "--fpv", 4, "--spread", 3, "--store", store, "--json").stdout)
    assert again["added"] == 0 and again["already_done"] == 9 and again["other_sampling"] == 0

    crop = json.loads(run("crop", "--store", store, "--size", 64, "--json", "--quiet").stdout)
    assert crop["cropped"] == 8 and crop["face_rate"] >= 0.9
    with h5py.File(store) as f:
        labels = {v.decode() for v in f["videos/label"][()]}
        assert labels == {"real", "fake"}
        vid = f["videos/video_id"][0].decode()
        status = f["videos/status"][0].decode()
        if status == "ok":
            assert f[f"media/{vid}/faces/crops"].shape[1:] == (64, 64, 3)

    common = ["--store", store, "--models-dir", models, "--model", "tiny", "--quiet"]
    run("train-cnn", *common, "--backbone", "efficientnet-b0", "--weights", "none", "--input-size", 32,
        "--epochs", 1, "--rounds", 2, "--batch-size", 8, "--max-frames-per-video", 4, "--test-time-flip")
    config = json.loads((models / "tiny" / "config.json").read_text())
    assert config["backbone"] == "efficientnet-b0" and config["input_size"] == 32
    assert config["test_time_flip"] is True  # so export, evaluate and predict below all score the mirror too
    assert config["face"]["size"] == 64 and config["fpv"] == 4

    exported = json.loads(run("export-features", *common, "--json").stdout)
    assert exported["exported"] == 8 and exported["faces"] <= 8 * 4  # the sequences, not the spread faces
    lstm = run("train-lstm", *common, "--epochs", 1, "--units", 8)
    # its model card, and a warning that 1 real and 1 fake validation video measure nothing (issue 28)
    tiny_val = "its validation set is tiny (1 real, 1 fake videos"
    assert tiny_val in " ".join(lstm.stderr.split()) and (models / "tiny" / "MODEL_CARD.md").is_file()
    card = json.loads((models / "tiny" / "config.json").read_text())["card"]
    assert card["training_data"] == ["csv"] and card["validation"]["level"] == "video, CNN + LSTM, calibrated"

    report = tmp_path / "report"
    measured = run("evaluate", *common, "--out", report, "--json")
    assert tiny_val in " ".join(measured.stderr.split())
    evaluation = json.loads(measured.stdout)
    assert any("video / cnn+lstm" in key for key in evaluation["results"]["overall"])
    assert (report / "metrics.json").exists() and (report / "scores.csv").exists()
    assert list(report.glob("*.png"))

    # predict serves what evaluate measured: the same probability for the same clip (crop detected on
    # every frame, so predict does too), and the verdict the bundle's calibrated threshold gives it
    config = json.loads((models / "tiny" / "config.json").read_text())
    with open(report / "scores.csv", newline="") as fh:
        measured = {Path(r["path"]).name: float(r["score"]) for r in csv.DictReader(fh)
                    if r["level"] == "video" and r["model"] == "cnn+lstm"}
    clip = dataset / "fake" / "fake0.mp4"
    [out] = json.loads(run("predict", clip, "--models-dir", models, "--model", "tiny", "--json", "--device", "cpu",
                           "--detect-every", 1).stdout)
    assert out["probability"] == pytest.approx(measured[clip.name], abs=1e-5)
    assert out["threshold"] == config["threshold"]
    lo, hi = config.get("uncertain") or (config["threshold"], config["threshold"])  # train-lstm fits a band
    assert out["verdict"] == ("uncertain" if lo <= out["probability"] < hi else
                              "fake" if out["probability"] >= config["threshold"] else "real")
    assert out["frames"] == 4 and out["faces"] >= 3 and out["exit_code"] == 0

    # bad inputs: a clear error and its own exit code, never a made-up probability
    bad = run("predict", dataset / "real" / "empty.mp4", "--models-dir", models, "--model", "tiny", expect=3)
    assert "empty" in bad.output or "zero" in bad.output
    noface = tmp_path / "noface.mp4"
    writer = cv2.VideoWriter(str(noface), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 64))
    for _ in range(5):
        writer.write(np.full((64, 64, 3), 127, np.uint8))
    writer.release()
    run("predict", noface, "--models-dir", models, "--model", "tiny", expect=4)
    run("predict", tmp_path / "missing.mp4", "--models-dir", models, "--model", "tiny", expect=3)


def test_predict_without_model_says_none_is_installed(tmp_path, dataset, monkeypatch):
    import deepfake_cli.serve.model_choice as model_choice

    monkeypatch.setattr(model_choice, "default_bundle_dirs", lambda models_dir: [tmp_path / "nothing"])
    result = run("predict", dataset / "real" / "real0.mp4", "--models-dir", tmp_path, expect=1)
    assert "no default model" in result.output


def test_bad_store_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    result = run("crop", "--store", bad, expect=1)
    assert "not a readable HDF5" in result.output


@pytest.mark.slow
def test_model_commands_hide_the_backends_native_start_up_chatter():
    """TensorFlow's CUDA plugins print 'Unable to register cuDNN factory' to fd 2 on import."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-m", "deepfake_cli", "train-cnn", "--list-backbones"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "efficientnet-lite0" in result.stdout
    assert result.stderr == ""


def test_quiet_keeps_errors_and_warnings_and_no_stage_but_extract_creates_a_store(tmp_path):
    """--quiet hides progress, not failures; `crop` or `export-features` run where there is no store
    say so (exit 1) instead of creating an empty store and reporting nothing to do."""
    import subprocess
    import sys

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage")
    run = subprocess.run([sys.executable, "-m", "deepfake_cli", "predict", str(bad), "-q"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 3 and run.stdout == ""
    assert run.stderr.strip().splitlines() == [f"error: {bad}: cannot be opened as a video (not a video file, or "
                                               "unsupported codec)"]
    image = tmp_path / "face.png"
    frame = cv2.VideoCapture(str(ASTRONAUT)).read()[1]
    cv2.imwrite(str(image), frame)
    run = subprocess.run([sys.executable, "-m", "deepfake_cli", "predict", str(image), "-q"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.startswith(f"{image}: ")
    assert "a single image: no motion or sequence evidence" in run.stderr  # a warning survives --quiet
    image.unlink()
    missing = tmp_path / "none.h5"
    for command in (["crop"], ["export-features", "--model", "default"]):
        result = CliRunner().invoke(app, [*command, "--store", str(missing)])
        assert result.exit_code == 1 and f"no store at {missing}" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4"]


def test_help_shows_the_defaults_that_are_not_plain_values():
    """Rich reads "[default: ...]" inside a help string as markup and drops it: such defaults are
    given as show_default, which Typer prints."""
    runner = CliRunner()
    wide = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}
    predict = runner.invoke(app, ["predict", "--help"], env=wide).output
    assert "[default: (the bundled model)]" in predict
    assert "[default: (the stride the model's faces were cropped with, or 4 for a model that records none)]" in predict
    assert "[default: (dfd.h5)]" in runner.invoke(app, ["crop", "--help"], env=wide).output
    assert "[default: (the backbone's native size)]" in runner.invoke(app, ["train-cnn", "--help"], env=wide).output
