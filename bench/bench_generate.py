"""Teacher client throughput against the loopback server: how close to the latency bound?

With teacher latency L and concurrency C, N requests cannot finish faster than
N*L/C. For each transport and concurrency this runs N requests (distinct
prompts, so no cache hits, each response committed to a fresh SQLite cache)
through kdpipe.teacher.complete against a loopback server in its own process,
and prints the achieved fraction of that ideal, the client's CPU time per
request and its peak memory (median of --runs runs, each in a fresh process).

    python bench/bench_generate.py                 # N=10000, L=0.2, C=64 and 256, every transport
    python bench/bench_generate.py --n 2000 --runs 1
    python bench/bench_generate.py --whole 64:2000 256:10000   # `kdpipe generate` as a user runs it

--whole C:N times the whole command (`python -m kdpipe generate` in label mode on N seed records,
start-up, prompt rendering and writing the output included) from outside its process, against the
same latency bound N*L/C; CPU is the child's user+system time.
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

    import aiohttp, httptools, openai  # noqa: F401,E401  (imported before timing: a one-off cost, not per request)

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


def whole(url: str, n: int, concurrency: int, transport: str, tmp: Path, env: dict) -> dict:
    """One `kdpipe generate` run, timed from outside: start-up and output writing included."""
    seeds = tmp / f"seeds-{n}.jsonl"
    if not seeds.exists():
        questions = tmp / f"questions-{n}.jsonl"
        questions.write_text("".join(json.dumps({"question": f"Request {i} of the benchmark: how many?",
                                                 "answer": i}) + "\n" for i in range(n)))
        subprocess.run([sys.executable, "-m", "kdpipe", "seed", str(questions), "-o", str(seeds), "-q"],
                       env=env, check=True)
    cache = tmp / "cache.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{cache}{suffix}").unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kdpipe", "generate", str(seeds), "-o", str(tmp / "out.jsonl"),
                    "--model", "loopback", "--base-url", url, "--concurrency", str(concurrency),
                    "--transport", transport, "--cache", str(cache), "--timeout", "30", "-q"],
                   env=env, check=True)
    wall = time.perf_counter() - wall0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_ms_per_request": 1000 * cpu / n, "peak_rss_mib": after.ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="requests per run")
    ap.add_argument("--latency", type=float, default=0.2, help="loopback server latency, seconds")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--transport", nargs="+", default=["asyncio", "aiohttp", "openai"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--whole", nargs="+", metavar="C:N", help="time `kdpipe generate` as a whole, at "
                                                              "concurrency C on N seed records")
    ap.add_argument("--worker", nargs=4, metavar=("URL", "N", "C", "TRANSPORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        url, n, c, transport = args.worker
        print(json.dumps(worker(url, int(n), int(c), transport)))
        return

    from kdpipe.loopback import subprocess_server

    # What a user gets: bytecode written on the first start and reused (not recompiled every start).
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if args.whole:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "kdpipe")], env=env, check=True)
        pairs = [tuple(map(int, pair.split(":"))) for pair in args.whole]
        print(f"whole `kdpipe generate` runs, latency L={args.latency:g} s, median of {args.runs} runs, "
              f"server in its own process; {os.cpu_count()} CPUs")
        print(f"{'transport':<9} {'C':>5} {'N':>6} {'ideal s':>8} {'wall s':>8} {'fraction':>8} "
              f"{'CPU ms/req':>10} {'runs (wall s)':>20}")
        with subprocess_server("--latency", str(args.latency)) as url, tempfile.TemporaryDirectory() as tmp:
            for c, n in pairs:
                for transport in args.transport:
                    runs = [whole(url, n, c, transport, Path(tmp), env) for _ in range(args.runs)]
                    ideal = n * args.latency / c
                    wall = statistics.median(r["wall_s"] for r in runs)
                    cpu = statistics.median(r["cpu_ms_per_request"] for r in runs)
                    each = " ".join(f"{r['wall_s']:.1f}" for r in runs)
                    print(f"{transport:<9} {c:>5} {n:>6} {ideal:>8.2f} {wall:>8.2f} {ideal / wall:>8.3f} "
                          f"{cpu:>10.2f} {each:>20}", flush=True)
        return
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
                print(f"{transport:<9} {c:>5} {ideal:>8.2f} {wall:>8.2f} {ideal / wall:>8.3f} {cpu:>10.2f} "
                      f"{mem:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
