"""Distillation methods compared at the same number of steps: SFT on sampled text, sparse top-K KD, white-box KD.

    python bench/bench_distill.py [--seeds 3] [--steps 250] [--json out.json]   # the CPU toy
    python bench/bench_distill.py --quick                                      # smoke run, a minute or two
    python bench/bench_distill.py --teacher Qwen/Qwen2.5-1.5B-Instruct --student Qwen/Qwen2.5-0.5B-Instruct

The toy task is one-digit arithmetic ("What is 7 minus 3?"), answered in one of two phrasings ("7 - 3 = 4. The
answer is 4." or "Taking 3 from 7 leaves 4. ..."), so a teacher's next-token distribution holds more than its
sampled text. A teacher (tiny Llama, `tiny-student` + `train --full`) learns every question; `kdpipe seed`
holds a share of the questions out. The teacher is saved with save_pretrained and served over real HTTP by
`kdpipe teacher serve --model`; `kdpipe generate --logprobs 20` samples its answers to the training
questions (temperature 1, two samples, the generate seed = the benchmark seed), `filter` and `format --style
kd` make the rows (K = 5 is the stored top-20 cut to its 5 most likely tokens, which is what
`generate --logprobs 5` would store). A narrower student (same tokenizer) is trained from scratch by each method on the same
rows, for the same steps:

    sft            the rows without the teacher's top-K: SFT on the sampled text
    kd-top5        sparse KD on the stored top-K, --kd-top-k 5 (alpha 0.5, tau 1)
    kd-top20       the same with all 20
    fwd-offline    --teacher-model, --kd offline --divergence forward (full-vocabulary logits, alpha 0.5)
    rev-offline    --teacher-model, --kd offline --divergence reverse
    gkd-on-policy  --teacher-model, --kd on-policy --divergence jsd --beta 0.5 --on-policy-frac 0.5

Reported per method, the median over seeds: held-out KL(teacher || student) per completion token on the
teacher's own answers to the held-out questions (one sample each at temperature 1, the same for every
method and seed, right or wrong; computed by kdpipe's offline distillation loss at alpha 0),
accuracy on the held-out questions (`kdpipe eval`, greedy), training tokens/s, and on CUDA peak GPU memory.
The students see the teacher's answers to the training questions only, so the held-out questions measure
what carries over.

With --teacher/--student (model ids or folders) nothing is trained for the teacher: the given pair is used
as it is (the teacher served by `teacher serve --model`, the student trained with LoRA, --full otherwise),
and on a CUDA machine the table adds peak GPU memory per method. Two notes on that path: the pair must
share a tokenizer (train refuses otherwise), and `teacher serve --model` answers one request at a time,
so labelling a few hundred questions takes minutes even on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread per process unless --threads says otherwise: on a CPU other jobs are loading, several
# threads per process spin against each other (a tiny model's forward pass ran 25 times slower).
os.environ.setdefault("OMP_NUM_THREADS", "1")

METHODS = {
    "sft": {},
    "kd-top5": {"kd_top_k": 5},
    "kd-top20": {"kd_top_k": 20},
    "fwd-offline": {"kd": "offline", "divergence": "forward"},
    "rev-offline": {"kd": "offline", "divergence": "reverse"},
    "gkd-on-policy": {"kd": "on-policy", "divergence": "jsd", "beta": 0.5, "on_policy_frac": 0.5},
}
SPARSE = ("kd-top5", "kd-top20")
# Words in the questions: `seed` normalises punctuation away, so "7 + 3" and "7 - 3" would be one question.
PHRASES = {"plus": ("{a} + {b} = {c}.", "Adding {a} and {b} gives {c}."),
           "minus": ("{a} - {b} = {c}.", "Taking {b} from {a} leaves {c}.")}


def kdpipe(*args) -> None:
    subprocess.run([sys.executable, "-m", "kdpipe", *map(str, args), "-q"], check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})


def facts() -> list[tuple[str, str, str, list[str]]]:
    """(question, answer, sign, the two phrasings of the worked answer) of every one-digit sum and difference."""
    out = []
    for a in range(10):
        for b in range(10):
            for sign, c in (("plus", a + b), ("minus", a - b)):
                if c >= 0:
                    out.append((f"What is {a} {sign} {b}?", str(c), sign,
                                [p.format(a=a, b=b, c=c) for p in PHRASES[sign]]))
    return out


def write_task(work: Path) -> tuple[Path, Path, Path]:
    """questions.jsonl, the teacher's training records (every question, both phrasings) and a prompt file
    that asks the bare question (what the teacher was trained on)."""
    from kdpipe.records import Record, Sample, write_records

    qs = work / "questions.jsonl"
    qs.write_text("".join(json.dumps({"question": q, "answer": int(a)}) + "\n" for q, a, _s, _p in facts()))
    records = [Record(id=f"t{i}", question=q, task="numeric", gold=a, samples=[
        Sample(index=k, text=f"{p} The answer is {a}.", rationale=p, answer=a) for k, p in enumerate(phr)])
        for i, (q, a, _s, phr) in enumerate(facts())]
    teacher_records = work / "teacher-train.records.jsonl"
    write_records(teacher_records, records)
    prompt = work / "bare.txt"
    prompt.write_text("{question}")
    return qs, teacher_records, prompt


def corpus(work: Path) -> list[str]:
    from kdpipe.prompt_format import PromptFormat, render_completion, render_prompt

    fmt = PromptFormat(style="cot")
    texts = []
    for q, a, _s, phr in facts():
        texts.append(render_prompt(fmt, q, None, "cot"))
        texts += [render_completion(fmt, "cot", a, None, p) for p in phr]
    return texts * 2


class Served:
    """`kdpipe teacher serve --model DIR` in its own process: real HTTP, stopped with SIGTERM."""

    def __init__(self, model: str, work: Path):
        ready = work / "served-url.txt"
        ready.unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "kdpipe", "teacher", "serve", "--model", model,
                                      "--port", "0", "--ready-file", str(ready)],
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
        deadline = time.time() + 600
        while not (ready.exists() and ready.read_text().strip()):
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit("teacher serve --model did not start")
            time.sleep(0.2)
        self.url = ready.read_text().strip()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def label(url: str, seeds: Path, out: Path, work: Path, prompt: Path, samples: int, seed: int, args,
          held_out: bool = False) -> Path:
    """The served teacher's answers with their top-20, filtered and formatted as kd rows. The questions
    differ by a digit, so the near-duplicate rule is off; held-out answers are kept right or wrong (the
    KL is measured on what the teacher says)."""
    raw, kept, rows = out.with_suffix(".teacher.jsonl"), out.with_suffix(".kept.jsonl"), out
    kdpipe("generate", seeds, "-o", raw, "--mode", "label", "--samples", samples, "--temperature", 1.0,
           "--seed", seed, "--logprobs", 20, "--max-tokens", args.max_tokens, "--prompt", prompt,
           "--model", "bench-teacher", "--base-url", url, "--cache", work / "cache.sqlite", "--concurrency", 1)
    kdpipe("filter", raw, "-o", kept, "--no-near-dup", *(["--no-gold"] if held_out else []))
    kdpipe("format", kept, "-o", rows, "--style", "kd", "--val-frac", 0, "--seed", seed)
    return rows


def without_teacher(rows: Path, out: Path) -> Path:
    """The same rows without the teacher's top-K: SFT on the sampled text alone."""
    lines = [json.loads(x) for x in rows.read_text().splitlines() if x.strip()]
    out.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "teacher"}) + "\n" for r in lines))
    meta = Path(f"{rows}.meta.json")
    if meta.exists():
        Path(f"{out}.meta.json").write_text(meta.read_text())
    return out


def with_val(train_rows: Path, held_out_rows: Path, out: Path) -> Path:
    """Training rows plus the held-out questions' rows as the `val` split (what held-out KL is measured on)."""
    rows = [json.loads(x) for x in train_rows.read_text().splitlines() if x.strip()]
    val = [{**json.loads(x), "split": "val"} for x in held_out_rows.read_text().splitlines() if x.strip()]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows + val))
    Path(f"{out}.meta.json").write_text(Path(f"{train_rows}.meta.json").read_text())
    return out


def held_out_kl(student: str, teacher: str, kl_rows: Path, scratch: Path, args) -> float:
    """KL(teacher || student) per completion token on the val rows: the offline loss at alpha 0."""
    from kdpipe.train import TrainOptions, build_trainer, prepare_data

    opts = TrainOptions(student=student, teacher_model=teacher, kd_alpha=0.0, full=not args.lora,
                        max_length=args.max_length, batch_size=args.batch_size, max_steps=1, overwrite=True)
    prep = prepare_data(kl_rows, scratch, opts)
    return float(build_trainer(prep, scratch, opts, [])[0].evaluate()["eval_loss"])


def accuracy(model: str, ev: Path, args) -> float:
    from kdpipe.evaluate import EvalOptions, run_eval

    return run_eval(ev, EvalOptions(model=model, max_new_tokens=args.max_tokens, batch_size=32)).models[0].accuracy


def train_one(name: str, rows: Path, plain: Path, student: str, teacher: str, run: Path, seed: int, args) -> dict:
    from kdpipe.train import TrainOptions, run_train

    cuda = _cuda()
    flags = dict(METHODS[name])
    if name not in SPARSE and flags:
        flags["teacher_model"] = teacher
    opts = TrainOptions(student=student, full=not args.lora, learning_rate=args.lr, max_steps=args.steps,
                        batch_size=args.batch_size, max_length=args.max_length, log_every=max(1, args.steps // 5),
                        eval_every=10 ** 6, save_every=10 ** 6, seed=seed, overwrite=True, merge=args.lora, **flags)
    if cuda:
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    r = run_train(rows if name in SPARSE else plain, run, opts)
    peak = None
    if cuda:
        import torch

        peak = torch.cuda.max_memory_allocated() / 2 ** 30
    return {"tokens_per_s": r.tokens_per_s, "seconds": r.seconds, "train_loss": r.train_loss, "peak_gib": peak}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def build_models(work: Path, teacher_records: Path, args) -> tuple[str, list[str]]:
    """(teacher, one student per seed): given, or built here (the teacher trained on every question)."""
    from kdpipe.format import FormatOptions, run_format
    from kdpipe.tiny_student import TinyOptions, build_tiny_student
    from kdpipe.train import TrainOptions, run_train

    texts = corpus(work)
    if args.teacher:
        teacher = args.teacher
    else:
        rows = work / "teacher-sft.jsonl"
        run_format(teacher_records, rows, FormatOptions(style="cot", val_frac=0.0, seed=0))
        base = build_tiny_student(work / "teacher-base", texts, TinyOptions(
            vocab_size=400, hidden_size=args.teacher_hidden, layers=2, heads=4, seed=100))
        t0 = time.perf_counter()
        run_train(rows, work / "teacher", TrainOptions(
            student=str(base), full=True, learning_rate=args.teacher_lr, max_steps=args.teacher_steps,
            batch_size=16, max_length=args.max_length, eval_every=10 ** 6, save_every=10 ** 6, overwrite=True))
        print(f"teacher trained in {time.perf_counter() - t0:.0f} s", flush=True)
        teacher = str(work / "teacher")
    if args.student:
        return teacher, [args.student] * args.seeds
    return teacher, [str(build_tiny_student(work / f"student-{s}", texts, TinyOptions(
        vocab_size=400, hidden_size=args.student_hidden, layers=2, heads=4, seed=s))) for s in range(args.seeds)]


def table(rows: dict[str, list[dict]], fixed: dict[str, dict], cuda: bool) -> str:
    head = "| method | held-out KL(teacher‖student) per token | accuracy (held-out) | train tokens/s | s per run |"
    lines = [head + (" peak GPU GiB |" if cuda else ""), "|---" * (5 + cuda) + "|"]
    for name, row in fixed.items():
        lines.append(f"| {name} | {row['kl']:.3f} | {100 * row['accuracy']:.0f}% | - | - |" + (" - |" if cuda else ""))

    def med(runs, key, fmt):
        vals = [r[key] for r in runs if r.get(key) is not None]
        if not vals:
            return "-"
        m = statistics.median(vals)
        spread = f" ({fmt.format(min(vals))}–{fmt.format(max(vals))})" if len(vals) > 1 else ""
        return fmt.format(m) + spread

    for name, runs in rows.items():
        acc = med([{"a": 100 * r["accuracy"]} for r in runs], "a", "{:.0f}%")
        cells = [med(runs, "kl", "{:.3f}"), acc, med(runs, "tokens_per_s", "{:.0f}"), med(runs, "seconds", "{:.0f}")]
        if cuda:
            cells.append(med(runs, "peak_gib", "{:.2f}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: one seed, few steps")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=24, help="teacher answers and eval generation")
    ap.add_argument("--eval-frac", type=float, default=0.2, help="share of questions held out")
    ap.add_argument("--teacher-steps", type=int, default=500)
    ap.add_argument("--teacher-lr", type=float, default=3e-3)
    ap.add_argument("--teacher-hidden", type=int, default=64)
    ap.add_argument("--student-hidden", type=int, default=32)
    ap.add_argument("--teacher", help="a teacher model id or folder (skips training one)")
    ap.add_argument("--student", help="a student model id or folder (trained with LoRA unless --full)")
    ap.add_argument("--full", action="store_true", help="with --student: full fine-tuning instead of LoRA")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--work", type=Path, default=None, help="keep the work here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, default=None, help="write every run here (after each run)")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.steps, args.teacher_steps = 1, 20, 150
    args.lora = bool(args.student) and not args.full
    if args.student and args.lr == 3e-3:
        args.lr = 2e-4  # LoRA on a pretrained model, not a model from scratch
    if args.teacher is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown methods: {', '.join(sorted(unknown))}")

    from kdpipe.libraries import quiet_libraries

    quiet_libraries()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        run_all(work, methods, args)


def run_all(work: Path, methods: list[str], args) -> None:
    started = time.perf_counter()
    questions, teacher_records, prompt = write_task(work)
    seeds, ev = work / "seeds.jsonl", work / "eval.jsonl"
    kdpipe("seed", questions, "-o", seeds, "--eval-out", ev, "--eval-frac", args.eval_frac, "--task", "numeric")
    teacher, students = build_models(work, teacher_records, args)
    results: dict[str, list[dict]] = {m: [] for m in methods}
    fixed: dict[str, dict] = {}
    with Served(teacher, work) as served:
        # every method and seed is measured on the same held-out completions
        held_out = label(served.url, ev, work / "held-out.jsonl", work, prompt, 1, 0, args, held_out=True)
        data = [label(served.url, seeds, work / f"kd-{s}.jsonl", work, prompt, 2, s, args)
                for s in range(args.seeds)]
    print(f"teacher labelled the questions ({time.perf_counter() - started:.0f} s so far)", flush=True)
    kl0 = with_val(data[0], held_out, work / "kl-0.jsonl")
    fixed["teacher"] = {"kl": 0.0, "accuracy": accuracy(teacher, ev, args)}
    fixed["untrained student"] = {"kl": held_out_kl(students[0], teacher, kl0, work / "scratch", args),
                                  "accuracy": accuracy(students[0], ev, args)}
    for s in range(args.seeds):
        rows = data[s]
        plain = without_teacher(rows, work / f"sft-{s}.jsonl")
        kl_rows = with_val(rows, held_out, work / f"kl-{s}.jsonl")
        for name in methods:
            run = work / f"run-{name}"
            r = train_one(name, rows, plain, students[s], teacher, run, s, args)
            scored = run / "merged" if args.lora else run  # the KL loss loads a model, not an adapter
            r.update(seed=s, kl=held_out_kl(str(scored), teacher, kl_rows, work / "scratch", args),
                     accuracy=accuracy(str(run), ev, args))
            results[name].append(r)
            print(f"seed {s} {name}: KL {r['kl']:.3f}, accuracy {r['accuracy']:.0%}, "
                  f"{r['tokens_per_s'] or 0:.0f} tokens/s, {r['seconds']:.0f} s "
                  f"(total {time.perf_counter() - started:.0f} s)", flush=True)
            if args.json:
                args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                 "fixed": fixed, "runs": results}, indent=1))
    print()
    print(table(results, fixed, _cuda()))


if __name__ == "__main__":
    main()
