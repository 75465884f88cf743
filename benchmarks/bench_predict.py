"""`dfd predict` speed: cold start, single-clip latency, clips/s and face images/s.

- cold: a fresh `dfd predict CLIP` process per run, to the printed verdict (median of --cold runs);
- warm, one clip: one process, models loaded once, each clip scored alone with Predictor.predict,
  split into decode / detect / CNN / LSTM (the first clip is a warm-up and not counted);
- batch: the same clips, and --images DFDC face crops, through predict_many (what
  `dfd predict FOLDER` runs: decode and detection overlapped with the CNN, CNN batches shared
  across inputs), as clips/s and images/s.

    python -m benchmarks.bench_predict [--videos 12] [--images 64] [--cold 3] [--model M] [--runtime auto]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import DATA, ffpp_videos, machine, peak_rss_mb

from deepfake_cli.serve.pipeline import predict_many
from deepfake_cli.serve.predict import load_predictor


def dfdc_images(limit: int) -> list[Path]:
    """The first ``limit`` DFDC face crops, alternating real and fake, in a stable order."""
    root = DATA / "dfdc-faces"
    real, fake = sorted((root / "real").glob("*.jpg")), sorted((root / "fake").glob("*.jpg"))
    return [p for pair in zip(real, fake) for p in pair][:limit]


def rate(predictor, paths: list[Path]) -> tuple[float, int]:
    """(inputs per second through predict_many, how many failed)."""
    start = time.perf_counter()
    results = list(predict_many(predictor, paths))
    return len(paths) / (time.perf_counter() - start), sum(1 for r in results if r.error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="*", type=Path, help="clips (default: FF++ clips of ../shared/data)")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--images", type=int, default=64, help="DFDC face crops for images/s (0: skip)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--runtime", default="auto", help="auto | onnx | keras")
    parser.add_argument("--cold", type=int, default=3, help="fresh processes to time")
    args = parser.parse_args()
    paths = args.paths or ffpp_videos(args.videos + 1)
    print(f"machine: {machine()}")

    cold = []
    for path in paths[1:1 + args.cold]:
        command = [sys.executable, "-m", "deepfake_cli", "predict", str(path), "--quiet", "--runtime", args.runtime]
        if args.model:
            command += ["--model", args.model]
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        cold.append(time.perf_counter() - start)
    if cold:
        print(f"cold, a fresh `dfd predict CLIP` process (median of {len(cold)}): {statistics.median(cold):.2f} s")

    start = time.perf_counter()
    predictor = load_predictor(args.model, device="cpu", runtime=args.runtime)
    print(f"runtime: {getattr(predictor, 'runtime', '?')}; model load: {time.perf_counter() - start:.1f} s")
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
    print(f"warm, one clip at a time (median of {len(totals)}): {statistics.median(totals):.2f} s = "
          + " + ".join(f"{k} {statistics.median(v):.2f}" for k, v in parts.items()))
    clips_per_s, failed = rate(predictor, paths[1:])
    print(f"batch, {len(paths) - 1} clips through predict_many: {clips_per_s:.2f} clips/s ({failed} failed)")
    if args.images:
        images = dfdc_images(args.images)
        predictor.predict(images[0])
        images_per_s, failed = rate(predictor, images)
        print(f"batch, {len(images)} DFDC face images through predict_many: {images_per_s:.1f} images/s "
              f"({failed} failed: no face found)")
    print(f"peak RSS (warm process): {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
