"""`dfd` commands that build and look after a store: extract, crop, merge, explore, compress, check, pack, unpack."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer
from rich.markup import escape
from rich.table import Table

from deepfake_cli.cli.common import (Device, JsonOption, QuietOption, RichReporter, ShardOption, StoreOption, WaitOption,
                                     consoles, handled, open_store, print_json, summary_table, wait_option)
from deepfake_cli.data.shards import parse_shard
from deepfake_cli.errors import EXIT_ERROR, EXIT_OK, OptionsError


@handled
def extract(
    paths: Optional[list[Path]] = typer.Argument(None, help="Video/image files or folders (dataset layouts are recognised)."),
    fpv: int = typer.Option(25, "--fpv", help="Frames sampled per video."),
    sampling: Literal["consecutive", "uniform", "random"] = typer.Option(
        "consecutive", "--sampling", help="Which --fpv frames: consecutive (from the start; what the LSTM and "
        "predict read), uniform (spread over the video) or random."),
    spread: int = typer.Option(0, "--spread", help="Also store this many frames spread uniformly over each video, "
                               "decoded and cropped in the same pass: train-cnn trains on those, export-features "
                               "and the LSTM read the --fpv ones (0: none; train-cnn then uses the --fpv frames)."),
    windows: str = typer.Option("1", "--windows", help="Store N windows of --fpv consecutive frames spread over "
                                "each video, as predict --windows judges them (crop tracks each on its own; "
                                "evaluate averages their probabilities as predict does), or 'all' that fit side "
                                "by side; for --sampling consecutive without --spread."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV with path,label[,split,method,compression,group,dataset]."),
    seed: int = typer.Option(0, "--seed", help="Seed for random sampling and identity-group splits."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of the identity groups without an "
                                       "official split (or one in --labels) that go to validation."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", help="And to test (the rest train)."),
    relabel: bool = typer.Option(False, "--relabel", help="Record the label and split the inputs give now for "
                                 "videos already in the store (without it, a change is reported and kept as "
                                 "recorded)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Try again videos that failed before."),
    wait: bool = WaitOption,
    shard: Optional[str] = ShardOption,
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Read videos, sample frames and record label, split, method, compression and identity group."""
    from deepfake_cli.cli.predict import parse_windows
    from deepfake_cli.data.extract import ExtractOptions, extract as run_extract

    out, err = consoles(quiet)
    if not paths and labels is None:
        raise OptionsError("give video files or folders, or --labels file.csv")
    options = ExtractOptions(fpv=fpv, sampling=sampling, seed=seed, spread=spread, labels_csv=labels,
                             retry_failed=retry_failed, shard=parse_shard(shard), val_fraction=val_fraction,
                             test_fraction=test_fraction, relabel=relabel, windows=parse_windows(windows))
    options.check()  # before the store is opened: a bad option creates no store
    with open_store(store, write=True, wait=wait, create=True) as opened:
        summary = run_extract(opened, paths or [], options, RichReporter(err, quiet))
        store_path = opened.path
    if as_json:
        print_json(summary.as_dict() | {"store": str(store_path)})
    elif not quiet:
        rows = {"store": store_path, "videos found": summary.found, "added": summary.added,
                "already in store": summary.already_done, "duplicates": summary.duplicates,
                "failed": summary.failed, f"shorter than {fpv} frames": summary.short, "frames stored": summary.frames}
        if shard:
            rows[f"left to other shards ({shard} is this one)"] = summary.other_shards
        rows |= {f"label {k}": v for k, v in sorted(summary.by_label.items())}
        if relabel:
            rows["relabelled (--relabel)"] = summary.relabelled
        out.print(summary_table("extract", rows))
        out.print(split_table(summary.split_counts()))
        for warning in split_warnings(summary.split_counts()):
            err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
        for path, error in summary.failures:
            out.print(f"[red]failed[/] {escape(error)}", highlight=False, soft_wrap=True)
        if (summary.found and not summary.added and not summary.failed and not summary.other_shards
                and not summary.changes):
            out.print("Nothing to do: every video is already in the store.")
    if summary.failed and not summary.added and not summary.already_done:
        raise typer.Exit(EXIT_ERROR)



def split_table(counts: dict[str, dict[str, int]]) -> Table:
    """Videos per split and label (what training, validation and test will see)."""
    labels = sorted({label for row in counts.values() for label in row})
    table = Table("split", *labels, "videos", title="videos by split")
    for split, row in counts.items():
        table.add_row(split, *(str(row.get(label, 0)) for label in labels), str(sum(row.values())))
    return table


def split_warnings(counts: dict[str, dict[str, int]]) -> list[str]:
    """What the splits cannot measure: a validation or test split missing a label that train has."""
    labels = set(counts.get("train", {}))
    return [f"the {split} split has no {label} video ({split}: "
            + (", ".join(f"{n} {lab}" for lab, n in sorted(counts[split].items())) if split in counts else "empty")
            + "): its AUC cannot be measured; set --val-fraction/--test-fraction, or give splits in --labels"
            for split in ("val", "test") for label in sorted(labels) if not counts.get(split, {}).get(label)]


@handled
def crop(
    size: int = typer.Option(160, "--size", help="Output face size in pixels (299 for Xception, 380/600 for EfficientNet-B4/B7)."),
    align: bool = typer.Option(True, "--align/--no-align", help="Align by the 5 landmarks (similarity transform) or crop the box."),
    margin: float = typer.Option(0.2, "--margin", help="Context around the face, as a fraction of its size on each side."),
    device: Device = typer.Option("auto", "--device", help="Where MTCNN runs (auto: CUDA when there is a GPU)."),
    detect_max_side: int = typer.Option(640, "--detect-size", help="Detect on frames downscaled to this longest side."),
    detector: Literal["mtcnn", "dlib"] = typer.Option("mtcnn", "--detector", help="mtcnn, or dlib (HOG frontal "
                                                     "faces; its 5 alignment points come from the 68 landmarks)."),
    detect_every: int = typer.Option(1, "--detect-every", help="Run the face detector on every Nth frame (and "
                                     "the last) and interpolate the track between, as predict does: videos "
                                     "extracted with --sampling consecutive (and no --spread) only, others are "
                                     "detected on every frame; 1 = every frame."),
    force: bool = typer.Option(False, "--force", help="Crop again videos that already have faces."),
    wait: bool = WaitOption,
    shard: Optional[str] = ShardOption,
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Find, track, align and crop the main face of every stored video (MTCNN, or dlib)."""
    from deepfake_cli.faces.crop import CropOptions, crop as run_crop

    out, err = consoles(quiet)
    options = CropOptions(size=size, align=align, margin=margin, device=device, shard=parse_shard(shard),
                          detect_max_side=detect_max_side, force=force, detector=detector, detect_every=detect_every)
    options.check()  # before opening the store, which a writer would create
    with open_store(store, write=True, wait=wait) as opened:
        summary = run_crop(opened, options, RichReporter(err, quiet))
    if as_json:
        print_json(summary.as_dict())
    elif not quiet:
        out.print(summary_table("crop", {
            "videos with frames": summary.videos, "cropped now": summary.cropped,
            "already cropped": summary.already_done, "frames searched": summary.frames,
            "frames the detector ran on": summary.detected_frames,
            "frames with the main face": summary.faces,
            "face rate": f"{summary.face_rate:.1%}" if summary.frames else "-",
            "videos without any face": len(summary.no_face_videos),
            "damaged frames (dropped: run extract)": len(summary.damaged), "device": summary.device}))
        if not summary.cropped:
            out.print("Nothing to do: every video already has faces.")


@handled
def merge(
    paths: Optional[list[Path]] = typer.Argument(None, metavar="[OUT] STORE", show_default=False, help="Stores to merge, e.g. the shards of a "
                                       "--shard K/N run; without --out, the first is the store to merge into "
                                       "(the older form)."),
    out_option: Optional[Path] = typer.Option(None, "--out", help="The store to merge into (created when missing).",
                                              show_default="the first path"),
    wait: bool = wait_option("Wait for another writer of OUT to finish instead of exiting."),
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Join stores into one: their segments are copied (hard-linked) into OUT, conflicts refused."""
    from deepfake_cli.data.merge import merge as run_merge

    paths = list(paths or [])
    out, stores = (out_option, paths) if out_option is not None else (paths[0] if paths else None, paths[1:])
    if not stores:
        raise OptionsError("give the stores to merge: dfd merge --out OUT STORE...")
    out_console, _ = consoles(quiet)
    summary = run_merge(out, stores, wait=wait)
    if as_json:
        print_json(summary.as_dict())
    elif not quiet:
        out_console.print(summary_table("merge", {"into": summary.out, "stores merged": summary.stores,
                                                   "segments copied": summary.copied,
                                                   "already there": summary.already_there,
                                                   "videos in the store": summary.videos}))


@handled
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

    out_console, err = consoles(quiet)
    if paths or labels:
        result = run_explore(out, paths=list(paths or []), labels_csv=labels)
    else:
        with open_store(store, write=False) as opened:
            result = run_explore(out, store=opened)
    if as_json:
        print_json(result.as_dict())
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


@handled
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

    out_console, err = consoles(quiet)
    summary = run_compress(paths, crf, out, RichReporter(err, quiet))
    if as_json:
        print_json(summary.as_dict())
    elif not quiet:
        out_console.print(summary_table(f"compress c{crf}", {
            "written": len(summary.written), "already there": summary.already_done,
            "failed": len(summary.failed), "into": str(out)}))
    if summary.failed:
        raise typer.Exit(EXIT_ERROR if not summary.written and not summary.already_done else EXIT_OK)


@handled
def check(
    repair: bool = typer.Option(False, "--repair", help="Drop the damaged segments (the stage that wrote each "
                                "redoes that video on its next run) and rebuild a damaged index."),
    wait: bool = wait_option("With --repair: wait for another writer to finish."),
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Read every segment of the store, verifying its checksums; list (or with --repair, drop) the damaged."""
    from deepfake_cli.data.check import check_store
    from deepfake_cli.data.store import StoreError, default_store_path

    out, err = consoles(quiet)
    path = store or default_store_path()
    if not path.exists() and not Path(str(path) + ".d").is_dir():
        raise StoreError(f"no store at {path}")
    summary = check_store(path, repair=repair, wait=wait, reporter=RichReporter(err, quiet))
    if as_json:
        print_json(summary.as_dict())
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


@handled
def pack(
    out: Path = typer.Argument(..., help="The pack file to write (HDF5; replaced whole, or left as it was)."),
    quality: int = typer.Option(90, "--quality", min=1, max=100, help="JPEG quality of the packed crops."),
    role: Literal["all", "spread", "sequence"] = typer.Option(
        "all", "--role", help="Which stored faces: all, those train-cnn reads (spread: extract --spread), "
        "or those the sequence models and scoring read (sequence: extract --fpv)."),
    max_mib: Optional[float] = typer.Option(None, "--max-mib", help="Refuse (writing nothing) a pack larger than this."),
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Write the store's faces (JPEG crops, labels, splits, groups) into one small file, to train elsewhere."""
    from deepfake_cli.data.pack import pack as run_pack

    out_console, _ = consoles(quiet)
    with open_store(store, write=False) as opened:
        summary = run_pack(opened, out, quality=quality, role=role, max_mib=max_mib)
    _pack_summary(out_console, "pack", summary, quiet, as_json)


@handled
def unpack(
    pack_file: Path = typer.Argument(..., metavar="PACK", help="A file written by `dfd pack`."),
    wait: bool = WaitOption,
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Turn a pack back into a store (faces only) that train-cnn and crossval read like any other."""
    from deepfake_cli.data.pack import read_pack, unpack as run_unpack

    out_console, _ = consoles(quiet)
    packed = read_pack(pack_file)  # a file that is not a pack, or a damaged one, creates no store
    with open_store(store, write=True, wait=wait, create=True) as opened:
        summary = run_unpack(pack_file, opened, packed)
    _pack_summary(out_console, "unpack", summary, quiet, as_json)


def _pack_summary(console, title: str, summary, quiet: bool, as_json: bool) -> None:
    if as_json:
        print_json(summary.as_dict())
    elif not quiet:
        console.print(summary_table(title, {"pack": summary.path, "videos": summary.videos, "faces": summary.faces,
                                            "skipped": summary.skipped, "size": f"{summary.mib:.1f} MiB"}))
