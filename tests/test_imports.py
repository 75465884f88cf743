"""The pinned dependency set must import in either order without crashing.

TensorFlow >= 2.20 segfaults when triton (pulled in by CUDA builds of torch) is imported
after it (tensorflow#124205); these run in subprocesses so a crash is a failure, not a dead
test runner.
"""

import subprocess
import sys

import pytest

ORDERS = {
    "tensorflow-then-torch": "import tensorflow, keras; import torch; import triton; from facenet_pytorch import MTCNN",
    "torch-then-tensorflow": "import torch; import triton; from facenet_pytorch import MTCNN; import tensorflow, keras",
}


@pytest.mark.slow
@pytest.mark.parametrize("order", sorted(ORDERS))
def test_import_order_does_not_crash(order):
    code = ORDERS[order] + "; print('ok')"
    if "triton" in code:
        try:
            import importlib.util

            if importlib.util.find_spec("triton") is None:  # CPU-only torch builds have no triton
                code = code.replace("import triton; ", "")
        except ValueError:
            pass
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{order} crashed with code {proc.returncode}:\n{proc.stderr[-2000:]}"
    assert proc.stdout.strip().endswith("ok")


@pytest.mark.slow
def test_dfd_cli_imports_both_frameworks():
    """dfd's torch side (MTCNN) and Keras side load in one process, and both still compute."""
    code = ("import deepfake_cli.faces.detectors, deepfake_cli.faces.face_crops, deepfake_cli.nets.backbones; import keras, torch; "
            "from facenet_pytorch import MTCNN; "
            "print(keras.backend.backend(), float(keras.ops.sum(keras.ops.ones((2, 3)))), "
            "float(torch.ones(4).sum()), deepfake_cli.faces.detectors.resolve_device('cpu'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-4:] == ["tensorflow", "6.0", "4.0", "cpu"], proc.stdout


def test_help_and_version_import_neither_framework():
    """`dfd --help` and `dfd --version` answer in a fraction of a second: no TensorFlow, no PyTorch."""
    code = ("import sys; from typer.testing import CliRunner; from deepfake_cli.cli.app import app; "
            "assert CliRunner().invoke(app, ['--help']).exit_code == 0; "
            "assert CliRunner().invoke(app, ['--version']).exit_code == 0; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'torch', 'onnxruntime'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
