"""One error base: every dfd error is a DfdError with the exit code of the README's table."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import deepfake_cli
from deepfake_cli.nets.backbones import WeightsError
from deepfake_cli.nets.bundle import BundleError
from deepfake_cli.data.datasets import DatasetError
from deepfake_cli.errors import DfdError, OptionsError
from deepfake_cli.serve.predict import PredictError
from deepfake_cli.data.store import StoreError, StoreLockedError
from deepfake_cli.data.video import VideoError

PACKAGE = Path(deepfake_cli.__file__).parent


@pytest.mark.parametrize("error, code", [
    (StoreError("x"), 1), (StoreLockedError(Path("s.h5"), "12"), 1), (BundleError("x"), 1),
    (PredictError("x"), 1), (WeightsError("x"), 1), (DatasetError("x"), 1), (OptionsError("x"), 2),
    (VideoError("v.mp4", "empty"), 3),
])
def test_each_error_is_a_dfd_error_with_its_exit_code(error, code):
    assert isinstance(error, DfdError) and error.exit_code == code


def test_options_errors_are_value_errors_for_python_callers():
    assert issubclass(OptionsError, ValueError)


def test_no_error_class_bypasses_the_base():
    """A class that derives straight from Exception anywhere but errors.py would miss the CLI's mapping."""
    direct = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem == "errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(ast.unparse(b) in ("Exception", "BaseException")
                                                       for b in node.bases):
                direct.append(f"{path.stem}.{node.name}")
    assert direct == []
