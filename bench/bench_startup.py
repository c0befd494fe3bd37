"""Start-up time of the CLI: `kdpipe --help`, each stage's `--help` and a 1-record `generate`.

    python bench/bench_startup.py [--runs 15]

Prints the median wall time of each (a fresh interpreter each run; `generate` asks
a loopback teacher at latency 0, started here, with a new cache each run, so it is
start-up plus one request) and which heavy libraries `import kdpipe.cli` loads
(there should be none).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = [[], ["seed"], ["generate"], ["filter"], ["format"], ["train"], ["eval"], ["teacher", "serve"]]
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "openai", "pyarrow", "numpy")


# Measure what a user gets: compiled bytecode cached after the first start.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def median_seconds(argv: list[str], runs: int, before=lambda: None) -> float:
    before()
    subprocess.run(argv, capture_output=True, check=True, env=ENV)  # warm-up: writes .pyc files
    times = []
    for _ in range(runs):
        before()
        t = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, env=ENV)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def generate_seconds(base: list[str], runs: int) -> float:
    """Median wall time of `kdpipe generate` on one seed record against a loopback teacher."""
    with tempfile.TemporaryDirectory(prefix="kdpipe-bench-startup-") as tmp:
        d = Path(tmp)
        (d / "seeds.jsonl").write_text('{"id": "a", "question": "What is 2+2?", "gold": "4", "task": "numeric"}\n')
        server = subprocess.Popen(base + ["teacher", "serve", "--port", "0", "--latency", "0", "--ready-file",
                                          str(d / "url")], stdout=subprocess.DEVNULL, env=ENV)
        try:
            deadline = time.monotonic() + 30
            while not (d / "url").exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the loopback teacher did not start")
                time.sleep(0.05)
            argv = base + ["generate", str(d / "seeds.jsonl"), "-o", str(d / "out.jsonl"), "--model", "loopback",
                           "--base-url", (d / "url").read_text().strip(), "--cache", str(d / "cache.sqlite"), "-q"]

            def new_cache():  # a cached answer would skip the request
                for f in d.glob("cache.sqlite*"):
                    f.unlink()

            return median_seconds(argv, runs, before=new_cache)
        finally:
            server.terminate()
            server.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    script = shutil.which("kdpipe")
    base = [script] if script else [sys.executable, "-m", "kdpipe"]
    print(f"{'command':<34} {'median s':>9}")
    for sub in COMMANDS:
        argv = base + sub + ["--help"]
        print(f"{'kdpipe ' + ' '.join(sub + ['--help']):<34} {median_seconds(argv, args.runs):>9.3f}")
    print(f"{'kdpipe generate (1 record)':<34} {generate_seconds(base, args.runs):>9.3f}")
    print(f"{'python -c pass (interpreter only)':<34} {median_seconds([sys.executable, '-c', 'pass'], args.runs):>9.3f}")
    code = f"import sys, kdpipe.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
    print(f"heavy modules loaded by `import kdpipe.cli`: {loaded}")


if __name__ == "__main__":
    main()
