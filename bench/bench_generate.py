"""Teacher client throughput against the loopback server: how close to the latency bound?

With teacher latency L and concurrency C, N requests cannot finish faster than
N*L/C. For each transport and concurrency this runs N requests (distinct
prompts, so no cache hits, each response committed to a fresh SQLite cache)
through kdpipe.teacher.complete against a loopback server in its own process,
and prints the achieved fraction of that ideal, the client's CPU time per
request and its peak memory (median of --runs runs, each in a fresh process).

    python bench/bench_generate.py                 # N=10000, L=0.2, C=64 and 256, both transports
    python bench/bench_generate.py --n 2000 --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def worker(url: str, n: int, concurrency: int, transport: str) -> dict:
    """One measured run in this process; returns its numbers."""
    from kdpipe.teacher import ChatRequest, ResponseCache, Stats, TeacherConfig, complete

    import aiohttp, openai  # noqa: F401,E401  (imported before timing: a one-off cost, not per request)

    config = TeacherConfig(model="loopback", base_url=url, concurrency=concurrency, timeout=30,
                           transport=transport)
    requests = [ChatRequest([{"role": "user", "content": f"Q: request {i} of the benchmark?\nA:"}])
                for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp, ResponseCache(Path(tmp) / "cache.sqlite") as cache:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        stats = Stats()
        results = complete(config, requests, cache, stats)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    assert sum(r[0].error is None for r in results) == n, "some requests failed"
    return {"wall_s": wall, "cpu_ms_per_request": 1000 * cpu / n, "requests": stats.requests,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="requests per run")
    ap.add_argument("--latency", type=float, default=0.2, help="loopback server latency, seconds")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--transport", nargs="+", default=["openai", "aiohttp"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--worker", nargs=4, metavar=("URL", "N", "C", "TRANSPORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        url, n, c, transport = args.worker
        print(json.dumps(worker(url, int(n), int(c), transport)))
        return

    from kdpipe.loopback import subprocess_server

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print(f"N={args.n} requests, latency L={args.latency:g} s, median of {args.runs} runs, "
          f"server in its own process; {os.cpu_count()} CPUs")
    print(f"{'transport':<9} {'C':>5} {'ideal s':>8} {'wall s':>8} {'fraction':>8} {'CPU ms/req':>10} "
          f"{'peak MiB':>8}")
    with subprocess_server("--latency", str(args.latency)) as url:
        for transport in args.transport:
            for c in args.concurrency:
                runs = []
                for _ in range(args.runs):
                    out = subprocess.run([sys.executable, __file__, "--worker", url, str(args.n), str(c), transport],
                                         capture_output=True, text=True, env=env, check=True)
                    runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                ideal = args.n * args.latency / c
                wall = statistics.median(r["wall_s"] for r in runs)
                cpu = statistics.median(r["cpu_ms_per_request"] for r in runs)
                mem = max(r["peak_rss_mib"] for r in runs)
                print(f"{transport:<9} {c:>5} {ideal:>8.2f} {wall:>8.2f} {ideal / wall:>8.2f} {cpu:>10.2f} "
                      f"{mem:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
