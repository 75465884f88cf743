"""What every `dfd` command shares: the options declared once, the one mapping of errors to exit
codes (:func:`handled`), progress bars, and the helpers that render summaries.

Errors: a DfdError is the user's to read: one line, ``error: <message>``, and its exit code
(deepfake_cli.errors). Anything else is a bug in dfd: its traceback is kept and a line saying so
(errors.BUG_NOTE) follows it.
"""

from __future__ import annotations

import inspect
import json
import os
import shlex
import sys
from contextlib import contextmanager
from copy import copy
from functools import wraps
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from deepfake_cli.errors import BUG_NOTE, EXIT_ERROR, TRAIN_EXTRA, DfdError, MissingExtraError, OptionsError
from deepfake_cli.progress import Reporter

# Options with a fixed set of values: Typer makes each a choice, so a bad value exits 2 listing them.
Device = Literal["auto", "cpu", "cuda"]
Runtime = Literal["auto", "onnx", "keras"]

# `dfd -q CMD` and `dfd CMD -q` (and -v) mean the same: the group's callback records them in the
# context's meta (shared by the command's context), each command's option reads them back.
QUIET_KEY = "dfd.quiet"
VERBOSE_KEY = "dfd.verbose"
QUIET_HELP = "No progress bars or tables (errors, and warnings that weaken a verdict, still show)."
VERBOSE_HELP = ("Show the native libraries' messages (FFmpeg's decoder warnings, OpenCV's and TensorFlow's "
                "logs).")


def _inherit_quiet(context: typer.Context, value: bool) -> bool:
    return bool(value or context.meta.get(QUIET_KEY))


def _apply_verbosity(context: typer.Context, value: bool) -> bool:
    """-v/--verbose given to dfd or to the command, or neither: then the native libraries' chatter
    is silenced before the command imports them (setting these variables yourself wins)."""
    verbose = bool(value or context.meta.get(VERBOSE_KEY))
    if not verbose:
        quiet_native_libraries()
    return verbose


def quiet_native_libraries() -> None:
    """TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) and FFmpeg's per-packet
    decoder warnings on damaged files ("moov atom not found") are not for our users: the error
    line dfd prints says what is wrong with the file. --verbose (or these variables) shows them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


StoreOption = typer.Option(None, "--store", envvar="DFD_STORE", help="HDF5 store.", show_default="dfd.h5")
QuietOption = typer.Option(False, "--quiet", "-q", help=QUIET_HELP, callback=_inherit_quiet)
VerboseOption = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP, callback=_apply_verbosity)
JsonOption = typer.Option(False, "--json", help="Print the summary as JSON on stdout.")
ModelsDirOption = typer.Option(Path("models"), "--models-dir", help="Where bundles are saved.")
ShardOption = typer.Option(None, "--shard", help="K/N: only this 1/N of the videos (by content hash), e.g. one "
                           "task of a Slurm array; join the stores with `dfd merge`.")
WAIT_HELP = "Wait for another writer to finish instead of exiting."


def wait_option(help: str = WAIT_HELP):
    """`--wait`: wait for the store's writer lock instead of exiting (``help`` says whose)."""
    return typer.Option(False, "--wait", help=help)


WaitOption = wait_option()


def model_or_positional(option: Optional[str], positional: Optional[str], flag: str) -> str:
    """The value of a command's ``flag`` (e.g. --model), also accepted as its old positional
    argument; both given and different, or neither: an OptionsError (exit 2)."""
    if option is not None and positional is not None and option != positional:
        raise OptionsError(f"give {flag} once: {option!r} (option) and {positional!r} (argument) differ")
    value = option if option is not None else positional
    if value is None:
        raise OptionsError(f"missing {flag}")
    return value


def fail(message: str, code: int = EXIT_ERROR) -> None:
    # escape: file names are not markup ("clip [abc].mp4"); soft_wrap: one line, whatever the width
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def report_bug(exc: BaseException) -> None:
    """Add errors.BUG_NOTE to an unexpected exception, shown after its traceback (on Python
    3.10, which has no exception notes, it is printed before)."""
    note = f"dfd: {BUG_NOTE}"
    if hasattr(exc, "add_note"):
        if note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)
    else:
        print(note, file=sys.stderr)


def handled(function):
    """A command with the one mapping of errors to exit codes (the README's table): a DfdError is
    one line and its exit code; Typer's own exits pass; anything else keeps its traceback, with a
    line saying it is a bug. Every command also takes -v/--verbose (VerboseOption) here, so that
    it reads the same everywhere."""

    @wraps(function)  # Typer reads the options from the signature given below
    def run(*args, **kwargs):
        kwargs.pop("verbose", None)  # applied by its option's callback
        try:
            return function(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):
            raise
        except DfdError as exc:
            fail(str(exc), exc.exit_code)
        except Exception as exc:
            report_bug(exc)
            raise

    signature = inspect.signature(function, eval_str=True)
    params = [_default_shown(p) for p in signature.parameters.values()]
    if "verbose" not in signature.parameters:
        params.append(inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=VerboseOption, annotation=bool))
    run.__signature__ = signature.replace(parameters=params)
    return run


def _default_shown(param: inspect.Parameter) -> inspect.Parameter:
    """An option whose default is None (nothing written, no override...) that does not say what its
    default means shows "[default: (none)]", so every option's help shows its default."""
    info = param.default
    if isinstance(info, typer.models.OptionInfo) and info.default is None and info.show_default is True:
        info = copy(info)
        info.show_default = "none"
        return param.replace(default=info)
    return param


def require_extra(what: str, modules: tuple[str, ...] = ("tensorflow", "keras", "sklearn"),
                  extra: str = TRAIN_EXTRA) -> None:
    """The one check a command that needs the [train] extra makes before importing a framework: a
    MissingExtraError (exit 2) naming the missing packages and the pip line that brings them, where
    the plain install (predict, models, extract, crop, explore, compress, check, merge) lacks them."""
    MissingExtraError.check(what, modules, extra)


class RichReporter(Reporter):
    """Progress bars on stderr; warnings printed above them."""

    def __init__(self, console: Console, quiet: bool):
        self.console = console
        self.quiet = quiet
        self.progress: Progress | None = None
        self.task = None

    def start(self, total: int, description: str) -> None:
        self.finish()
        if self.quiet:
            return
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[item]}"),
                                 console=self.console, transient=False)
        self.progress.start()
        self.task = self.progress.add_task(description, total=total, item="")

    def advance(self, item: str = "") -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, item=item[-40:])

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def consoles(quiet: bool) -> tuple[Console, Console]:
    """(stdout, stderr) consoles; ``quiet`` silences stderr's."""
    return Console(), Console(stderr=True, quiet=quiet)


def summary_table(title: str, rows: dict) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key, value in rows.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        table.add_row(key, str(value))
    return table


def print_table_that_fits(out: Console, table: Table) -> None:
    """The table when it fits the terminal; else (80 columns, piped output, CI logs, where Rich
    would cut every figure to "0.…") the same figures as a list: each row's name, then its
    column: value pairs, wrapped to the width."""
    if Measurement.get(out, out.options.update_width(10_000), table).maximum <= out.width:
        out.print(table)
        return
    import textwrap

    headers = [str(c.header) for c in table.columns]
    cells = [list(c.cells) for c in table.columns]
    out.print(f"[bold]{escape(str(table.title or ''))}[/]", highlight=False)
    for row in range(table.row_count):
        out.print(f"  {escape(str(cells[0][row]))}", highlight=False, soft_wrap=True)
        pairs = [f"{h} {cells[i][row]}" for i, h in enumerate(headers) if i]
        for line in textwrap.wrap("  ".join(pairs), width=max(20, out.width - 4)):
            out.print(f"    {escape(line)}", highlight=False)


def print_json(data) -> None:
    from deepfake_cli.files import to_jsonable  # NaN is not JSON: null instead

    sys.stdout.write(json.dumps(to_jsonable(data), indent=2, default=str) + "\n")


def render_summary(out: Console, title: str, summary: dict, quiet: bool, as_json: bool) -> None:
    """A command's summary as JSON, or its flat entries as a table (nothing with --quiet)."""
    if as_json:
        print_json(summary)
    elif not quiet:
        flat = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
        out.print(summary_table(title, flat))


def command_line() -> str:
    """This run's command line as the bundle records it.

    The program's name, not its install path, so the record reads the same on every machine
    (also when run as `python -m deepfake_cli`).
    """
    return shlex.join(["dfd", *sys.argv[1:]])


def import_keras_quietly(what: str = "this command") -> None:
    """Import Keras (and its backend) for a model command without the backend's native chatter;
    without the [train] extra installed, exit 2 saying how to install it (require_extra)."""
    require_extra(what)
    with native_chatter_hidden():
        import keras  # noqa: F401


@contextmanager
def native_chatter_hidden():
    """Hide what native code writes straight to file descriptor 2 inside the block.

    TensorFlow's CUDA plugins write "Unable to register cuDNN factory" and the like while they
    load, and its graph optimiser "Starting new session" while tf2onnx exports, whatever
    TF_CPP_MIN_LOG_LEVEL says. They are hidden unless TF_CPP_MIN_LOG_LEVEL is set below 3
    (`dfd --verbose`); Python errors raised in the block still show, after it.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") != "3":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextmanager
def open_store(store: Optional[Path], write: bool, wait: bool = False, create: bool = False):
    """The store a command works on; only ``create`` (extract) makes a missing one: any other
    stage run where there is no store says so instead of creating an empty one."""
    from deepfake_cli.data.store import Store, StoreError, default_store_path

    path = Path(store) if store is not None else default_store_path()
    if not create and not path.exists() and not path.with_name(path.name + ".d").is_dir():
        raise StoreError(f"no store at {path}: run `dfd extract` first, or pass --store")
    opened = Store.open(store, write=write, wait=wait)
    try:
        yield opened
    finally:
        opened.close()  # a writer commits the index here, which can fail (disk full): a StoreError


def warn_of_weak_validation(path: Path) -> None:
    """Warn (on stderr, --quiet too) when the model's own validation figures cannot be trusted: a
    tiny validation set, or an AUC within noise of 0.5 (nets.card.validation_warnings)."""
    from deepfake_cli.nets.card import card_of, validation_warnings
    from deepfake_cli.scoring.ensemble import is_ensemble

    if is_ensemble(path):
        return
    for warning in validation_warnings(card_of(path)):
        Console(stderr=True).print(f"[yellow]warning:[/] model {escape(str(path))}: {escape(warning)}",
                                   highlight=False, soft_wrap=True)


class EpochProgress:
    """A training command's on_epoch: its epoch line, after a progress bar inside the epoch (batches
    done, rate, time left) that train.loop draws through :meth:`on_batch` after each batch (Rich
    redraws it at most 10 times a second)."""

    def __init__(self, err: Console, quiet: bool, line):
        self.bar = RichReporter(err, quiet)
        self.line = line
        self.started = False

    def on_batch(self, done: int, total: int, loss: float) -> None:
        if not self.started:
            self.bar.start(total, "batches")
            self.started = True
        self.bar.advance(f"loss {loss:.4f}")

    def __call__(self, info: dict) -> None:
        self.bar.finish()
        self.started = False
        self.line(info)


def write_model_cards(bundle_dirs: list[Path], out: Console, err: Console, quiet: bool, write: bool = True) -> None:
    """Write each trained bundle's model card (nets.card: config.json's card, MODEL_CARD.md) and warn
    when its validation figures cannot be trusted (a tiny validation set, an AUC within noise of 0.5).
    ``write=False``: the cards are written already (the members of an ensemble, which records their
    config.json: train.bagging writes them before building it); only the warnings and lines."""
    from deepfake_cli.nets.card import MODEL_CARD_FILE, card_of, validation_warnings, write_card

    for bundle_dir in bundle_dirs:
        card = write_card(bundle_dir) if write else card_of(bundle_dir)
        for warning in validation_warnings(card):  # shown under --quiet too: it weakens the model
            Console(stderr=True).print(f"[yellow]warning:[/] {escape(str(bundle_dir))}: {escape(warning)}",
                                       highlight=False, soft_wrap=True)
        if not quiet:
            out.print(f"wrote {escape(str(bundle_dir / MODEL_CARD_FILE))}", highlight=False, soft_wrap=True)
