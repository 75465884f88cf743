"""Two installs (issue 28, item 1): the plain `pip install deepfake-cli` runs predict (and models,
extract, crop, explore, compress, check, merge, pack, unpack) on onnxruntime, OpenCV, NumPy, h5py, Typer, Rich;
the [train] extra adds the frameworks. A command that needs the extra says which pip line brings
it and exits 2. The plain install is imitated here by hiding the extra's packages from imports
(their top-level modules, as importlib.metadata maps them) in a fresh interpreter; the README
gives the sizes of a real one."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from deepfake_cli.errors import EXIT_USAGE, install_line
from tests.helpers import ASTRONAUT, ASTRONAUT_PROBABILITY, ASTRONAUT_VERDICT, ROOT, write_face_clip

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def name(requirement: str) -> str:
    return re.split(r"[=<>!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def train_modules() -> set[str]:
    """The top-level modules the [train] extra's distributions bring."""
    dists = {name(r) for r in PROJECT["optional-dependencies"]["train"]}
    return {module for module, owners in packages_distributions().items()
            if any(o.lower().replace("_", "-") in dists for o in owners) and not module.startswith("_")}


# A fresh `dfd` in which the [train] extra's modules cannot be imported, as in the plain install.
PLAIN = """
import sys
BLOCKED = set(sys.argv[1].split(","))
class PlainInstall:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (the plain install)", name=name)
        return None
sys.meta_path.insert(0, PlainInstall())
sys.argv = ["dfd", *sys.argv[2:]]
from deepfake_cli.cli import app
try:
    app()
finally:
    loaded = sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)
    print("LOADED " + ",".join(loaded), file=sys.stderr)
"""


def plain_dfd(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PLAIN, ",".join(sorted(train_modules())), *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


def test_the_plain_install_holds_only_what_predict_needs_and_test_installs_everything():
    plain = {name(r) for r in PROJECT["dependencies"]}
    train = {name(r) for r in PROJECT["optional-dependencies"]["train"]}
    assert plain >= {"typer", "rich", "opencv-python-headless", "numpy", "h5py", "onnxruntime"}
    heavy = {"tensorflow", "keras", "torch", "torchvision", "facenet-pytorch", "scikit-learn", "onnx", "tf2onnx"}
    assert heavy <= train and not heavy & plain
    # the packages the user named all stay dependencies of the project, pinned
    assert {"typer", "rich", "tensorflow", "facenet-pytorch", "torch", "opencv-python-headless", "numpy",
            "h5py"} <= plain | train
    everything = PROJECT["dependencies"] + [r for extra in PROJECT["optional-dependencies"].values() for r in extra]
    assert all("==" in r for r in everything if not r.startswith("deepfake-cli"))
    assert "deepfake-cli[train]" in PROJECT["optional-dependencies"]["test"]  # .ci/run installs [test] only
    assert {"tensorflow", "torch", "sklearn", "keras", "facenet_pytorch", "tf2onnx"} <= train_modules()


def test_the_imitation_hides_the_frameworks():
    run = subprocess.run([sys.executable, "-c", PLAIN, ",".join(sorted(train_modules())), "--version"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("dfd ")
    hidden = subprocess.run([sys.executable, "-c", PLAIN.replace("from deepfake_cli.cli import app",
                                                                 "import torch"), "torch"],
                            capture_output=True, text=True, timeout=120)
    assert "No module named 'torch' (the plain install)" in hidden.stderr


@pytest.mark.slow
def test_the_plain_install_predicts_from_another_directory(tmp_path):
    run = plain_dfd("predict", ASTRONAUT, "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    result = result[0] if isinstance(result, list) else result
    assert (result["verdict"], result["probability"]) == (ASTRONAUT_VERDICT,
                                                          pytest.approx(ASTRONAUT_PROBABILITY, abs=1e-6))
    assert run.stderr.splitlines()[-1].strip() == "LOADED"  # nothing of the extra was even tried
    models = plain_dfd("models", cwd=tmp_path)
    assert models.returncode == 0, models.stderr[-3000:]
    assert "FaceForensics++: research only" in " ".join(models.stdout.split())


@pytest.mark.parametrize("command", [
    ["train-cnn"], ["train-cnn", "--list-backbones"], ["export-features"], ["train-lstm"], ["evaluate"],
    ["export-onnx", "--model", "default"], ["ensemble", "--model", "e", "--members", "a,b"],
    ["crossval", "--recipe", "r.json", "--out", "cv"]])
def test_a_command_of_the_extra_names_its_pip_line_and_exits_2(command, tmp_path):
    run = plain_dfd(*command, cwd=tmp_path)
    message = " ".join(run.stderr.split())
    assert run.returncode == EXIT_USAGE, run.stderr[-3000:]
    assert f"dfd {command[0]} needs the 'train' extra" in message and install_line() in message
    assert "Traceback" not in run.stderr
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


@pytest.mark.slow
def test_the_store_commands_run_on_the_plain_install(tmp_path):
    """extract, crop (MTCNN on onnxruntime), check, merge, pack, unpack, explore and compress, without the extra."""
    for label in ("real", "fake"):
        (tmp_path / "clips" / label).mkdir(parents=True)
        for i in range(2):
            write_face_clip(tmp_path / "clips" / label / f"{label}{i}.mp4", shift=4 * i, fake=label == "fake")
    store = tmp_path / "s.h5"
    steps = [["extract", tmp_path / "clips", "--fpv", 4, "--store", store, "--json"],
             ["crop", "--store", store, "--size", 32, "--device", "auto", "--json"],
             ["check", "--store", store],
             ["merge", "--out", tmp_path / "m.h5", store],
             ["pack", tmp_path / "faces.pack", "--store", store],
             ["unpack", tmp_path / "faces.pack", "--store", tmp_path / "u.h5"],
             ["explore", "--store", store, "--out", tmp_path / "explore"],
             ["compress", tmp_path / "clips" / "real", "--crf", 40, "--out", tmp_path / "c40"]]
    for step in steps:
        run = plain_dfd(*step, cwd=tmp_path)
        assert run.returncode == 0, (step, run.stderr[-3000:])
        assert run.stderr.splitlines()[-1].strip() == "LOADED", step
    crop = json.loads(plain_dfd("crop", "--store", store, "--json", "--force", "--size", 32).stdout)
    assert crop["cropped"] == 4 and crop["device"] == "cpu"
    cuda = plain_dfd("crop", "--store", store, "--device", "cuda", "--force")
    assert cuda.returncode == EXIT_USAGE and install_line() in " ".join(cuda.stderr.split())


@pytest.mark.slow
def test_predict_evidence_on_the_plain_install(tmp_path):
    """--annotate, --report and --heatmap run on the plain install: the default model ships its class
    activation maps as ONNX (cam.onnx, `dfd export-onnx`)."""
    annotated = plain_dfd("predict", ASTRONAUT, "--annotate", tmp_path / "a.mp4", cwd=tmp_path)
    assert annotated.returncode == 0 and (tmp_path / "a.mp4").stat().st_size > 0, annotated.stderr[-3000:]
    report = plain_dfd("predict", ASTRONAUT, "--report", tmp_path / "r.html", cwd=tmp_path)
    assert report.returncode == 0 and (tmp_path / "r.html").is_file(), report.stderr[-3000:]
    assert report.stderr.splitlines()[-1].strip() == "LOADED"
