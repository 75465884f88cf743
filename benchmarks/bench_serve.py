"""`dfd serve` under load: requests/s, latency percentiles, refusals and the server's peak memory.

Starts `dfd serve` (the real command, its own process) on a free port of 127.0.0.1, waits for
/readyz, then for each concurrency posts --requests uploads of the clip to /v1/predict from that
many client threads (loopback only; bounded by --requests and --max-seconds per level). Every
request is counted as a verdict (200), a refusal (503, the queue full: answered at once), another
status, or unanswered (no response: a connection error or a client timeout), which should be 0.
With --retry, a client refused with 503 waits the Retry-After the server sent and tries again
(as a well-behaved client does), until its verdict or the level's time is up: then every request
should end with its verdict, and latency counts the waits.

    python -m benchmarks.bench_serve [--clip examples/astronaut.mp4] [--requests 200]
        [--concurrency 1,4,16] [--workers 1] [--queue 8] [--max-seconds 300] [--retry]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from benchmarks.common import machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_memory_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of the server and its worker processes, summed."""
    total = 0.0
    pids = [pid] + [int(p) for p in _children(pid)]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def level(base: str, clip: Path, requests: int, concurrency: int, max_seconds: float, retry: bool = False) -> dict:
    data = clip.read_bytes()
    outcomes: list[tuple[int | None, float]] = []
    retries: list[int] = []
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def one(_: int) -> None:
        if time.monotonic() > deadline:
            return
        start = time.perf_counter()
        while True:
            try:
                with httpx.Client(base_url=base, timeout=600) as http:
                    response = http.post("/v1/predict", files={"file": (clip.name, data, "video/mp4")})
                status = response.status_code
            except httpx.HTTPError:
                status = None
            if not (retry and status == 503 and time.monotonic() < deadline):
                break
            with lock:
                retries.append(1)
            time.sleep(float(response.headers.get("retry-after", "1")))
        with lock:
            outcomes.append((status, time.perf_counter() - start))

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    ok = [s for status, s in outcomes if status == 200]
    refused = [s for status, s in outcomes if status == 503]
    return {"concurrency": concurrency, "sent": len(outcomes), "ok": len(ok), "refused_503": len(refused),
            "other": sum(1 for status, _ in outcomes if status not in (200, 503, None)),
            "unanswered": sum(1 for status, _ in outcomes if status is None),
            "verdicts_per_s": len(ok) / wall, "p50": percentile(ok, 50), "p95": percentile(ok, 95),
            "p99": percentile(ok, 99), "refusal_p50": percentile(refused, 50), "retries": len(retries)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=Path("examples/astronaut.mp4"))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--queue", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=300.0, help="per concurrency level")
    parser.add_argument("--retry", action="store_true", help="retry a 503 after its Retry-After")
    args = parser.parse_args()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "deepfake_cli", "serve", "--port", str(port), "--workers",
                               str(args.workers), "--queue", str(args.queue), "--quiet"],
                              stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        start = time.perf_counter()
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.perf_counter() - start > 120:
                raise SystemExit("dfd serve did not become ready")
            time.sleep(0.1)
        print(f"machine: {machine()}; clip {args.clip} ({args.clip.stat().st_size / 1024:.0f} kB); "
              f"{args.workers} worker(s), queue {args.queue}; ready after {time.perf_counter() - start:.1f} s")
        print(f"{'conc':>4} {'sent':>5} {'200':>5} {'503':>5} {'other':>5} {'unans':>5} {'verdicts/s':>10} "
              f"{'p50 s':>7} {'p95 s':>7} {'p99 s':>7} {'503 p50 s':>9}")
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            r = level(base, args.clip, args.requests, concurrency, args.max_seconds, args.retry)
            print(f"{r['concurrency']:>4} {r['sent']:>5} {r['ok']:>5} {r['refused_503']:>5} {r['other']:>5} "
                  f"{r['unanswered']:>5} {r['verdicts_per_s']:>10.2f} {r['p50']:>7.2f} {r['p95']:>7.2f} "
                  f"{r['p99']:>7.2f} {r['refusal_p50']:>9.3f}" + (f"  ({r['retries']} retries after a 503)"
                                                                  if args.retry else ""), flush=True)
        print(f"server peak memory (all processes): {peak_memory_mb(server.pid):.0f} MB")
        healthy = httpx.post(f"{base}/v1/predict", files={"file": (args.clip.name, args.clip.read_bytes())},
                             timeout=600).status_code
        print(f"after the load: a new request gets {healthy}")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
