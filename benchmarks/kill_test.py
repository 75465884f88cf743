"""Crash safety by killing, at scale: SIGKILL dfd stages at random moments, check, resume, compare.

    python benchmarks/kill_test.py [--extract-kills 12] [--crop-kills 10] [--export-kills 6]
                                   [--fuzz 2000] [--seed 0] [--json results.json]

For each stage (extract, crop, and export-features with a tiny efficientnet-b0 bundle) the
script builds a reference store without interruption, then runs the stage again on another
store and SIGKILLs it, alternately at a delay uniform over the stage's uninterrupted duration
("time") and once k more segments exist plus a jitter ("progress"). After every kill: the
index and every segment open, no video lists a stage with missing arrays, and the next writer
deletes the `.tmp` leftovers. At the end the killed store must equal the reference: same
videos, labels and errors, identical frames and crops, features within 1e-5. With --fuzz N it
also feeds N mutated videos to video.probe + read_frames (tests/test_hostile_inputs.py).
The helpers are the CI tests' own (tests/test_reliability.py), with many more kills.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import test_reliability as rel  # noqa: E402
from common import machine  # noqa: E402

from deepfake_cli.store import Store  # noqa: E402


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

        results["kills"] = [k.as_dict() for k in kills]
        results["summary"] = summarise(kills)

        if args.fuzz:
            import test_hostile_inputs as hostile

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


if __name__ == "__main__":
    main()
