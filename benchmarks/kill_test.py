"""Crash safety by killing, at scale: SIGKILL dfd stages at random moments, check, resume, compare.

    python -m benchmarks.kill_test [--extract-kills 12] [--crop-kills 10] [--export-kills 6]
                                   [--train-kills 6] [--fuzz 2000] [--seed 0] [--json results.json]

For each stage (extract, crop, and export-features with a tiny efficientnet-b0 bundle) the
script builds a reference store without interruption, then runs the stage again on another
store and SIGKILLs it, alternately at a delay uniform over the stage's uninterrupted duration
("time") and once k more segments exist plus a jitter ("progress"). After every kill: the
index and every segment open, no video lists a stage with missing arrays, and the next writer
deletes the `.tmp` leftovers. At the end the killed store must equal the reference: same
videos, labels and errors, identical frames and crops, features within 1e-5. Then it kills
`dfd train-cnn` (tiny efficientnet-b0) at random moments and resumes it each time with
`--resume`: no checkpointed epoch may be trained again, and the last run must go on from the
last checkpoint and end with every epoch trained once. With --fuzz N it also feeds N mutated
videos to video.probe + read_frames (tests/test_hostile_inputs.py).
The helpers are the CI tests' own (tests/test_reliability.py), with many more kills.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.common import machine
from deepfake_cli.data.store import Store
from tests import test_hostile_inputs as hostile
from tests import test_reliability as rel


def features_snapshot(store: Path, model: str) -> dict:
    with Store.open(store) as reader:
        return {e.video_id: reader.read_features(e.video_id, model) for e in reader.entries()
                if reader.has(e.video_id, f"features.{model}")}


def compare_features(got: dict, want: dict) -> float:
    assert sorted(got) == sorted(want), sorted(set(got) ^ set(want))
    worst = 0.0
    for vid, w in want.items():
        g = got[vid]
        np.testing.assert_array_equal(g.frame_indices, w.frame_indices)
        worst = max(worst, float(np.abs(g.features - w.features).max(initial=0)),
                    float(np.abs(g.scores - w.scores).max(initial=0)))
    assert worst <= 1e-5, worst
    return worst


def summarise(kills: list) -> dict:
    out = {}
    for k in kills:
        item = out.setdefault(k.command, {"kills": 0, "startup": 0, "mid-run": 0, "finished": 0,
                                          "with .tmp leftovers": 0, "by mode": Counter()})
        item["kills"] += 1
        item[k.landed] += 1
        item["with .tmp leftovers"] += bool(k.leftovers)
        item["by mode"][k.mode] += 1
    for item in out.values():
        item["by mode"] = dict(item["by mode"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extract-kills", type=int, default=12)
    parser.add_argument("--crop-kills", type=int, default=10)
    parser.add_argument("--export-kills", type=int, default=6, help="0 skips training the tiny bundle")
    parser.add_argument("--train-kills", type=int, default=6, help="kills of `dfd train-cnn`, each resumed")
    parser.add_argument("--train-epochs", type=int, default=6)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--fpv", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=48)
    parser.add_argument("--modes", default="time,progress")
    parser.add_argument("--fuzz", type=int, default=0, help="mutated videos to decode (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--work", type=Path, help="keep the stores and the log here (default: a temp dir)")
    args = parser.parse_args()
    modes = args.modes.split(",")
    rng = np.random.default_rng(args.seed)
    results: dict = {"machine": machine(), "seed": args.seed, "command": " ".join(sys.argv)}
    started = time.monotonic()

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        log = work / "dfd.log"
        clips = rel.make_clips(work / "clips", n=args.clips, frames=args.frames, size=args.size)
        reference, extracted, timing = rel.build_reference(clips, work, args.fpv, args.crop_size, log)
        rel.check_store(reference)
        results["timing_s"] = {k: round(v, 3) for k, v in timing.items()}
        print(f"reference: extract {timing['extract_s']:.1f}s, crop {timing['crop_s']:.1f}s "
              f"({timing['frames_segments']} frames segments, {timing['faces_segments']} faces segments)")

        store = work / "killed.h5"
        kills = rel.kill_campaign(rel.extract_args(clips, store, args.fpv), store, "frames",
                                  timing["frames_segments"], None, args.extract_kills, rng, modes,
                                  timing["extract_per_segment_s"], timing["extract_s"], log)
        rel.compare_snapshots(rel.snapshot(store), rel.snapshot(extracted))
        print(f"extract: {len(kills)} kills survived, store equals the uninterrupted one")
        kills += rel.kill_campaign(rel.crop_args(store, args.crop_size), store, "faces", timing["faces_segments"],
                                   extracted, args.crop_kills, rng, modes, timing["crop_per_segment_s"],
                                   timing["crop_s"], log)
        worst = rel.compare_snapshots(rel.snapshot(store), rel.snapshot(reference))
        print(f"crop: {args.crop_kills} kills survived, store equals the uninterrupted one "
              f"(max crop difference {worst['crops']} grey levels, max box difference {worst['boxes']:.2g} px)")
        results["max_difference"] = worst

        if args.export_kills:
            kills += export_campaign(work, reference, rng, modes, args.export_kills, log, results)
        if args.train_kills:
            kills += train_campaign(work, reference, rng, modes, args.train_kills, args.train_epochs, log, results)

        results["kills"] = [k.as_dict() for k in kills]
        results["summary"] = summarise(kills)

        if args.fuzz:
            cases = hostile.make_fuzz_cases(work / "fuzz", hostile.fuzz_sources(work / "fuzz_seeds"), args.fuzz,
                                            args.seed)
            start = time.monotonic()
            outcomes = hostile.run_fuzz([p for p, _ in cases])
            kinds = {str(p): kind for p, kind in cases}
            by_kind: dict = {}
            for path, outcome in outcomes.items():
                key = outcome if outcome in ("ok", "VideoError") else "FAILURE: " + outcome
                by_kind.setdefault(kinds[path], Counter())[key] += 1
            results["fuzz"] = {"cases": len(cases), "seconds": round(time.monotonic() - start, 1),
                               "outcomes": dict(Counter(o if o in ("ok", "VideoError") else "FAILURE: " + o
                                                        for o in outcomes.values())),
                               "by_mutation": {k: dict(v) for k, v in sorted(by_kind.items())}}

    results["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps({k: results[k] for k in ("summary", "fuzz", "seconds") if k in results}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    failures = {k: v for k, v in results.get("fuzz", {}).get("outcomes", {}).items() if k.startswith("FAILURE")}
    if failures:
        raise SystemExit(f"fuzz failures: {failures}")


def export_campaign(work: Path, reference: Path, rng: np.random.Generator, modes: list[str], kills: int,
                    log: Path, results: dict) -> list:
    """Train a tiny bundle on the reference store, then kill export-features on a copy of it."""
    models = work / "models"
    train = rel.run_dfd(["train-cnn", "--store", reference, "--models-dir", models, "--model", "tiny",
                         "--backbone", "efficientnet-b0", "--weights", "none", "--input-size", 32, "--epochs", 1,
                         "--rounds", 1, "--batch-size", 8, "--quiet"], log)
    assert train.returncode == 0, train.stdout + train.stderr
    base = rel.copy_store(reference, work / "cropped.h5")  # before any features
    export = ["export-features", "--models-dir", models, "--model", "tiny", "--quiet", "--store"]
    start = time.monotonic()
    done = rel.run_dfd(export + [reference], log)
    seconds = time.monotonic() - start
    assert done.returncode == 0, done.stdout + done.stderr
    names = {p.name.split(".", 2)[2][: -len(".h5")] for p in rel.segment_dir(reference).glob("*.features.*.h5")}
    assert len(names) == 1, names
    model = names.pop()
    total = len(rel.complete_segments(reference, f"features.{model}"))
    store = rel.copy_store(base, work / "killed_export.h5")
    killed = rel.kill_campaign(export + [store], store, f"features.{model}", total, base, kills, rng, modes,
                               max(0.05, seconds / (2 * total)), seconds, log)
    worst = compare_features(features_snapshot(store, model), features_snapshot(reference, model))
    results["export_features"] = {"segments": total, "seconds": round(seconds, 1), "max_difference": worst}
    print(f"export-features: {kills} kills survived, features equal the uninterrupted run's (max diff {worst:.2g})")
    return killed


def train_args(store: Path, models: Path, epochs: int) -> list:
    return ["train-cnn", "--store", store, "--models-dir", models, "--model", "killed-train",
            "--backbone", "efficientnet-b0", "--weights", "none", "--input-size", 32, "--epochs", epochs,
            "--patience", epochs, "--rounds", 1, "--batch-size", 4, "--quiet", "--json"]


def checkpointed(state_file: Path) -> list[dict]:
    return json.loads(state_file.read_text())["history"] if state_file.is_file() else []


def train_campaign(work: Path, store: Path, rng: np.random.Generator, modes: list[str], kills: int, epochs: int,
                   log: Path, results: dict) -> list:
    """SIGKILL `dfd train-cnn` at random moments; every `--resume` must go on from the last checkpoint.

    Checks after each kill: the checkpointed epochs of earlier runs are still there, unchanged
    (a resumed run never restarts from epoch 0); the final run reports the epoch it resumed
    from, and ends with every epoch trained once and a bundle that loads.
    """
    from deepfake_cli.nets.bundle import load_bundle

    models = work / "train_models"
    bundle = models / "killed-train"
    args = train_args(store, models, epochs)
    start = time.monotonic()
    reference = rel.run_dfd(train_args(store, work / "reference_models", epochs), log)
    seconds = time.monotonic() - start
    assert reference.returncode == 0, reference.stdout + reference.stderr
    state_file = bundle / "checkpoints" / "cnn" / "state.json"
    epoch_s = float(np.mean([h["seconds"] for h in json.loads(reference.stdout)["history"]]))
    records, before, finished = [], [], False
    for i in range(kills):
        if finished:  # the last run ended before its kill: start again
            shutil.rmtree(bundle)
            before = []
        mode = modes[i % len(modes)]
        wanted = len(before) + int(rng.integers(0, max(epochs - len(before), 1)))  # epochs checkpointed, then a jitter
        jitter, delay = float(rng.uniform(0, epoch_s)), float(rng.uniform(0, seconds))
        finished, sent, code = rel.start_and_kill(args + ["--resume"], log, mode,
                                                  lambda: len(checkpointed(state_file)), wanted, jitter, delay)
        after = checkpointed(state_file)
        assert after[:len(before)] == before, "a resumed run retrained epochs it had checkpointed"
        assert code == (0 if finished else -signal.SIGKILL), f"train-cnn failed on its own ({code}), see {log}"
        landed = "finished" if finished else ("mid-run" if len(after) > len(before) else "startup")
        records.append(rel.Kill("train-cnn", mode, round(sent, 3), len(before), len(after), epochs, landed, []))
        before = after
    final = rel.run_dfd(args + ["--resume"], log)
    assert final.returncode == 0, final.stdout + final.stderr
    summary = json.loads(final.stdout)
    history = checkpointed(state_file)
    assert history[:len(before)] == before
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1)), [h["epoch"] for h in history]
    # --resume without a checkpoint starts afresh (None); with one, it goes on after its last epoch
    assert summary["resumed_from_epoch"] == (len(before) or None), (summary["resumed_from_epoch"], len(before))
    load_bundle(models / "killed-train")
    results["train_cnn"] = {"epochs": epochs, "uninterrupted_s": round(seconds, 1),
                            "epochs_checkpointed_before_final_run": len(before),
                            "final_run_resumed_from_epoch": summary["resumed_from_epoch"]}
    interrupted = sum(r.landed != "finished" for r in records)
    resumed = (f"went on after epoch {summary['resumed_from_epoch']} of {epochs}" if summary["resumed_from_epoch"]
               else f"started afresh (the run before it had finished all {epochs} epochs, or none was checkpointed)")
    print(f"train-cnn: {kills} kills ({interrupted} interrupted training, {kills - interrupted} landed after it "
          f"finished); the final --resume {resumed}, and every epoch was trained once")
    return records


if __name__ == "__main__":
    main()
