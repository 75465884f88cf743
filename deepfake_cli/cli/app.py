"""The `dfd` Typer app: the global options, and every command registered in the order `dfd --help`
lists them. Each command lives with its group (cli.data, cli.train, cli.report, cli.predict),
parses its options, calls the core (which knows nothing of the terminal) and renders what comes
back with rich; what they share (options declared once, the mapping of errors to exit codes,
progress bars) is cli.common.
"""

from __future__ import annotations

import typer

from deepfake_cli import __version__
from deepfake_cli.cli.data import check, compress, crop, explore, extract, merge, pack, unpack
from deepfake_cli.cli.predict import predict
from deepfake_cli.cli.results import merge_results
from deepfake_cli.cli.report import calibrate, evaluate
from deepfake_cli.cli.serve import serve
from deepfake_cli.cli.train import crossval, ensemble, export_features, export_onnx, train_cnn, train_lstm
from deepfake_cli.cli.common import command_line as _command_line  # noqa: F401 (tests read the recorded command line)
from deepfake_cli.cli.common import QUIET_HELP, QUIET_KEY, VERBOSE_HELP, VERBOSE_KEY
from deepfake_cli.cli.models import models
from deepfake_cli.cli.trust import check_model

app = typer.Typer(
    name="dfd",
    help="Tell whether a video of a face has been manipulated (deepfake detection).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"dfd {__version__}")
        raise typer.Exit()


@app.callback()
def main(context: typer.Context,
         version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                      help="Print the version and exit."),
         quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP + " Same as the command's -q."),
         verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP + " Same as the command's -v.")) -> None:
    """dfd: deepfake detection for face videos. Run a command with --help for its options."""
    # read back by every command's -q and -v (cli.common): `dfd -q CMD` is `dfd CMD -q`
    context.meta[QUIET_KEY] = quiet
    context.meta[VERBOSE_KEY] = verbose


COMMANDS = [  # (name, function): the order of `dfd --help`, predict (what most people want) first
    ("predict", predict), ("models", models), ("check-model", check_model),
    ("extract", extract), ("crop", crop), ("merge", merge), ("explore", explore), ("compress", compress),
    ("check", check), ("pack", pack), ("unpack", unpack), ("train-cnn", train_cnn), ("ensemble", ensemble),
    ("export-features", export_features),
    ("train-lstm", train_lstm), ("evaluate", evaluate), ("calibrate", calibrate), ("crossval", crossval),
    ("export-onnx", export_onnx),
    ("serve", serve),  # in the "Use a model" group, after predict and models
    ("merge-results", merge_results),  # joins predict --shard's result files
]
USE_PANEL = "Use a model"
PANELS = {  # the groups of `dfd --help`, in the order of their first command; a command not named here: USE_PANEL
    **dict.fromkeys(("extract", "crop", "merge", "explore", "compress", "check", "pack", "unpack"),
                    "Build a store (your videos)"),
    **dict.fromkeys(("train-cnn", "ensemble", "export-features", "train-lstm", "evaluate", "calibrate", "crossval",
                     "export-onnx"),
                    "Train and measure (the \\[train] extra)"),  # \\[: not Rich markup
}


def _register_commands() -> None:
    for name, function in COMMANDS:
        app.command(name, rich_help_panel=PANELS.get(name, USE_PANEL))(function)


_register_commands()
