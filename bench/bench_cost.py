"""Cost-control overheads: how long a --dry-run takes, and what the Batch API path costs the client.

dry run   N seed records rendered and estimated (byte estimate, cache looked up)
          through run_generate(dry_run=True); nothing is sent.
batch     N label requests through complete_batch against a loopback server in
          this process: write the input, upload, create, poll, download, join
          into a fresh cache. The server answers at once, so the time is the
          client's (and the loopback's) own work per request.

Median of --runs runs; prints a small table.

    python bench/bench_cost.py                    # N=20000 dry run, N=5000 batch, 3 runs
    python bench/bench_cost.py --n-dry 2000 --n-batch 500 --runs 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def seeds(tmp: Path, n: int) -> Path:
    path = tmp / "seeds.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "task": "numeric", "question":
                                        f"A baker made {i} cakes and sold {i // 2} of them. How many are left?"})
                            + "\n" for i in range(n)))
    return path


def dry_run(n: int) -> float:
    from kdpipe.generate import GenerateOptions, run_generate

    with tempfile.TemporaryDirectory() as tmp:
        s = seeds(Path(tmp), n)
        t0 = time.perf_counter()
        r = run_generate(s, Path(tmp) / "o.jsonl", GenerateOptions(
            model="gpt-4o-mini", base_url="http://127.0.0.1:9/v1", cache=Path(tmp) / "c.sqlite", dry_run=True))
        elapsed = time.perf_counter() - t0
    assert r.extra["estimate"].requests == n
    return elapsed


def batch(n: int) -> float:
    from kdpipe.teacher import ChatRequest, ResponseCache, TeacherConfig
    from kdpipe.teacher.batch import BatchOptions, complete_batch
    from kdpipe.loopback import running

    import openai  # noqa: F401  (imported before timing: a one-off cost)

    requests = [ChatRequest([{"role": "user", "content": f"Q: request {i} of the benchmark?\nA:"}], id=f"q{i}")
                for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp, running([]) as srv, \
            ResponseCache(Path(tmp) / "c.sqlite") as cache:
        t0 = time.perf_counter()
        results = complete_batch(TeacherConfig(model="loopback", base_url=srv.base_url), requests, cache,
                                 options=BatchOptions(poll_interval=0.05))
        elapsed = time.perf_counter() - t0
    assert all(r[0].error is None for r in results)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-dry", type=int, default=20_000)
    ap.add_argument("--n-batch", type=int, default=5_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for name, fn, n in (("dry run", dry_run, args.n_dry), ("batch round trip", batch, args.n_batch)):
        times = [fn(n) for _ in range(args.runs)]
        med = statistics.median(times)
        rows.append((name, n, med, 1e6 * med / n))
    print(f"{'what':<18} {'N':>7} {'median s':>9} {'us/request':>11}")
    for name, n, med, per in rows:
        print(f"{name:<18} {n:>7} {med:>9.2f} {per:>11.0f}")


if __name__ == "__main__":
    main()
