"""Start-up time of the CLI: `kdpipe --help` and each stage's `--help`.

    python bench/bench_startup.py [--runs 15]

Prints the median wall time of each (a fresh interpreter each run) and which
heavy libraries `import kdpipe.cli` loads (there should be none).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = [[], ["seed"], ["generate"], ["filter"], ["format"], ["train"], ["eval"], ["teacher", "serve"]]
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "openai", "pyarrow", "numpy")


# Measure what a user gets: compiled bytecode cached after the first start.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def median_seconds(argv: list[str], runs: int) -> float:
    subprocess.run(argv, capture_output=True, check=True, env=ENV)  # warm-up: writes .pyc files
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, env=ENV)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


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
    print(f"{'python -c pass (interpreter only)':<34} {median_seconds([sys.executable, '-c', 'pass'], args.runs):>9.3f}")
    code = f"import sys, kdpipe.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
    print(f"heavy modules loaded by `import kdpipe.cli`: {loaded}")


if __name__ == "__main__":
    main()
