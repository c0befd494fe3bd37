"""429s met under a provider's rate limit: fixed concurrency, --adaptive blind, --adaptive reading headers.

The loopback teacher admits --limit requests per --period seconds (loopback/limits.py) and answers the
rest 429 with Retry-After; it sends the x-ratelimit-* headers, or not ("blind"). Each setting runs
`kdpipe generate` (run_generate, label mode) on N synthetic questions with a fresh cache and prints the
429s the server sent and the wall time (median of --runs, each run's figures beside).

    python bench/bench_ratelimit.py                   # N=400, 40 per 0.5 s, C=64, latency 50 ms
    python bench/bench_ratelimit.py --tokens 36000    # a token limit per period instead
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SETTINGS = (("fixed concurrency", False, True), ("--adaptive, no headers", True, False),
            ("--adaptive, headers", True, True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--limit", type=int, default=40, help="requests per period")
    ap.add_argument("--tokens", type=int, help="tokens per period (instead of --limit)")
    ap.add_argument("--period", type=float, default=0.5)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    from kdpipe.generate import GenerateOptions, run_generate
    from kdpipe.loopback import running
    from kdpipe.loopback.limits import RateWindow
    from kdpipe.seed import SeedOptions, run_seed

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "q.jsonl").write_text("".join(json.dumps({"question": f"Question {i}: how many?", "answer": i})
                                             + "\n" for i in range(args.n)))
        run_seed(tmp / "q.jsonl", tmp / "seeds.jsonl", SeedOptions())
        limit = f"{args.tokens} tokens" if args.tokens else f"{args.limit} requests"
        print(f"N={args.n}, {limit} per {args.period:g} s, C={args.concurrency}, latency {args.latency:g} s, "
              f"median of {args.runs}")
        for name, adaptive, headers in SETTINGS:
            seen = []
            for k in range(args.runs):
                window = RateWindow(None if args.tokens else (args.limit, args.period),
                                    (args.tokens, args.period) if args.tokens else None, headers)
                with running([], latency=args.latency, rate_limit=window) as srv:
                    started = time.monotonic()
                    run_generate(tmp / "seeds.jsonl", tmp / "out.jsonl", GenerateOptions(
                        model="loopback", base_url=srv.base_url, cache=tmp / f"{name}-{k}.sqlite",
                        concurrency=args.concurrency, adaptive=adaptive, retries=10))
                    seen.append((srv.stats["limited"], time.monotonic() - started))
            each = ", ".join(f"{n} in {s:.1f} s" for n, s in seen)
            print(f"{name:<24} 429s {statistics.median(n for n, _ in seen):>6g}   wall "
                  f"{statistics.median(s for _, s in seen):6.2f} s   ({each})", flush=True)


if __name__ == "__main__":
    main()
