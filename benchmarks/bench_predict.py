"""`dfd predict` end to end: seconds per video split into decode / detect / CNN / LSTM.

Warm: one process, models loaded once, videos scored in a loop (the first video is a
warm-up and not counted). Cold: a fresh `dfd predict` process per video.

    python -m benchmarks.bench_predict --videos 6 [--model deepfake_cli/default_model] [paths...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import ffpp_videos, machine, peak_rss_mb

from deepfake_cli.predict import load_predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--model", default=None)
    parser.add_argument("--cold", type=int, default=2, help="videos to time in fresh processes")
    args = parser.parse_args()
    paths = args.paths or ffpp_videos(args.videos + 1)
    start = time.perf_counter()
    predictor = load_predictor(args.model, device="cpu")
    load_s = time.perf_counter() - start
    predictor.predict(paths[0])  # warm-up: graph tracing, allocator
    parts: dict[str, list[float]] = {}
    totals = []
    for path in paths[1:]:
        start = time.perf_counter()
        result = predictor.predict(path)
        totals.append(time.perf_counter() - start)
        for key, value in result.seconds.items():
            parts.setdefault(key, []).append(value)
        print(f"  {path.name}: {result.verdict or result.error} P(fake)={result.probability:.3f} "
              f"{totals[-1]:.2f}s {result.frames} frames", flush=True)
    print(f"machine: {machine()}")
    print(f"model load: {load_s:.1f} s")
    print(f"warm, per video (median of {len(totals)}): {statistics.median(totals):.2f} s = "
          + " + ".join(f"{k} {statistics.median(v):.2f}" for k, v in parts.items()))
    print(f"peak RSS (warm process): {peak_rss_mb():.0f} MB")
    cold = []
    for path in paths[1:1 + args.cold]:
        command = [sys.executable, "-m", "deepfake_cli", "predict", str(path), "--quiet", "--device", "cpu"]
        if args.model:
            command += ["--model", args.model]
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        cold.append(time.perf_counter() - start)
    if cold:
        print(f"cold, fresh process per video (median of {len(cold)}): {statistics.median(cold):.1f} s")


if __name__ == "__main__":
    main()
