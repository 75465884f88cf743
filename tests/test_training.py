"""The shared training pieces (deepfake_cli.train.loop) that need no model to test."""

from __future__ import annotations

import sys

from deepfake_cli.nets.bundle import BundleConfig
from deepfake_cli.cli.app import _command_line
from deepfake_cli.train.loop import Checkpoints, record_command, start_fresh


def test_start_fresh_clears_checkpoints_and_the_stale_paths_only(tmp_path):
    checkpoints = Checkpoints(tmp_path / "checkpoints" / "cnn")
    checkpoints.dir.mkdir(parents=True)
    (checkpoints.dir / "epoch-0000.weights.h5").write_bytes(b"w")
    stale_dir, stale_file, kept = tmp_path / "checkpoints" / "lstm", tmp_path / "lstm.weights.h5", tmp_path / "cnn.weights.h5"
    stale_dir.mkdir()
    (stale_dir / "state.json").write_text("{}")
    stale_file.write_bytes(b"l")
    kept.write_bytes(b"c")
    start_fresh(checkpoints, [stale_dir, stale_file, tmp_path / "never-there"])
    assert checkpoints.dir.is_dir() and list(checkpoints.dir.iterdir()) == []
    assert not stale_dir.exists() and not stale_file.exists() and kept.read_bytes() == b"c"


def test_commands_are_recorded_as_given_never_from_sys_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/dfd", "train-cnn", "--model", "my model"])
    config = BundleConfig(name="m", backbone="efficientnet-lite0", input_size=32, feature_dim=8)
    record_command(config, "train-cnn", None)
    record_command(config, "train-lstm", "dfd train-lstm --epochs 1")
    assert [(c["step"], c["command"]) for c in config.commands] == [
        ("train-cnn", ""), ("train-lstm", "dfd train-lstm --epochs 1")]
    assert _command_line() == "dfd train-cnn --model 'my model'"  # the CLI's: program name, not install path
