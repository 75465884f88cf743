"""Throughput of `extract` and `crop` (frames/s) on real videos.

    python -m benchmarks.bench_stages --videos 10 --fpv 25 [--detect-size 640] [--detect-every 4] [paths...]

The crop line counts every second of `crop`, loading the detector included; the split after it
says where they went (deepfake_cli.faces.crop.CropSummary.seconds).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import ffpp_videos, machine, peak_rss_mb

from deepfake_cli.faces.crop import CropOptions, crop
from deepfake_cli.data.extract import ExtractOptions, extract
from deepfake_cli.data.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--fpv", type=int, default=25)
    parser.add_argument("--sampling", default="consecutive")
    parser.add_argument("--detect-size", type=int, default=640)
    parser.add_argument("--detect-every", type=int, default=1, help="crop --detect-every (consecutive sampling only)")
    args = parser.parse_args()
    paths = args.paths or ffpp_videos(args.videos)
    with tempfile.TemporaryDirectory() as tmp:
        store_path = Path(tmp) / "bench.h5"
        with Store.open(store_path, write=True) as store:
            start = time.perf_counter()
            summary = extract(store, paths, ExtractOptions(fpv=args.fpv, sampling=args.sampling))
            extract_s = time.perf_counter() - start
            start = time.perf_counter()
            cropped = crop(store, CropOptions(detect_max_side=args.detect_size, device="cpu",
                                              detect_every=args.detect_every))
            crop_s = time.perf_counter() - start
    print(f"machine: {machine()}")
    print(f"videos: {summary.added}, frames: {summary.frames}, sampling {args.sampling}, fpv {args.fpv}")
    print(f"extract: {extract_s:.1f} s, {summary.frames / extract_s:.1f} frames/s (decode + hash + store)")
    print(f"crop:    {crop_s:.1f} s, {cropped.frames / crop_s:.1f} frames/s (MTCNN at {args.detect_size} px on "
          f"{cropped.detected_frames} frames, --detect-every {args.detect_every}; align, 68 landmarks, store); "
          f"face rate {cropped.face_rate:.1%}")
    split = cropped.seconds
    print("  split: " + ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in split.items())
          + f"; other {crop_s - sum(split.values()):.2f} s")
    work = crop_s - split.get("setup", 0.0)
    print(f"  without setup: {cropped.frames / work:.1f} frames/s")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
