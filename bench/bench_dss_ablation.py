"""Distilling step-by-step's main comparison, at toy scale, on the bundled example task.

    python bench/bench_dss_ablation.py [--seeds 3] [--fractions 0.125,0.5,1] [--steps 300] [--json out.json]

Hsieh et al. (2023, arXiv:2305.02301) compare, on the same questions and at
several training-set sizes, standard fine-tuning on gold labels (`gold`),
label-only distillation (`label`), and distillation with rationales: their
multi-task Distilling step-by-step (`dss`), and chain-of-thought targets
(`cot`, Fine-tune-CoT). Their claim: with rationales, a student reaches a given
accuracy with less data. This script runs that grid here: the bundled
questions are seeded and a held-out eval split set apart, the loopback teacher
labels the rest (two sampled rationales each, with its scripted faults), and
`filter` cleans them. For each seed a random subset of the kept questions
(12.5 %, 50 %, 100 %) is drawn once, and all four styles are formatted from
that same subset, so they differ only in what the student is trained to
write. Every student is the same tiny randomly initialised Llama (built with
the seed), fully fine-tuned for the same number of steps, and scored on the
same held-out questions.

Prints a Markdown table (mean accuracy over seeds; the Wilson 95 % interval of
all seeds' answers pooled; training wall and CPU seconds per run) and writes
every run to --json. It is a toy: a model of a few hundred thousand weights
trained from scratch on one narrow task, not the paper's T5 models.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STYLES = ("gold", "label", "cot", "dss")


def kdpipe(*args) -> None:
    subprocess.run([sys.executable, "-m", "kdpipe", *map(str, args), "-q"], check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})


def prepare(work: Path, eval_frac: float) -> tuple[Path, Path]:
    """Seed, label with the loopback teacher, filter: the kept records and the held-out eval file."""
    from kdpipe.loopback import running

    seeds, ev, teacher, kept = (work / n for n in ("seeds.jsonl", "eval.jsonl", "teacher.jsonl", "filtered.jsonl"))
    if kept.exists():
        return kept, ev
    work.mkdir(parents=True, exist_ok=True)
    kdpipe("seed", REPO / "data/example/questions.jsonl", "-o", seeds, "--eval-out", ev, "--eval-frac", eval_frac,
           "--task", "numeric")
    with running(REPO / "data/example/teacher.jsonl") as server:
        kdpipe("generate", seeds, "-o", teacher, "--mode", "label", "--samples", 2, "--temperature", 0.7,
               "--prompt", REPO / "prompts/numeric.txt", "--model", "loopback-teacher", "--base-url",
               server.base_url, "--cache", work / "cache.sqlite")
    kdpipe("filter", teacher, "-o", kept, "--against", ev)
    return kept, ev


def subset(kept: Path, fraction: float, seed: int, out: Path) -> int:
    lines = kept.read_text().splitlines()
    random.Random(seed).shuffle(lines)
    take = lines[:max(1, math.ceil(fraction * len(lines)))]
    out.write_text("".join(x + "\n" for x in take))
    return len(take)


def pooled_interval(correct: int, n: int) -> tuple[float, float]:
    from kdpipe.evaluate import wilson_interval

    return wilson_interval(correct, n)


def run_one(sft: Path, run_dir: Path, student: Path, ev: Path, args, style: str, seed: int) -> dict:
    from kdpipe.evaluate import EvalOptions, run_eval
    from kdpipe.train import TrainOptions, run_train

    opts = TrainOptions(student=str(student), full=True, learning_rate=args.lr, max_steps=args.steps,
                        batch_size=args.batch_size, max_length=args.max_length, log_every=max(1, args.steps // 4),
                        eval_every=10 ** 6, save_every=10 ** 6, seed=seed, overwrite=True)
    wall, cpu = time.perf_counter(), time.process_time()
    r = run_train(sft, run_dir, opts)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    report = run_eval(ev, EvalOptions(model=str(run_dir), max_new_tokens=64 if style == "cot" else 8,
                                      batch_size=32, limit=args.limit))
    score = report.models[0]
    return {"style": style, "seed": seed, "train_rows": r.train_rows, "steps": r.steps,
            "train_loss": r.train_loss, "n": score.n, "correct": score.correct, "accuracy": score.accuracy,
            "unparsed": score.unparsed, "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1)}


def table(runs: list[dict], fractions: list[float], styles: list[str]) -> str:
    head = "| style | " + " | ".join(f"{f:.1%} of data" for f in fractions) + " | train s (wall / CPU) |"
    lines = [head, "|---" * (len(fractions) + 2) + "|"]
    for style in styles:
        cells, walls, cpus = [], [], []
        for f in fractions:
            rs = [r for r in runs if r["style"] == style and r["fraction"] == f]
            if not rs:
                cells.append("-")
                continue
            correct, n = sum(r["correct"] for r in rs), sum(r["n"] for r in rs)
            lo, hi = pooled_interval(correct, n)
            accs = [r["accuracy"] for r in rs]
            spread = f" ({min(accs):.0%}–{max(accs):.0%})" if len(accs) > 1 else ""
            cells.append(f"{sum(accs) / len(accs):.1%} [{lo:.1%}, {hi:.1%}]{spread}")
            walls += [r["train_wall_s"] for r in rs]
            cpus += [r["train_cpu_s"] for r in rs]
        timing = f"{sum(walls) / len(walls):.0f} / {sum(cpus) / len(cpus):.0f}" if walls else "-"
        lines.append(f"| {style} | " + " | ".join(cells) + f" | {timing} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/kdpipe-dss-ablation"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--fractions", default="0.125,0.5,1")
    p.add_argument("--styles", default=",".join(STYLES))
    p.add_argument("--eval-frac", type=float, default=0.15)
    p.add_argument("--limit", type=int, default=None, help="score only the first N held-out questions")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 wastes less on a machine other jobs are loading)")
    p.add_argument("--json", type=Path, default=None, help="write every run here (after each run)")
    p.add_argument("--table-from", type=Path, default=None,
                   help="print the table of a --json file written earlier (a finished or stopped run)")
    args = p.parse_args()
    fractions = [float(x) for x in args.fractions.split(",")]
    styles = [s for s in args.styles.split(",") if s]
    if args.table_from:
        runs = json.loads(args.table_from.read_text())["runs"]
        print(table(runs, [f for f in fractions if any(r["fraction"] == f for r in runs)], styles))
        return

    from kdpipe.format import FormatOptions, run_format
    from kdpipe.libraries import quiet_libraries
    from kdpipe.tiny_student import TinyOptions, build_tiny_student, corpus_texts

    quiet_libraries()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    kept, ev = prepare(args.work, args.eval_frac)
    texts = corpus_texts(REPO / "data/example/teacher.jsonl")
    runs: list[dict] = []
    started = time.perf_counter()
    for seed in range(args.seeds):
        student = build_tiny_student(args.work / f"student-{seed}", texts, TinyOptions(
            layers=args.layers, hidden_size=args.hidden, heads=args.heads, seed=seed))
        for f in fractions:
            part = args.work / f"kept-{seed}-{f}.jsonl"
            questions = subset(kept, f, seed, part)
            for style in styles:
                sft = args.work / f"sft-{seed}-{f}-{style}.jsonl"
                run_format(part, sft, FormatOptions(style=style, val_frac=0.0, seed=seed))
                r = run_one(sft, args.work / "run", student, ev, args, style, seed)
                r.update(fraction=f, questions=questions)
                runs.append(r)
                print(f"seed {seed} {f:.1%} ({questions} questions) {style}: {r['correct']}/{r['n']} "
                      f"({r['accuracy']:.1%}), {r['train_rows']} rows, train {r['train_wall_s']} s wall / "
                      f"{r['train_cpu_s']} s CPU, total {time.perf_counter() - started:.0f} s", flush=True)
                if args.json:
                    args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                     "runs": runs}, indent=1))
    print()
    print(table(runs, fractions, styles))


if __name__ == "__main__":
    main()
