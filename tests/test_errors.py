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
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(ast.unparse(b) in ("Exception", "BaseException")
                                                       for b in node.bases):
                direct.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert direct == []


# ---------------------------------------------------------------------- what the command line shows
def invoke(*args):
    from typer.testing import CliRunner

    from deepfake_cli.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_dfd_error_is_one_line_and_its_exit_code(tmp_path, monkeypatch):
    import deepfake_cli.data.merge as merge_module

    def refuse(*args, **kwargs):
        raise merge_module.MergeError("two different versions of one segment")

    monkeypatch.setattr(merge_module, "merge", refuse)
    result = invoke("merge", tmp_path / "out.h5", tmp_path / "a.h5")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.stderr.strip() == "error: two different versions of one segment"


@pytest.mark.parametrize("args, message", [
    (["extract", "x.mp4", "--fpv", "0"], "--fpv must be at least 1"),
    (["merge", "--out", "o.h5"], "give the stores to merge"),  # (a bad --sampling or --runtime is Typer's
    # choice error, listing the choices: tests/test_cli_conventions.py)
    (["predict", "x.mp4", "--model", "no-such-model"], "no model bundle 'no-such-model'"),
])
def test_bad_user_input_is_one_line_not_a_traceback(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code in (1, 2) and isinstance(result.exception, SystemExit), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "dfd.h5").exists()  # refused before a store was made


def test_extract_options_are_usage_errors():
    assert invoke("extract", "x.mp4", "--fpv", "0").exit_code == 2  # the README's "bad command-line options"
    assert invoke("predict", "x.mp4", "--runtime", "fast").exit_code == 2


BUGGY_RUN = """
import deepfake_cli.data.merge as merge_module
from deepfake_cli.cli import app

def broken(*args, **kwargs):
    return {}["segment"]  # a bug: a KeyError nobody meant

merge_module.merge = broken
app(["merge", "out.h5", "a.h5"], prog_name="dfd")
"""


def test_an_unexpected_exception_keeps_its_traceback_and_says_it_is_a_bug(tmp_path):
    import subprocess
    import sys

    from deepfake_cli.errors import BUG_NOTE

    proc = subprocess.run([sys.executable, "-c", BUGGY_RUN], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "KeyError: 'segment'" in proc.stderr
    assert proc.stderr.rstrip().endswith(BUG_NOTE), proc.stderr  # after the traceback, the last thing said
    assert "error: segment" not in proc.stderr  # no longer passed off as the user's mistake
