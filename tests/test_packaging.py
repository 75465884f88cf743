"""The wheel carries the default model: installed (not editable) and run from elsewhere, predict works.

The fresh venv sees this environment's installed packages (a .pth line naming its site-packages;
.pth files there, such as an editable install's hook, are not run) and gets only the dfd wheel
itself (``--no-deps``), so the test takes seconds, not a multi-GB dependency install;
what it checks is dfd's own packaging: the code and deepfake_cli/serve/default_model come from the
wheel, found through the installed package, with the source tree nowhere on the path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.helpers import ASTRONAUT, ASTRONAUT_FACES, ASTRONAUT_PROBABILITY, ASTRONAUT_VERDICT, ROOT


@pytest.mark.slow
def test_the_wheel_installs_and_predicts_from_another_directory(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(dist), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = dist.glob("deepfake_cli-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    (Path(own) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    clip = shutil.copy(ASTRONAUT, elsewhere / "clip.mp4")
    where = subprocess.run([str(python), "-c", "import deepfake_cli, pathlib; print(pathlib.Path(deepfake_cli.__file__).parent)"],
                           cwd=elsewhere, capture_output=True, text=True, timeout=120)
    package = Path(where.stdout.strip())
    assert package.is_relative_to(venv) and (package / "serve" / "default_model" / "cnn.weights.h5").is_file(), where
    shipped = ["serve/default_model/cnn.onnx", "serve/default_model/cam.onnx", "serve/default_model/onnx.json",
               "serve/default_model/MODEL_CARD.md",  # the model card: its training data's terms
               "faces/mtcnn_nets/pnet.onnx", "faces/mtcnn_nets/rnet.onnx", "faces/mtcnn_nets/onet.onnx"]
    assert [name for name in shipped if not (package / name).is_file()] == []  # what the fast start needs
    run = subprocess.run([str(venv / "bin" / "dfd"), "predict", str(clip), "--json"], cwd=elsewhere,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    [result] = json.loads(run.stdout)  # --json: an array, whatever the number of inputs
    # the same verdict as from the source tree (tests/helpers.py, tests/test_architecture.py), to 1e-6
    assert (result["verdict"], result["faces"]) == (ASTRONAUT_VERDICT, ASTRONAUT_FACES)
    assert result["probability"] == pytest.approx(ASTRONAUT_PROBABILITY, abs=1e-6)
    assert not list(package.rglob("*mtcnn_export*")) and not list(package.rglob("export_mtcnn*"))  # maintainers' tool
