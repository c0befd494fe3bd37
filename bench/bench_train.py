"""Training throughput of `kdpipe train` against plain TRL defaults, on the same data.

On a CUDA machine:

    python bench/bench_train.py --student Qwen/Qwen2.5-0.5B-Instruct --data sft.jsonl --steps 50 --runs 3

trains a LoRA student for a fixed number of steps with kdpipe's settings and
with an SFTTrainer left at TRL's defaults (plus the same LoRA rank, on PEFT's
default target modules), and prints the median over runs of tokens/s, peak
GPU memory and model FLOP utilisation (MFU = 6 * parameters * tokens/s / the
GPU's peak dense bf16 FLOP/s: the usual estimate for a forward and backward
pass through every weight; LoRA skips the frozen weights' gradient, so MFU
of a LoRA run reads a little high).

Without CUDA it refuses, except with `--cpu-smoke`, which runs the same code
on a tiny random student and toy data to show that the script works end to
end (its numbers say nothing about a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# Peak dense bf16 tensor FLOP/s by device name (vendor data sheets, no sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def peak_flops(name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def run_kdpipe(student: str, data: Path, args, out: Path) -> dict:
    from kdpipe.train import TrainOptions, run_train

    opts = TrainOptions(student=student, max_steps=args.steps, batch_size=args.batch_size,
                        max_length=args.max_length, lora_r=args.lora_r, log_every=max(1, args.steps // 10),
                        eval_every=10**9, save_every=10**9)
    r = run_train(data, out, opts)
    return {"tokens_per_s": r.tokens_per_s, "steps": r.steps}


def run_trl_defaults(student: str, data: Path, args, out: Path) -> dict:
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from kdpipe.train.data import read_sft
    from kdpipe.libraries import quiet_libraries
    from kdpipe.train import dataset
    from kdpipe.train.trainers import pick

    quiet_libraries()
    cuda = torch.cuda.is_available()
    rows = read_sft(data).train
    tokenizer = AutoTokenizer.from_pretrained(student)
    model = AutoModelForCausalLM.from_pretrained(student)
    # TRL defaults, except what a fixed-step comparison must fix and what a CPU cannot do.
    config = SFTConfig(output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                       max_length=args.max_length, report_to="none", save_strategy="no", disable_tqdm=True,
                       logging_steps=max(1, args.steps // 10),
                       **({} if cuda else {"bf16": False, "dataloader_pin_memory": False}))
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset(rows, pick(False)), processing_class=tokenizer,
                         peft_config=LoraConfig(r=args.lora_r, task_type="CAUSAL_LM"))
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    started = time.time()
    trainer.train()
    seconds = time.time() - started
    tokens = trainer._total_train_tokens
    return {"tokens_per_s": round(tokens / seconds, 1), "steps": trainer.state.global_step}


def n_params(student: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    with __import__("torch").device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(student))
    return sum(p.numel() for p in model.parameters())


def measure(fn, student: str, data: Path, args) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        result = fn(student, data, args, Path(tmp) / "run")
    result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return result


def cpu_smoke_inputs(tmp: Path) -> tuple[str, Path]:
    import support_tiny as st

    student = st.build_student(tmp / "student")
    return str(student), st.write_sft(tmp / "sft.jsonl", "cot", repeats=40)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student", help="model id or folder (required unless --cpu-smoke)")
    p.add_argument("--data", type=Path, help="SFT rows from `kdpipe format` (required unless --cpu-smoke)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--runs", type=int, default=3, help="runs per configuration; the median is reported")
    p.add_argument("--peak-tflops", type=float, help="the GPU's peak dense bf16 TFLOP/s, if not in the table")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny random student on the CPU: checks the script")
    args = p.parse_args()

    import torch

    if not torch.cuda.is_available() and not args.cpu_smoke:
        sys.exit("bench_train: no CUDA GPU here; this benchmark measures GPU training "
                 "(use --cpu-smoke to check the script itself on a tiny model)")
    tmp = Path(tempfile.mkdtemp(prefix="bench_train."))
    if args.cpu_smoke:
        student, data = cpu_smoke_inputs(tmp)
        args.steps, args.max_length = min(args.steps, 30), min(args.max_length, 128)
    else:
        if not args.student or not args.data:
            sys.exit("bench_train: --student and --data are required")
        student, data = args.student, args.data
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    flops = peak_flops(device, args.peak_tflops) if torch.cuda.is_available() else None
    params = n_params(student)
    rows = []
    for name, fn in (("kdpipe train", run_kdpipe), ("TRL defaults", run_trl_defaults)):
        runs = [measure(fn, student, data, args) for _ in range(args.runs)]
        tps = statistics.median(r["tokens_per_s"] for r in runs)
        peak = statistics.median(r["peak_gib"] for r in runs) if runs[0]["peak_gib"] is not None else None
        mfu = 6 * params * tps / flops if flops else None
        rows.append({"config": name, "tokens_per_s": tps, "peak_gib": peak, "mfu": mfu,
                     "runs": [r["tokens_per_s"] for r in runs]})
    print(f"\ndevice: {device}; student: {student} ({params / 1e6:.1f} M parameters); {args.steps} steps, "
          f"batch {args.batch_size}, max length {args.max_length}, LoRA r {args.lora_r}; median of {args.runs}")
    print(f"| {'configuration':<14} | {'tokens/s':>10} | {'peak GiB':>8} | {'MFU':>6} |")
    print(f"|{'-' * 16}|{'-' * 12}|{'-' * 10}|{'-' * 8}|")
    for r in rows:
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        print(f"| {r['config']:<14} | {r['tokens_per_s']:>10.0f} | {peak:>8} | {mfu:>6} |")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "student": student, "params": params,
                                         "args": {k: str(v) for k, v in vars(args).items()}, "results": rows},
                                        indent=2))


if __name__ == "__main__":
    main()
