"""Training throughput of `kdpipe train` against plain TRL defaults, on the same data.

On a CUDA machine, with a model from the hub or a folder:

    python bench/bench_train.py --student Qwen/Qwen2.5-0.5B-Instruct --data sft.jsonl --steps 50 --runs 3

or with no hub at all, a randomly initialised model of a real architecture
(bench/configs/NAME.json: qwen2.5-0.5b, qwen2.5-1.5b, llama-3.2-1b) and
synthetic rows of realistic length (without --data):

    python bench/bench_train.py --student-config qwen2.5-0.5b --steps 40

trains a LoRA student for a fixed number of steps with kdpipe's settings and
with an SFTTrainer left at TRL's defaults (plus the same LoRA rank, on PEFT's
default target modules, and the same batch size and max length), and prints the
median over runs of tokens/s, step time, peak GPU memory and model FLOP
utilisation (MFU = 6 * parameters * tokens/s / the GPU's peak dense bf16
FLOP/s: the usual estimate for a forward and backward pass through every
weight; LoRA skips the frozen weights' gradients, about a third of that work,
so LoRA's MFU reads about 1.5 times the hardware's real utilisation).
Tokens/s and step time are steady-state: measured from the first logging
step on, so the first steps' warm-up does not count.

Without CUDA it refuses, except with `--cpu-smoke`, which runs the same code
on the tiny shape (or the student given) with few steps to show that the
script works end to end (its numbers say nothing about a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# Peak dense bf16 tensor FLOP/s by device name (vendor data sheets, no sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def peak_flops(name: str, override: float | None = None) -> float | None:
    if override:
        return override * 1e12
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def steady_rate(metrics: Path) -> dict:
    """tokens/s and seconds/step between the first and the last training log line of a run."""
    rows = [json.loads(line) for line in Path(metrics).read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if "loss" in r and r.get("num_tokens") is not None]
    if len(rows) < 2 or rows[-1]["time"] <= rows[0]["time"]:
        raise RuntimeError(f"{metrics}: fewer than two training log lines; raise --steps")
    first, last = rows[0], rows[-1]
    seconds = last["time"] - first["time"]
    return {"tokens_per_s": round((last["num_tokens"] - first["num_tokens"]) / seconds, 1),
            "step_s": round(seconds / (last["step"] - first["step"]), 4), "steps": last["step"]}


def run_kdpipe(student: str, data: Path, args, out: Path, **options) -> dict:
    """One `kdpipe train` run (LoRA unless options say otherwise); its steady-state rate."""
    from kdpipe.train import METRICS, TrainOptions, run_train

    opts = TrainOptions(student=student, max_steps=args.steps, batch_size=args.batch_size,
                        max_length=args.max_length, lora_r=args.lora_r, log_every=args.log_every,
                        eval_every=10**9, save_every=10**9, **options)
    run_train(data, out, opts)
    return steady_rate(out / METRICS)


def run_trl_defaults(student: str, data: Path, args, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from kdpipe.libraries import quiet_libraries
    from kdpipe.train import METRICS
    from kdpipe.train.data import read_sft
    from kdpipe.train.log import MetricsLog

    quiet_libraries()
    cuda = torch.cuda.is_available()
    rows = read_sft(data).train
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(student)
    model = AutoModelForCausalLM.from_pretrained(student)
    # TRL defaults, except what a fixed-step comparison must fix and what a CPU cannot do.
    config = SFTConfig(output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                       max_length=args.max_length, report_to="none", save_strategy="no", disable_tqdm=True,
                       logging_steps=args.log_every,
                       **({} if cuda else {"bf16": False, "dataloader_pin_memory": False}))
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=LoraConfig(r=args.lora_r, task_type="CAUSAL_LM"),
                         callbacks=[MetricsLog(out / METRICS)])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return steady_rate(out / METRICS)


def measure(fn, student: str, data: Path, args, **options) -> dict:
    """One run of `fn` in a fresh folder, with the peak GPU memory it took."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="bench_train.") as tmp:
        result = fn(student, data, args, Path(tmp) / "run", **options)
    result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None
    return result


def summarise(name: str, runs: list[dict], params: int, flops: float | None) -> dict:
    """Median over runs of one configuration, with MFU on the median tokens/s."""
    tps = statistics.median(r["tokens_per_s"] for r in runs)
    peaks = [r["peak_gib"] for r in runs if r["peak_gib"] is not None]
    return {"config": name, "tokens_per_s": tps, "step_s": statistics.median(r["step_s"] for r in runs),
            "peak_gib": statistics.median(peaks) if peaks else None,
            "mfu": round(6 * params * tps / flops, 4) if flops else None, "runs": [r["tokens_per_s"] for r in runs]}


def device_flops(override: float | None = None) -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name()
    return name, peak_flops(name, override)


def compare(student: str, data: Path, args, params: int) -> list[dict]:
    """kdpipe's LoRA settings and TRL's defaults on the same rows, `args.runs` runs each."""
    _, flops = device_flops(args.peak_tflops)
    return [summarise(name, [measure(fn, student, data, args) for _ in range(args.runs)], params, flops)
            for name, fn in (("kdpipe train", run_kdpipe), ("TRL defaults", run_trl_defaults))]


def markdown(rows: list[dict]) -> str:
    lines = ["| configuration | tokens/s | s/step | peak GiB | MFU |", "|---|---|---|---|---|"]
    for r in rows:
        peak = "-" if r.get("peak_gib") is None else f"{r['peak_gib']:.2f}"
        mfu = "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%"
        lines.append(f"| {r['config']} | {r['tokens_per_s']:.0f} | {r['step_s']:.3f} | {peak} | {mfu} |")
    return "\n".join(lines)


def synthetic_student(shape: str, tmp: Path, records: int, rationale_words: int, style: str = "cot"):
    """(student folder, SFT file) for shape `shape`: random weights and synthetic rows."""
    import student_shapes as ss

    recs = ss.synthetic_records(records, rationale_words=rationale_words)
    student = ss.build_student(shape, tmp / "student", ss.corpus(recs))
    return student, ss.write_sft(tmp / f"sft-{style}.jsonl", recs, style)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    who = p.add_mutually_exclusive_group()
    who.add_argument("--student", help="model id or folder")
    who.add_argument("--student-config", metavar="NAME",
                     help="a random model of this shape (bench/configs/NAME.json), tokenizer built here")
    p.add_argument("--data", type=Path, help="SFT rows from `kdpipe format` (default with --student-config: "
                                             "synthetic cot rows, about 450 tokens each)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--log-every", type=int, default=5, help="logging interval; the rate is measured between logs")
    p.add_argument("--runs", type=int, default=3, help="runs per configuration; the median is reported")
    p.add_argument("--peak-tflops", type=float, help="the GPU's peak dense bf16 TFLOP/s, if not in the table")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--cpu-smoke", action="store_true", help="allow the CPU (tiny shape unless a student is given)")
    args = p.parse_args()

    import torch

    if not torch.cuda.is_available() and not args.cpu_smoke:
        sys.exit("bench_train: no CUDA GPU here; this benchmark measures GPU training "
                 "(use --cpu-smoke to check the script itself on a tiny model)")
    with tempfile.TemporaryDirectory(prefix="bench_train.") as tmp:
        bench(args, Path(tmp))


def bench(args, tmp: Path) -> None:
    import torch

    import student_shapes as ss

    if args.cpu_smoke:
        args.steps, args.max_length, args.log_every = min(args.steps, 12), min(args.max_length, 256), 3
        if not args.student and not args.student_config:
            args.student_config = "tiny"
    if args.student_config:
        student, data = synthetic_student(args.student_config, tmp, records=max(64, args.steps * args.batch_size),
                                          rationale_words=40 if args.cpu_smoke else 300)
        data = args.data or data
        student, params = str(student), ss.n_params(args.student_config)
    elif args.student and args.data:
        student, data = args.student, args.data
        from transformers import AutoConfig, AutoModelForCausalLM

        with torch.device("meta"):
            params = sum(x.numel() for x in AutoModelForCausalLM.from_config(
                AutoConfig.from_pretrained(student)).parameters())
    else:
        sys.exit("bench_train: give --student-config NAME, or --student and --data")
    device, _ = device_flops(args.peak_tflops)
    rows = compare(student, data, args, params)
    print(f"\ndevice: {device}; student: {args.student_config or student} ({params / 1e6:.1f} M parameters); "
          f"{args.steps} steps, batch {args.batch_size}, max length {args.max_length}, LoRA r {args.lora_r}; "
          f"median of {args.runs}")
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({"device": device, "student": args.student_config or student,
                                         "params": params, "args": {k: str(v) for k, v in vars(args).items()},
                                         "results": rows}, indent=2))


if __name__ == "__main__":
    main()
