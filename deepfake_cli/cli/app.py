"""The `dfd` command line: each command parses its options, calls the core (which knows nothing of
the terminal), and renders what comes back with rich.

Exit codes are set here, in one place: every command is registered with `command`, which turns
a DfdError into its own exit code (deepfake_cli.errors) and a ValueError or KeyError of the core
into exit 1, each with a one-line message.

Why this is one long module: it is mostly the commands' option declarations, which Typer reads
from each command's signature; each command's body is a few lines of parse, call and render.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from deepfake_cli import __version__
from deepfake_cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, EXIT_WEAK_EVIDENCE, DfdError
from deepfake_cli.progress import Reporter
from deepfake_cli.data.shards import parse_shard

app = typer.Typer(
    name="dfd",
    help="Tell whether a video of a face has been manipulated (deepfake detection).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

StoreOption = typer.Option(None, "--store", envvar="DFD_STORE", help="HDF5 store [default: dfd.h5]")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress bars or tables.")
JsonOption = typer.Option(False, "--json", help="Print the summary as JSON on stdout.")


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


def _consoles(quiet: bool) -> tuple[Console, Console]:
    return Console(), Console(stderr=True, quiet=quiet)


def fail(message: str, code: int = EXIT_ERROR) -> None:
    # escape: file names are not markup ("clip [abc].mp4"); soft_wrap: one line, whatever the width
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def error_message(exc: Exception) -> str:
    """What the user reads: the error's message (KeyError's str() would add quotes)."""
    return exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)


def command(name: str | None = None):
    """`app.command`, with the one mapping of errors to exit codes (the README's table)."""

    def register(function):
        @wraps(function)  # Typer reads the options from the wrapped signature
        def run(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except (DfdError, ValueError, KeyError) as exc:
                fail(error_message(exc), exc.exit_code if isinstance(exc, DfdError) else EXIT_ERROR)

        return app.command(name)(run)

    return register


def _summary_table(title: str, rows: dict) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key, value in rows.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        table.add_row(key, str(value))
    return table


def _print_json(data) -> None:
    from deepfake_cli.files import to_jsonable  # NaN is not JSON: null instead

    sys.stdout.write(json.dumps(to_jsonable(data), indent=2, default=str) + "\n")


def _command_line() -> str:
    """This run's command line as the bundle records it.

    The program's name, not its install path, so the record reads the same on every machine
    (also when run as `python -m deepfake_cli`).
    """
    return shlex.join(["dfd", *sys.argv[1:]])


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


def _import_keras_quietly() -> None:
    """Import Keras (and its backend) for a model command without the backend's native chatter."""
    with _native_chatter_hidden():
        import keras  # noqa: F401


@contextmanager
def _native_chatter_hidden():
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
def _open_store(store: Optional[Path], write: bool, wait: bool = False):
    from deepfake_cli.data.store import Store

    opened = Store.open(store, write=write, wait=wait)
    try:
        yield opened
    finally:
        opened.close()  # a writer commits the index here, which can fail (disk full): a StoreError


@command()
def extract(
    paths: Optional[list[Path]] = typer.Argument(None, help="Video/image files or folders (dataset layouts are recognised)."),
    fpv: int = typer.Option(25, "--fpv", help="Frames sampled per video."),
    sampling: str = typer.Option("consecutive", "--sampling", help="consecutive | uniform | random"),
    spread: int = typer.Option(0, "--spread", help="Also store this many frames spread uniformly over each video, "
                               "decoded and cropped in the same pass: train-cnn trains on those, export-features "
                               "and the LSTM read the --fpv ones (0: none; train-cnn then uses the --fpv frames)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV with path,label[,split,method,compression,group,dataset]."),
    seed: int = typer.Option(0, "--seed", help="Seed for random sampling and identity-group splits."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Try again videos that failed before."),
    wait: bool = typer.Option(False, "--wait", help="Wait for another writer to finish instead of exiting."),
    shard: Optional[str] = typer.Option(None, "--shard", help="K/N: only this 1/N of the videos (by content "
                                        "hash), e.g. one task of a Slurm array; join the stores with `dfd merge`."),
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Read videos, sample frames and record label, split, method, compression and identity group."""
    from deepfake_cli.data.extract import ExtractOptions, extract as run_extract

    out, err = _consoles(quiet)
    if not paths and labels is None:
        fail("give video files or folders, or --labels file.csv", EXIT_USAGE)
    options = ExtractOptions(fpv=fpv, sampling=sampling, seed=seed, spread=spread, labels_csv=labels,
                             retry_failed=retry_failed, shard=parse_shard(shard))
    options.check()  # before the store is opened: a bad option creates no store
    with _open_store(store, write=True, wait=wait) as opened:
        summary = run_extract(opened, paths or [], options, RichReporter(err, quiet))
        store_path = opened.path
    if as_json:
        _print_json(summary.as_dict() | {"store": str(store_path)})
    elif not quiet:
        rows = {"store": store_path, "videos found": summary.found, "added": summary.added,
                "already in store": summary.already_done, "duplicates": summary.duplicates,
                "failed": summary.failed, f"shorter than {fpv} frames": summary.short, "frames stored": summary.frames}
        if shard:
            rows[f"left to other shards ({shard} is this one)"] = summary.other_shards
        rows |= {f"label {k}": v for k, v in sorted(summary.by_label.items())}
        out.print(_summary_table("extract", rows))
        for path, error in summary.failures:
            out.print(f"[red]failed[/] {escape(error)}", highlight=False, soft_wrap=True)
        if summary.found and not summary.added and not summary.failed and not summary.other_shards:
            out.print("Nothing to do: every video is already in the store.")
    if summary.failed and not summary.added and not summary.already_done:
        raise typer.Exit(EXIT_ERROR)


@command()
def crop(
    size: int = typer.Option(160, "--size", help="Output face size in pixels (299 for Xception, 380/600 for EfficientNet-B4/B7)."),
    align: bool = typer.Option(True, "--align/--no-align", help="Align by the 5 landmarks (similarity transform) or crop the box."),
    margin: float = typer.Option(0.2, "--margin", help="Context around the face, as a fraction of its size on each side."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    detect_max_side: int = typer.Option(640, "--detect-size", help="Detect on frames downscaled to this longest side."),
    detector: str = typer.Option("mtcnn", "--detector", help="mtcnn | dlib (HOG frontal faces; its 5 alignment "
                                 "points come from the 68 landmarks)."),
    detect_every: int = typer.Option(1, "--detect-every", help="Run the face detector on every Nth frame (and "
                                     "the last) and interpolate the track between, as predict does: videos "
                                     "extracted with --sampling consecutive (and no --spread) only, others are "
                                     "detected on every frame; 1 = every frame."),
    force: bool = typer.Option(False, "--force", help="Crop again videos that already have faces."),
    wait: bool = typer.Option(False, "--wait", help="Wait for another writer to finish instead of exiting."),
    shard: Optional[str] = typer.Option(None, "--shard", help="K/N: only this 1/N of the videos (by content "
                                        "hash), e.g. one task of a Slurm array; join the stores with `dfd merge`."),
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Find, track, align and crop the main face of every stored video (MTCNN, or dlib)."""
    from deepfake_cli.faces.crop import CropOptions, crop as run_crop

    out, err = _consoles(quiet)
    options = CropOptions(size=size, align=align, margin=margin, device=device, shard=parse_shard(shard),
                          detect_max_side=detect_max_side, force=force, detector=detector, detect_every=detect_every)
    options.check()  # before opening the store, which a writer would create
    with _open_store(store, write=True, wait=wait) as opened:
        summary = run_crop(opened, options, RichReporter(err, quiet))
    if as_json:
        _print_json(summary.as_dict())
    elif not quiet:
        out.print(_summary_table("crop", {
            "videos with frames": summary.videos, "cropped now": summary.cropped,
            "already cropped": summary.already_done, "frames searched": summary.frames,
            "frames the detector ran on": summary.detected_frames,
            "frames with the main face": summary.faces,
            "face rate": f"{summary.face_rate:.1%}" if summary.frames else "-",
            "videos without any face": len(summary.no_face_videos),
            "damaged frames (dropped: run extract)": len(summary.damaged), "device": summary.device}))
        if not summary.cropped:
            out.print("Nothing to do: every video already has faces.")


@command()
def merge(
    out: Path = typer.Argument(..., help="The store to merge into (created when missing)."),
    stores: list[Path] = typer.Argument(..., help="Stores to merge, e.g. the shards of a --shard K/N run."),
    wait: bool = typer.Option(False, "--wait", help="Wait for another writer of OUT to finish instead of exiting."),
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Join stores into one: their segments are copied (hard-linked) into OUT, conflicts refused."""
    from deepfake_cli.data.merge import merge as run_merge

    out_console, _ = _consoles(quiet)
    summary = run_merge(out, stores, wait=wait)
    if as_json:
        _print_json(summary.as_dict())
    elif not quiet:
        out_console.print(_summary_table("merge", {"into": summary.out, "stores merged": summary.stores,
                                                   "segments copied": summary.copied,
                                                   "already there": summary.already_there,
                                                   "videos in the store": summary.videos}))


@command()
def explore(
    paths: Optional[list[Path]] = typer.Argument(None, help="Dataset files or folders (before extract); without "
                                                 "them, the store is explored."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV with path,label[,...] (as for extract)."),
    out: Path = typer.Option(..., "--out", help="Folder for summary.json, histograms.png and the contact sheets."),
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Label balance, distributions, contact sheets of frames and faces, and what would mislead training."""
    from deepfake_cli.data.explore import explore as run_explore

    out_console, err = _consoles(quiet)
    if paths or labels:
        result = run_explore(out, paths=list(paths or []), labels_csv=labels)
    else:
        with _open_store(store, write=False) as opened:
            result = run_explore(out, store=opened)
    if as_json:
        _print_json(result.as_dict())
        return
    if not quiet:
        table = Table(title=f"{result.videos} videos by dataset")
        labels_seen = sorted({label for counts in result.balance["dataset"].values() for label in counts})
        table.add_column("dataset")
        for label in labels_seen:
            table.add_column(label, justify="right")
        for name, counts in result.balance["dataset"].items():
            table.add_row(name, *(str(counts.get(label, 0)) for label in labels_seen))
        out_console.print(table)
        for path in result.files:
            out_console.print(f"wrote {escape(path)}", highlight=False)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


@command()
def compress(
    paths: list[Path] = typer.Argument(..., help="Video files or folders (an FF++ tree keeps its layout)."),
    crf: int = typer.Option(..., "--crf", help="libx264 constant rate factor: 23 or 40 for FaceForensics++'s "
                            "c23 and c40."),
    out: Path = typer.Option(..., "--out", help="Folder for the re-encoded videos (the input layout is kept)."),
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Re-encode videos with H.264 at a FaceForensics++ compression level (resumable)."""
    from deepfake_cli.data.compress import compress as run_compress

    out_console, err = _consoles(quiet)
    summary = run_compress(paths, crf, out, RichReporter(err, quiet))
    if as_json:
        _print_json(summary.as_dict())
    elif not quiet:
        out_console.print(_summary_table(f"compress c{crf}", {
            "written": len(summary.written), "already there": summary.already_done,
            "failed": len(summary.failed), "into": str(out)}))
    if summary.failed:
        raise typer.Exit(EXIT_ERROR if not summary.written and not summary.already_done else EXIT_OK)


@command()
def check(
    repair: bool = typer.Option(False, "--repair", help="Drop the damaged segments (the stage that wrote each "
                                "redoes that video on its next run) and rebuild a damaged index."),
    wait: bool = typer.Option(False, "--wait", help="With --repair: wait for another writer to finish."),
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Read every segment of the store, verifying its checksums; list (or with --repair, drop) the damaged."""
    from deepfake_cli.data.check import check_store
    from deepfake_cli.data.store import default_store_path

    out, err = _consoles(quiet)
    path = store or default_store_path()
    if not path.exists() and not Path(str(path) + ".d").is_dir():
        fail(f"no store at {path}")
    summary = check_store(path, repair=repair, wait=wait, reporter=RichReporter(err, quiet))
    if as_json:
        _print_json(summary.as_dict())
    else:
        for damage in summary.damaged:
            action = f"dropped: run `{damage['redo']}` to redo it" if summary.repaired else f"redo: {damage['redo']}"
            err.print(f"[bold red]damaged:[/] {escape(damage['segment'])} ({damage['stage']} of "
                      f"{escape(damage['path'] or damage['video_id'])}): {escape(damage['reason'])}; {action}",
                      highlight=False, soft_wrap=True)
        if summary.index_rebuilt:
            out.print(f"the index {escape(str(path))} was damaged: rebuilt from its segments (the old one is "
                      f"{escape(str(path))}.damaged)", highlight=False, soft_wrap=True)
        out.print(f"{summary.segments} segments read, {len(summary.damaged)} damaged"
                  + (", dropped" if summary.repaired and summary.damaged else ""), highlight=False)
    if summary.damaged and not summary.repaired:
        raise typer.Exit(EXIT_ERROR)


def _bundle_dir(model: str, models_dir: Path) -> Path:
    path = Path(model)
    return path if (path.is_absolute() or len(path.parts) > 1 or path.exists()) else models_dir / model


ModelsDirOption = typer.Option(Path("models"), "--models-dir", help="Where bundles are saved.")


@command("train-cnn")
def train_cnn(
    model: str = typer.Option("dfd-model", "--model", "-m", help="Bundle name (under --models-dir) or directory."),
    backbone: str = typer.Option("efficientnet-b0", "--backbone", help="See `dfd train-cnn --list-backbones`."),
    weights: str = typer.Option("none", "--weights", help="imagenet | none | PATH to a weights file."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Input size [default: the backbone's native size]."),
    epochs: int = typer.Option(20, "--epochs"),
    patience: int = typer.Option(5, "--patience", help="Early-stopping patience on validation AUC."),
    rounds: int = typer.Option(2, "--rounds", help="Round 2+ restarts from the previous round's best weights."),
    batch_size: int = typer.Option(32, "--batch-size"),
    learning_rate: float = typer.Option(1e-4, "--lr"),
    warmup_epochs: int = typer.Option(0, "--warmup-epochs", help="Epochs with a frozen backbone first."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames-per-video", help="Use at most this many faces per video."),
    augment: bool = typer.Option(True, "--augment/--no-augment"),
    batchnorm: str = typer.Option("auto", "--batchnorm", help="frozen | train | auto (frozen when fine-tuning "
                                  "pretrained weights: small batches would spoil their statistics)."),
    mixed_precision: str = typer.Option("auto", "--mixed-precision", help="auto (on with a GPU) | on | off"),
    balance: str = typer.Option("label", "--balance", help="label: real and fake weigh the same | dataset: "
                                "every (dataset, label) pair weighs the same, so no dataset's mix is learnt."),
    pseudo_fakes: str = typer.Option("none", "--pseudo-fakes", help="none | sbi: turn real training faces into "
                                     "self-blended fakes (needs the 68 landmarks `dfd crop` stores)."),
    pseudo_ratio: float = typer.Option(0.5, "--pseudo-ratio", help="Probability that a real training face "
                                       "becomes a pseudo-fake, in [0, 1)."),
    test_time_flip: bool = typer.Option(False, "--test-time-flip", help="Serve the bundle scoring each face and "
                                        "its mirror image (features and scores averaged): export-features, "
                                        "evaluate and predict all do."),
    input_kind: str = typer.Option("face", "--input", help="face: the stored face crops | frame: the whole "
                                   "stored frames, letterboxed to a square (no face detector needed)."),
    bagging: int = typer.Option(0, "--bagging", help="Train N members on bootstrap resamples of the train "
                                "identity groups (MODEL-bag1 ...) and write the ensemble MODEL averaging them."),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its last checkpoint."),
    list_backbones: bool = typer.Option(False, "--list-backbones", help="List the backbones and exit."),
    models_dir: Path = ModelsDirOption,
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Transfer-learn a Keras CNN on the stored faces (train split; validated on val)."""
    _import_keras_quietly()
    from deepfake_cli.nets.backbones import BACKBONES

    out, err = _consoles(quiet)
    if list_backbones:
        table = Table("backbone", "input size", "features")
        for name, spec in BACKBONES.items():
            table.add_row(name, str(spec.input_size), str(spec.feature_dim))
        out.print(table)
        return
    from deepfake_cli.train.cnn import CNNTrainOptions, train_cnn as run_train

    # bad --batchnorm/--mixed-precision/--balance/--pseudo-*: an OptionsError, exit 2
    options = CNNTrainOptions(backbone=backbone, weights=weights, input_size=input_size, epochs=epochs,
                              patience=patience, rounds=rounds, batch_size=batch_size,
                              learning_rate=learning_rate, warmup_epochs=warmup_epochs, seed=seed,
                              augment=augment, max_frames_per_video=max_frames, batchnorm=batchnorm,
                              mixed_precision=mixed_precision, balance=balance, pseudo_fakes=pseudo_fakes,
                              pseudo_ratio=pseudo_ratio, test_time_flip=test_time_flip, input=input_kind)

    def on_epoch(info: dict) -> None:
        if not quiet:
            mix = info.get("train_mix", {})
            pseudo = f"  pseudo-fakes {mix['pseudo_fake']:.0%}" if mix.get("pseudo_fake") else ""
            member = f"member {info['member']} " if "member" in info else ""
            err.print(member + "round {round} epoch {epoch}: loss {loss:.4f}  val AUC {val_auc:.4f}  "
                      "val loss {val_loss:.4f}  best {best_val_auc:.4f}  ({seconds:.0f}s)".format(**info) + pseudo,
                      highlight=False)

    with _open_store(store, write=False) as opened:
        if bagging:
            from deepfake_cli.train.bagging import train_bagging

            summary = train_bagging(opened, _bundle_dir(model, models_dir), options, bagging, resume=resume,
                                    on_epoch=on_epoch, command=_command_line())
            if not as_json and not quiet:
                _print_ensemble_table(out, summary)
                return
        else:
            summary = run_train(opened, _bundle_dir(model, models_dir), options, resume=resume, on_epoch=on_epoch,
                                command=_command_line())
    _render_summary(out, "train-cnn", summary, quiet, as_json)


def _print_ensemble_table(out: Console, summary: dict) -> None:
    from deepfake_cli.report.tables import metrics_table

    columns = ("n", "auc", "acc", "logloss", "threshold")  # all of them: --json
    rows = {name: {c: m[c] for c in columns} for name, m in summary["val"].items()}
    out.print(metrics_table(f"validation ({summary['val_videos']} videos): members and ensemble", rows))
    out.print(f"wrote {escape(summary['ensemble'])} ({summary['method']}; threshold {summary['threshold']:.3f}, "
              f"temperature {summary['temperature']:.3f})", highlight=False, soft_wrap=True)


@command()
def ensemble(
    name: str = typer.Argument(..., help="Name (under --models-dir) or directory of the ensemble to write."),
    members: str = typer.Option(..., "--members", help="Comma-separated bundles (names or directories)."),
    method: str = typer.Option("weighted", "--method", help="vote | weighted | stack | blend | average "
                               "(see `dfd ensemble --help` and the README)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the blend's split of validation identities."),
    models_dir: Path = ModelsDirOption,
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Combine bundles into one model, fitted and calibrated on their common validation videos.

    vote: majority of the members' verdicts; weighted: their probabilities averaged with weights
    from validation AUC; stack: a logistic regression on them; blend: the same, fitted on half
    the validation identities and calibrated on the other half; average: the plain mean.
    """
    _import_keras_quietly()
    from deepfake_cli.nets.bundle import resolve_bundle
    from deepfake_cli.train.ensemble_fit import build_ensemble

    out, _ = _consoles(quiet)
    names = [m.strip() for m in members.split(",") if m.strip()]
    member_dirs = [resolve_bundle(m, models_dir) for m in names]
    with _open_store(store, write=False) as opened:
        summary = build_ensemble(opened, _bundle_dir(name, models_dir), member_dirs, method, seed=seed,
                                 command=_command_line())
    if as_json:
        _print_json(summary)
    elif not quiet:
        _print_ensemble_table(out, summary)


def _render_summary(out: Console, title: str, summary: dict, quiet: bool, as_json: bool) -> None:
    if as_json:
        _print_json(summary)
    elif not quiet:
        flat = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
        out.print(_summary_table(title, flat))


@command("export-features")
def export_features(
    model: str = typer.Option("dfd-model", "--model", "-m", help="Bundle name or directory."),
    batch_size: int = typer.Option(32, "--batch-size"),
    force: bool = typer.Option(False, "--force", help="Recompute features that exist already."),
    wait: bool = typer.Option(False, "--wait", help="Wait for another writer to finish instead of exiting."),
    shard: Optional[str] = typer.Option(None, "--shard", help="K/N: only this 1/N of the videos (by content "
                                        "hash), e.g. one task of a Slurm array; join the stores with `dfd merge`."),
    models_dir: Path = ModelsDirOption,
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Store per-frame CNN features and scores of every face sequence under the model's name."""
    _import_keras_quietly()
    from deepfake_cli.train.temporal import export_features as run_export

    out, err = _consoles(quiet)
    reporter = RichReporter(err, quiet)
    with _open_store(store, write=True, wait=wait) as opened:
        try:
            summary = run_export(opened, _bundle_dir(model, models_dir), batch_size=batch_size, force=force,
                                 reporter=reporter, shard=parse_shard(shard))
        finally:
            reporter.finish()
    _render_summary(out, "export-features", summary, quiet, as_json)


@command("train-lstm")
def train_lstm(
    model: str = typer.Option("dfd-model", "--model", "-m", help="Bundle name or directory (features exported)."),
    units: int = typer.Option(128, "--units"),
    epochs: int = typer.Option(30, "--epochs"),
    patience: int = typer.Option(5, "--patience"),
    batch_size: int = typer.Option(32, "--batch-size"),
    learning_rate: float = typer.Option(1e-3, "--lr"),
    seed: int = typer.Option(0, "--seed"),
    pseudo_fakes: str = typer.Option("none", "--pseudo-fakes", help="none | sbi: turn real training clips into "
                                     "self-blended fake clips (one blend across a clip's faces; needs 68-point "
                                     "landmarks in the store)."),
    pseudo_ratio: float = typer.Option(0.5, "--pseudo-ratio", help="Probability that a real training clip "
                                       "becomes a pseudo-fake, in [0, 1)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its last checkpoint."),
    models_dir: Path = ModelsDirOption,
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Train the bidirectional LSTM over each video's CNN features, then calibrate it on val."""
    _import_keras_quietly()
    from deepfake_cli.train.temporal import LSTMTrainOptions, train_lstm as run_train

    out, err = _consoles(quiet)
    options = LSTMTrainOptions(units=units, epochs=epochs, patience=patience, batch_size=batch_size,
                               learning_rate=learning_rate, seed=seed, pseudo_fakes=pseudo_fakes,
                               pseudo_ratio=pseudo_ratio)  # bad --pseudo-*: an OptionsError, exit 2

    def on_epoch(info: dict) -> None:
        if not quiet:
            err.print("epoch {epoch}: loss {loss:.4f}  val AUC {val_auc:.4f}  best {best_val_auc:.4f}".format(**info),
                      highlight=False)

    with _open_store(store, write=False) as opened:
        summary = run_train(opened, _bundle_dir(model, models_dir), options, resume=resume, on_epoch=on_epoch,
                            command=_command_line(), reporter=RichReporter(err, quiet))
    _render_summary(out, "train-lstm", summary | summary["calibration"], quiet, as_json)


@command()
def evaluate(
    model: str = typer.Option("dfd-model", "--model", "-m", help="Bundle name or directory."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Write metrics.json, scores.csv and plots here."),
    models_dir: Path = ModelsDirOption,
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """ACC, AUC, EER, AP and log-loss at frame and video level, per split, dataset, method and compression."""
    _import_keras_quietly()
    from deepfake_cli.report.evaluate import evaluate as run_evaluate
    from deepfake_cli.report.tables import metrics_table, write_report

    out, _ = _consoles(quiet)
    with _open_store(store, write=False) as opened:
        evaluation = run_evaluate(opened, _bundle_dir(model, models_dir))
    written = write_report(out_dir, evaluation.results, evaluation.rows) if out_dir else []
    if as_json:
        _print_json({"results": evaluation.results, "files": [str(p) for p in written]})
        return
    if not quiet:
        out.print(metrics_table("overall (by split / level / model)", evaluation.results["overall"]))
        for by in ("dataset", "method", "compression"):
            if evaluation.results.get(by):
                out.print(metrics_table(f"by {by} ({evaluation.results['breakdown_rows']})",
                                        evaluation.results[by]))
        for path in written:
            out.print(f"wrote {path}")


@command("export-onnx")
def export_onnx(
    model: str = typer.Argument(..., help="Bundle name or directory (an ensemble: each of its members)."),
    models_dir: Path = ModelsDirOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Write the model's CNN and LSTM as ONNX files, checked against Keras, for a fast `dfd predict`."""
    _import_keras_quietly()
    from deepfake_cli.nets.bundle import resolve_bundle
    from deepfake_cli.scoring.ensemble import is_ensemble, load_ensemble
    from deepfake_cli.train.onnx_export import export_onnx as run_export

    out, _ = _consoles(quiet)
    path = resolve_bundle(model, models_dir)
    bundles = [b.path for b in load_ensemble(path).members] if is_ensemble(path) else [path]
    with _native_chatter_hidden():
        records = {str(b): run_export(b) for b in bundles}
    if as_json:
        _print_json(records)
        return
    for bundle_dir, record in records.items():
        parts = ", ".join(f"{name} (largest difference from Keras {entry['max_abs_diff']:.1e})"
                          for name, entry in record.items() if isinstance(entry, dict))
        out.print(f"{escape(bundle_dir)}: wrote {parts}", highlight=False, soft_wrap=True)


def _print_result(r, out: Console, err: Console) -> None:
    """One line per input: its verdict on stdout, or its error on stderr."""
    if r.error:
        message = r.error if r.error.startswith(r.path) else f"{r.path}: {r.error}"  # errors name their file
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    else:
        colour = "red" if r.verdict == "fake" else "green"
        seen = f"{r.faces} faces in {r.frames} frames" if r.faces else f"{r.frames} whole frames"
        members = "; " + ", ".join(f"{m['model']} {m['probability']:.3f}" for m in r.members) if r.members else ""
        out.print(f"{escape(r.path)}: [bold {colour}]{r.verdict}[/] (P(fake) = {r.probability:.3f}, "
                  f"threshold {r.threshold:.3f}, {seen}{escape(members)})", highlight=False,
                  soft_wrap=True)  # one line per clip, whatever the terminal width
    for note in ([r.tracks_summary()] if r.tracks_summary() else []) + r.warnings:
        err.print(f"[yellow]note:[/] {escape(r.path)}: {escape(note)}", highlight=False, soft_wrap=True)


@command()
def predict(
    inputs: list[Path] = typer.Argument(..., help="Video or image files, or folders of them."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Bundle name or directory [default: the bundled model]."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Override the bundle's decision threshold."),
    max_fpr: Optional[float] = typer.Option(None, "--max-fpr", help="Use the bundle's threshold for this false-positive rate (e.g. 0.01)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (face detection)."),
    detect_every: int = typer.Option(4, "--detect-every", help="Run the face detector on every Nth sampled frame "
                                     "and interpolate between (consecutive sampling only); 1 = every frame."),
    annotate: Optional[Path] = typer.Option(None, "--annotate", help="Write the (first) video with face boxes and scores drawn."),
    annotate_heatmap: bool = typer.Option(False, "--annotate-heatmap", help="With --annotate: draw each face's "
                                          "class activation map onto it too."),
    heatmap: Optional[Path] = typer.Option(None, "--heatmap", help="Write the reported face track's crops with "
                                           "class activation maps of the fake score (red: towards fake) into "
                                           "this folder."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write a self-contained HTML page of evidence "
                                          "(verdict, score curve, faces with heatmaps, tracks, clip metadata): "
                                          "this file for one input, or this folder (one page per input) for several."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Also write one CSV row per input here, "
                                            "each as soon as it is known."),
    jsonl_path: Optional[Path] = typer.Option(None, "--jsonl", help="Also write one JSON line per input here, "
                                              "each as soon as it is known."),
    skip_done: Optional[Path] = typer.Option(None, "--skip-done", help="Skip the inputs this earlier --csv or "
                                             "--jsonl file has a verdict for, and append to --csv/--jsonl "
                                             "(resume an interrupted batch)."),
    strict: bool = typer.Option(False, "--strict", help="Exit 6 when a verdict carries a warning (a small or "
                                "rarely seen face, a single image, too few frames, a wrong frame count)."),
    runtime: str = typer.Option("auto", "--runtime", help="auto | onnx | keras: what runs the models. auto: "
                                "onnxruntime on the CPU when the model has current ONNX files (dfd export-onnx), "
                                "else Keras (and for --device cuda)."),
    models_dir: Path = ModelsDirOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Print whether each clip is real or fake, with the probability that it is fake."""
    from deepfake_cli.serve.pipeline import predict_many
    from deepfake_cli.serve.model_choice import locate_model, model_runtime, stale_onnx_note
    from deepfake_cli.serve.predict import expand_inputs, open_predictor
    from deepfake_cli.serve.result_files import ResultWriter, done_paths, interrupt_on_sigterm

    out, err = _consoles(quiet)
    model_dir = locate_model(model, models_dir)
    asked, runtime = runtime, model_runtime(model_dir, runtime, device)
    if asked == "auto" and runtime == "keras" and (note := stale_onnx_note(model_dir)):
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    if runtime == "keras" or heatmap is not None or report is not None or annotate_heatmap:
        _import_keras_quietly()  # heatmaps take the Keras model's gradients, whatever serves the scores
    files = expand_inputs(inputs)
    if skip_done is not None:
        done = done_paths(skip_done)
        files = [f for f in files if str(f) not in done]
        err.print(f"skipping {len(done)} input(s) {escape(str(skip_done))} has a verdict for; {len(files)} to go",
                  highlight=False, soft_wrap=True)
    predictor = open_predictor(model_dir, runtime, device=device, threshold=threshold, max_fpr=max_fpr,
                               detect_every=detect_every)
    results, interrupted = [], False
    reporter = RichReporter(err, quiet or len(files) <= 1)
    reporter.start(len(files), "predict")

    def evidence(i: int, path: Path) -> dict:
        page = None if report is None else (report / f"{path.stem}.html" if len(files) > 1 else report)
        if page is not None:
            page.parent.mkdir(parents=True, exist_ok=True)
        return {"annotate": annotate if i == 0 else None, "heatmap": heatmap, "report": page,
                "annotate_heatmap": annotate_heatmap}

    with ResultWriter(csv_path, jsonl_path, append=skip_done is not None) as writer, interrupt_on_sigterm() as signals:
        try:
            for result in predict_many(predictor, files, evidence):
                with signals.held():  # a verdict written is a verdict printed
                    results.append(result)
                    writer.write(result.as_dict())
                    if not as_json:
                        _print_result(result, out, err)
                reporter.advance(Path(result.path).name)
        except KeyboardInterrupt:
            interrupted = True
    reporter.finish()
    if as_json and results:
        _print_json([r.as_dict() for r in results] if len(files) > 1 else results[0].as_dict())
    if interrupted:
        Console(stderr=True).print(f"[bold red]interrupted[/] after {len(results)} of {len(files)} input(s)"
                  + ("; every verdict reached is in " + ", ".join(escape(str(p)) for p in (csv_path, jsonl_path) if p)
                     + ": rerun with --skip-done to go on" if csv_path or jsonl_path else ""),
                  highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    codes = [r.exit_code for r in results if r.exit_code]
    if strict and not codes and any(r.warnings for r in results):
        codes = [EXIT_WEAK_EVIDENCE]
    raise typer.Exit(max(codes) if codes else EXIT_OK)
