"""Crash safety by killing, at scale: SIGKILL dfd stages at random moments, check, resume, compare.

    python -m benchmarks.kill_test [--extract-kills 12] [--crop-kills 10] [--export-kills 6]
                                   [--train-kills 6] [--predict-kills 12] [--fuzz 2000] [--seed 0]
                                   [--json results.json]

For each stage (extract, crop, and export-features with a tiny efficientnet-b0 bundle) the
script builds a reference store without interruption, then runs the stage again on another
store and SIGKILLs it, alternately at a delay uniform over the stage's uninterrupted duration
("time") and once k more segments exist plus a jitter ("progress"). After every kill: the
index and every segment open, no video lists a stage with missing arrays, and the next writer
deletes the `.tmp` leftovers. At the end the killed store must equal the reference: same
videos, labels and errors, identical frames and crops, features within 1e-5. Then it kills
`dfd train-cnn` (tiny efficientnet-b0) at random moments and resumes it each time with
`--resume`: no checkpointed epoch may be trained again, and the last run must go on from the
last checkpoint and end with every epoch trained once. Then it kills `dfd predict FOLDER --csv
out.csv --skip-done out.csv` (the bundled model) at random moments, resuming each time: after every
kill the CSV's complete rows name each input at most once, and at the end it holds exactly one row
per input, each with the verdict, error and probability of an uninterrupted run's
(:func:`predict_campaign`). With --fuzz N it also feeds N mutated videos to video.probe +
read_frames (tests/test_hostile_inputs.py). A stage's kills set to 0 skip it: `--extract-kills 0
--crop-kills 0 --export-kills 0 --train-kills 0` runs the predict campaign alone.
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
from tests.helpers import ASTRONAUT, write_face_clip


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
    parser.add_argument("--predict-kills", type=int, default=12, help="kills of `dfd predict FOLDER --csv`, "
                        "each resumed with --skip-done (0: none)")
    parser.add_argument("--predict-copies", type=int, default=6, help="copies of examples/astronaut.mp4 "
                        "in predict's folder (besides 2 face clips, 2 images and a file that is not a video)")
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
        kills: list = []
        if args.extract_kills or args.crop_kills or args.export_kills or args.train_kills:
            kills += store_campaigns(args, work, log, rng, modes, results)
        if args.predict_kills:
            kills += predict_campaign(work, rng, modes, args.predict_kills, args.predict_copies, log, results)

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


def store_campaigns(args, work: Path, log: Path, rng: np.random.Generator, modes: list[str], results: dict) -> list:
    """The store stages' campaigns (extract, crop, export-features) and train-cnn's, on clips of a face."""
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
    return kills


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


def predict_folder(folder: Path, copies: int) -> list[Path]:
    """What `dfd predict` judges in the predict campaign: ``copies`` copies of examples/astronaut.mp4,
    two face clips (tests.helpers.write_face_clip, one with a re-quantised "fake" face), two images of
    skimage's astronaut (the whole picture and her face) and a file that is not a video (an error row)."""
    import cv2
    from skimage.data import astronaut

    folder.mkdir(parents=True)
    for i in range(copies):
        shutil.copy(ASTRONAUT, folder / f"astronaut_{i:02d}.mp4")
    write_face_clip(folder / "face_real.mp4", shift=0, fake=False, frames=12)
    write_face_clip(folder / "face_fake.mp4", shift=6, fake=True, frames=12)
    image = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(folder / "astronaut.png"), image)
    cv2.imwrite(str(folder / "astronaut_face.jpg"), image[0:260, 110:350])
    (folder / "not_a_video.mp4").write_bytes(b"this is not a video\n")
    return sorted(folder.iterdir())


def csv_rows(path: Path) -> tuple[list[dict], bool]:
    """(the complete rows of a --csv or --jsonl file, whether its last line was cut mid-line)."""
    from deepfake_cli.serve.result_files import read_results

    if not path.is_file():
        return [], False
    rows, _, torn = read_results(path)
    return rows, bool(torn)


def predict_campaign(work: Path, rng: np.random.Generator, modes: list[str], kills: int, copies: int, log: Path,
                     results: dict) -> list:
    """SIGKILL `dfd predict FOLDER --csv out.csv --jsonl out.jsonl --skip-done out.csv` at random
    moments, resuming each time.

    Kills alternate between a delay uniform over an uninterrupted run's duration ("time") and the
    moment k more rows are in the CSV plus a jitter of up to one input's time ("progress"). After
    each kill the CSV's complete rows name each input at most once; a run that finished before its
    kill starts the next one from empty files. A last run goes to the end; then the CSV and the
    JSON Lines must hold exactly one row per input, each with the verdict, error, exit code and
    probability of the uninterrupted run's (the CSV's 6 decimals compared exactly; the JSON's full
    precision within 1e-6, the largest difference reported).
    """
    folder = work / "predict_inputs"
    inputs = predict_folder(folder, copies)
    reference, reference_jsonl = work / "predict_reference.csv", work / "predict_reference.jsonl"
    start = time.monotonic()
    done = rel.run_dfd(["predict", folder, "--csv", reference, "--jsonl", reference_jsonl, "--quiet"], log)
    seconds = time.monotonic() - start
    want, torn = csv_rows(reference)
    assert not torn and sorted(r["path"] for r in want) == sorted(map(str, inputs)), want
    assert done.returncode == 3, done.stdout + done.stderr  # the file that is not a video: exit 3
    out, out_jsonl = work / "predict_killed.csv", work / "predict_killed.jsonl"
    args = ["predict", folder, "--csv", out, "--jsonl", out_jsonl, "--skip-done", out, "--quiet"]
    total, records, torn_seen = len(inputs), [], 0
    for i in range(kills):
        mode = modes[i % len(modes)]
        before, _ = csv_rows(out)
        target = len(before) + int(rng.integers(1, max(total - len(before), 1) + 1))
        jitter, delay = float(rng.uniform(0, seconds / total)), float(rng.uniform(0, seconds))
        finished, sent, code = rel.start_and_kill(args, log, mode, lambda: len(csv_rows(out)[0]), target, jitter,
                                                  delay)
        assert code in (3, -signal.SIGKILL), f"dfd predict failed on its own ({code}), see {log}"
        after, torn = csv_rows(out)
        lines, torn_jsonl = csv_rows(out_jsonl)
        torn_seen += torn + torn_jsonl
        for rows in (after, lines):
            paths = [r["path"] for r in rows]
            assert len(paths) == len(set(paths)), f"an input has two rows after kill {i + 1}: {sorted(paths)}"
        leftovers = sorted(p.name for f in (out, out_jsonl) for p in f.parent.glob(f.name + ".tmp*"))
        landed = "finished" if finished else ("mid-run" if len(after) > len(before) else "startup")
        records.append(rel.Kill("predict", mode, round(sent, 3), len(before), len(after), total, landed, leftovers))
        if finished:  # nothing left to resume: the next kill starts from empty files
            out.unlink()
            out_jsonl.unlink()
    final = rel.run_dfd(args, log)
    assert final.returncode in (0, 3), final.stdout + final.stderr
    got, torn = csv_rows(out)
    assert not torn and sorted(r["path"] for r in got) == sorted(map(str, inputs)), sorted(r["path"] for r in got)
    compared = ("verdict", "probability", "error", "exit_code")
    by_path = {r["path"]: r for r in want}
    differ = {r["path"]: {k: (r[k], by_path[r["path"]][k]) for k in compared if r[k] != by_path[r["path"]][k]}
              for r in got}
    differ = {p: d for p, d in differ.items() if d}
    assert not differ, f"resumed rows differ from the uninterrupted run's: {differ}"
    lines, torn = csv_rows(out_jsonl)
    assert not torn and sorted(r["path"] for r in lines) == sorted(map(str, inputs))
    exact = {r["path"]: r for r in csv_rows(reference_jsonl)[0]}
    assert all((r["verdict"], r["error"]) == (exact[r["path"]]["verdict"], exact[r["path"]]["error"]) for r in lines)
    gaps = [abs(r["probability"] - exact[r["path"]]["probability"]) for r in lines if r["verdict"]]
    assert max(gaps) <= 1e-6, max(gaps)
    interrupted = sum(r.landed != "finished" for r in records)
    results["predict"] = {"inputs": total, "uninterrupted_s": round(seconds, 1), "kills": kills,
                          "interrupted": interrupted, "torn_last_rows": torn_seen,
                          "tmp_leftovers": sum(bool(r.leftovers) for r in records),
                          "max_probability_difference": max(gaps), "identical_probabilities": gaps.count(0.0),
                          "rows": len(got), "verdicts": sum(r["verdict"] in ("real", "fake") for r in got),
                          "errors": sum(bool(r["error"]) for r in got)}
    print(f"predict: {kills} kills ({interrupted} interrupted the batch, {kills - interrupted} landed after it "
          f"finished; {torn_seen} left a torn last row); the resumed CSV and JSON Lines have exactly one row for "
          f"each of the {total} inputs, every verdict, error and probability equal to the uninterrupted run's "
          f"(largest difference at full precision {max(gaps):.2g}; {seconds:.1f} s uninterrupted)")
    return records


if __name__ == "__main__":
    main()
