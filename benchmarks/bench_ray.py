"""`dfd predict --engine ray` speed: clips/s of the plain batch and of Ray at 1 and 2 workers.

Each engine scores the same clips after its model is loaded (the plain batch: one predictor;
Ray: the workers started and their models loaded, which is timed apart as "start"). The Ray
cluster is local, started once with ``num_cpus`` = the most workers asked for.

    python -m benchmarks.bench_ray [PATHS...] [--videos 12] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.common import ffpp_videos, machine

from deepfake_cli.serve.batch import BatchPrediction


def timed(batch) -> tuple[float, float, int]:
    """(seconds to load the model(s), clips/s of the run after, inputs that failed)."""
    start = time.perf_counter()
    batch.load()
    loaded = time.perf_counter()
    outcome = batch.run()
    return loaded - start, len(batch.files) / (time.perf_counter() - loaded), sum(1 for r in outcome.results if r.error)


def main() -> None:
    import ray

    from deepfake_cli.serve.ray_batch import RayBatchPrediction

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="*", type=Path, help="clips (default: FF++ clips of ../shared/data)")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    paths = args.paths or ffpp_videos(args.videos)
    print(f"machine: {machine()}; {len(paths)} clips")
    load, speed, failed = timed(BatchPrediction(paths))
    print(f"plain batch       : {speed:.2f} clips/s (model loaded in {load:.1f} s; {failed} failed)")
    ray.init(num_cpus=max(args.workers), include_dashboard=False, logging_level="warning", log_to_driver=False)
    try:
        for workers in args.workers:
            load, speed, failed = timed(RayBatchPrediction(paths, workers=workers))
            print(f"ray, {workers} worker(s): {speed:.2f} clips/s (workers started in {load:.1f} s; {failed} failed)")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
