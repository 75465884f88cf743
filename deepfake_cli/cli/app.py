"""The `dfd` Typer app: the global options, and every command registered in the order `dfd --help`
lists them. Each command lives with its group (cli.data, cli.train, cli.report, cli.predict),
parses its options, calls the core (which knows nothing of the terminal) and renders what comes
back with rich; what they share (options declared once, the mapping of errors to exit codes,
progress bars) is cli.common.
"""

from __future__ import annotations

import os

import typer

from deepfake_cli import __version__
from deepfake_cli.cli.data import check, compress, crop, explore, extract, merge
from deepfake_cli.cli.predict import predict
from deepfake_cli.cli.report import evaluate
from deepfake_cli.cli.train import crossval, ensemble, export_features, export_onnx, train_cnn, train_lstm
from deepfake_cli.cli.common import command_line as _command_line  # noqa: F401 (tests read the recorded command line)

app = typer.Typer(
    name="dfd",
    help="Tell whether a video of a face has been manipulated (deepfake detection).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"dfd {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                      help="Print the version and exit."),
         verbose: bool = typer.Option(False, "--verbose", help="Show the native libraries' messages (FFmpeg's "
                                      "decoder warnings, OpenCV's and TensorFlow's logs).")) -> None:
    """dfd: deepfake detection for face videos. Run a command with --help for its options."""
    # TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) and FFmpeg's per-packet
    # decoder warnings on damaged files ("moov atom not found") are not for our users: the
    # error line dfd prints says what is wrong with the file. --verbose (or setting these
    # variables yourself) shows them.
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


COMMANDS = [  # (name, function): the order of `dfd --help`
    ("extract", extract), ("crop", crop), ("merge", merge), ("explore", explore), ("compress", compress),
    ("check", check), ("train-cnn", train_cnn), ("ensemble", ensemble), ("export-features", export_features),
    ("train-lstm", train_lstm), ("evaluate", evaluate), ("crossval", crossval), ("export-onnx", export_onnx),
    ("predict", predict),
]


def _register_commands() -> None:
    for name, function in COMMANDS:
        app.command(name)(function)


_register_commands()
