"""`dfd predict`: parse the options, run a BatchPrediction (deepfake_cli.serve.batch, which owns
every rule of a batch), and render each result as it comes: a verdict line on stdout, an error or
note on stderr, or the results as schema objects (deepfake_cli.serve.schema, docs/output.md): with
--json an array of them (whatever the number of inputs), with `--jsonl -` one per line as each is
known."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.console import Console
from rich.markup import escape

from deepfake_cli.cli.common import (Device, JsonOption, ModelsDirOption, QuietOption, RichReporter, Runtime, consoles,
                                     handled, import_keras_quietly, print_json, warn_of_weak_validation)
from deepfake_cli.data.shards import parse_shard
from deepfake_cli.errors import BUG_NOTE, OptionsError
from deepfake_cli.report.clip_report import judged_summary


def _print_result(r, out: Console, err: Console) -> None:
    """One line per input: its verdict on stdout, or its error on stderr."""
    if r.error:
        message = r.error if r.error.startswith(r.path) else f"{r.path}: {r.error}"  # errors name their file
        errors = Console(stderr=True)  # one line per failed input, --quiet included
        errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if r.verdict:  # also beside an error: a verdict whose evidence files could not be written
        colour = {"fake": "red", "real": "green"}.get(r.verdict, "yellow")
        seen = judged_summary(r)  # the report says it in the same words
        members = "; " + ", ".join(f"{m['model']} {m['probability']:.3f}" for m in r.members) if r.members else ""
        against = (f"between {r.uncertain_band[0]:.3f} and the threshold {r.threshold:.3f}"
                   if r.verdict == "uncertain" and r.uncertain_band else f"threshold {r.threshold:.3f}")
        out.print(f"{escape(r.path)}: [bold {colour}]{r.verdict}[/] (P(fake) = {r.probability:.3f}, "
                  f"{against}, {seen}{escape(members)})", highlight=False,
                  soft_wrap=True)  # one line per clip, whatever the terminal width
    if r.tracks_summary():
        err.print(f"[yellow]note:[/] {escape(r.path)}: {escape(r.tracks_summary())}", highlight=False, soft_wrap=True)
    for warning in r.warnings:  # what weakens the verdict: shown under --quiet too
        Console(stderr=True).print(f"[yellow]note:[/] {escape(r.path)}: {escape(warning)}", highlight=False,
                                   soft_wrap=True)


def parse_windows(value: str | None) -> int | None:
    """--windows: a whole number of at least 1, or 'all' (0); None: the model's own."""
    if value is None:
        return None
    if value.strip().lower() == "all":
        return 0
    if not value.strip().isdigit() or int(value) < 1:
        raise OptionsError(f"--windows must be a whole number of at least 1, or 'all', not {value!r}")
    return int(value)


@handled
def predict(
    inputs: list[Path] = typer.Argument(..., help="Video or image files, or folders of them."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Bundle name or directory.",
                                         show_default="the bundled model"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Override the bundle's decision threshold."),
    max_fpr: Optional[float] = typer.Option(None, "--max-fpr", help="Use the bundle's threshold for this false-positive rate (e.g. 0.01)."),
    device: Device = typer.Option("auto", "--device", help="Where face detection runs (auto: CUDA when there is "
                                  "a GPU)."),
    detect_every: Optional[int] = typer.Option(None, "--detect-every", help="Run the face detector on every Nth "
                                               "sampled frame and interpolate between (consecutive sampling only); "
                                               "1 = every frame.",
                                               show_default="the stride the model's faces were cropped with, or 4 "
                                               "for a model that records none"),
    windows: Optional[str] = typer.Option(None, "--windows", help="Judge N windows of the model's sequence length "
                                          "spread over the clip (each tracked and scored on its own, their "
                                          "probabilities averaged as the model's video_aggregation says), or 'all' "
                                          "that fit side by side; for models that read consecutive frames.",
                                          show_default="the model's (1: the middle of the clip)"),
    annotate: Optional[Path] = typer.Option(None, "--annotate", help="Write the whole clip as H.264 with the judged face boxed, its "
                                            "scores and a timeline of the windows judged; several inputs: a folder of "
                                            "one video each."),
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
                                              "each as soon as it is known; - : on stdout, instead of the "
                                              "verdict lines (docs/output.md)."),
    skip_done: Optional[Path] = typer.Option(None, "--skip-done", help="Skip the inputs this earlier --csv or "
                                             "--jsonl file has a verdict for, and append to --csv/--jsonl "
                                             "(resume an interrupted batch)."),
    strict: bool = typer.Option(False, "--strict", help="Exit 6 when a verdict is uncertain or carries a "
                                "warning (a small or rarely seen face, a single image, too few frames, a wrong frame count)."),
    runtime: Runtime = typer.Option("auto", "--runtime", help="What runs the models. auto: "
                                "onnxruntime on the CPU when the model has current ONNX files (dfd export-onnx), "
                                "else Keras (and for --device cuda)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="K/N: only this 1/N of the inputs (by content "
                                        "hash, as extract and crop split videos); join the shards' --csv or "
                                        "--jsonl files with `dfd merge-results`."),
    engine: Literal["local", "ray"] = typer.Option("local", "--engine", help="What scores the inputs. local: "
                                                  "this process; ray: --workers Ray actors, each loading the "
                                                  "model once (the ray extra; joins RAY_ADDRESS's cluster, else "
                                                  "starts one here)."),
    workers: int = typer.Option(2, "--workers", min=1, help="With --engine ray: Ray workers (one CPU each)."),
    models_dir: Path = ModelsDirOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Print whether each clip is real or fake, with the probability that it is fake."""
    from deepfake_cli.serve.batch import BatchPrediction, Evidence

    out, err = consoles(quiet)
    stream = jsonl_path is not None and str(jsonl_path) == "-"  # --jsonl -: the records on stdout
    if stream and as_json:
        raise OptionsError("give --json (one array at the end) or --jsonl - (one line per input), not both")
    engine_options = {"workers": workers} if engine == "ray" else {}
    if engine == "ray":  # the same batch, its inputs scored by Ray actors
        from deepfake_cli.serve.ray_batch import RayBatchPrediction as Batch
    else:
        Batch = BatchPrediction
    batch = Batch(inputs, model, **engine_options, models_dir=models_dir, runtime=runtime, device=device, threshold=threshold,
                            max_fpr=max_fpr, detect_every=detect_every, csv_path=csv_path,
                            windows=parse_windows(windows),
                            jsonl_path=None if stream else jsonl_path,
                            skip_done=skip_done, strict=strict, shard=parse_shard(shard),
                            evidence=Evidence(annotate=annotate, annotate_heatmap=annotate_heatmap, heatmap=heatmap,
                                              report=report))
    for note in ([batch.note] if batch.note else []) + batch.resume_notes:  # shown under --quiet too
        Console(stderr=True).print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    warn_of_weak_validation(batch.model_dir)  # a tiny validation set, an AUC within noise of 0.5
    if batch.needs_keras:
        import_keras_quietly()  # heatmaps take the Keras model's gradients, whatever serves the scores
    if skip_done is not None:
        err.print(f"skipping {len(batch.done)} input(s) {escape(str(skip_done))} has a verdict for; "
                  f"{len(batch.files)} to go", highlight=False, soft_wrap=True)
    batch.load()
    reporter = RichReporter(err, quiet or len(batch.files) <= 1)
    reporter.start(len(batch.files), "predict")

    def on_result(result) -> None:
        if stream:
            sys.stdout.write(json.dumps(batch.record(result)) + "\n")
            sys.stdout.flush()
        elif not as_json:
            _print_result(result, out, err)
        reporter.advance(Path(result.path).name)

    try:
        outcome = batch.run(on_result)
    finally:
        reporter.finish()
    if as_json:  # always an array, one schema object per input
        print_json([batch.record(r) for r in outcome.results])
    for path, trace in outcome.bugs.items():  # an input that failed on a bug in dfd: its traceback
        sys.stderr.write(f"{path}:\n{trace}")
    if outcome.bugs:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(BUG_NOTE)}", highlight=False, soft_wrap=True)
    if outcome.interrupted:
        files = [p for p in (csv_path, jsonl_path) if p]
        Console(stderr=True).print(f"[bold red]interrupted[/] after {len(outcome.results)} of {outcome.total} input(s)"
                                   + ("; every verdict reached is in " + ", ".join(escape(str(p)) for p in files)
                                      + ": rerun with --skip-done to go on" if files else ""),
                                   highlight=False, soft_wrap=True)
    raise typer.Exit(outcome.exit_code)
