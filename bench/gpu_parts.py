"""The parts of bench/gpu_check.sh, one process each: `list`, `run PART`, `report`, `plan`.

Every part writes one JSON file (status ok / skipped / failed, its rows, wall and
CPU seconds) even when it fails; a part killed by its time limit writes none, and
`report` says so from the exit status the shell script recorded. `--dry-run`
runs every part on the tiny shape with a few steps on whatever device there is:
it checks the script in seconds and measures nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

BUDGET_S = 480  # the whole GPU run, wheels and report included: 8 minutes on one H100-class GPU
WHEELS = HERE / "gpu-wheels.txt"


@dataclass
class Part:
    name: str
    kind: str  # check | lora | full | dss | qlora
    shape: str = "qwen2.5-0.5b"
    steps: int = 30
    limit_s: int = 60  # on the GPU; the dry run allows the same


PARTS = [
    Part("check", "check", limit_s=45),
    Part("lora-0.5b", "lora", steps=40, limit_s=90),
    Part("lora-1.5b", "lora", shape="qwen2.5-1.5b", steps=40, limit_s=110),
    Part("full-0.5b", "full", limit_s=70),
    Part("dss-0.5b", "dss", limit_s=80),
    Part("qlora-0.5b", "qlora", limit_s=60),
]
NOT_YET = ("sparse top-k KD loss and white-box offline KD step time: not in kdpipe yet "
           "(issue 20 runs them once they exist)")


def settings(part: Part, dry: bool) -> SimpleNamespace:
    """Shape and sizes of one part: real shapes on the GPU, the tiny one in the dry run."""
    if dry:
        return SimpleNamespace(shape="tiny", steps=6, batch_size=4, max_length=256, lora_r=16, log_every=2,
                               runs=1, peak_tflops=None, records=32, rationale_words=20)
    return SimpleNamespace(shape=part.shape, steps=part.steps, batch_size=8, max_length=1024, lora_r=16,
                           log_every=5, runs=1, peak_tflops=None, records=max(64, part.steps * 8),
                           rationale_words=300)


def wheel_pins() -> dict[str, str]:
    pins = {}
    for line in WHEELS.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    return pins


def check(dry: bool) -> dict:
    """Torch and CUDA usable for bf16 training, the carried packages the ones imported, their needs met."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    # problems stop the run; warnings (a requirement's version unmet in metadata) are reported only:
    # if one matters, the imports below fail and say so.
    problems, warnings, info = [], [], {"python": sys.version.split()[0]}
    import torch

    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda=torch.cuda.is_available())
    if torch.cuda.is_available():
        info.update(device=torch.cuda.get_device_name(), bf16=torch.cuda.is_bf16_supported(),
                    capability=".".join(map(str, torch.cuda.get_device_capability())))
        a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
        ref = (a[:64].float() @ a[:, :64].float())
        if not torch.allclose((a @ a)[:64, :64].float(), ref, rtol=0.05, atol=1.0):
            problems.append("a bf16 matmul on the GPU disagrees with fp32")
        a @ a  # cuBLAS set-up, outside the timing
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()
        info["matmul_tflops"] = round(20 * 2 * 4096**3 / (time.perf_counter() - started) / 1e12, 1)
        if not info["bf16"]:
            warnings.append(f"{info['device']} has no bf16: kdpipe train runs in fp32 there")
    else:
        info["device"] = "cpu"
        if not dry:
            problems.append(f"torch {torch.__version__} sees no CUDA GPU (CUDA build: {torch.version.cuda})")
    site = os.environ.get("KDPIPE_GPU_SITE")
    packages = {}
    for name, pin in wheel_pins().items():
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            problems.append(f"{name} is not installed")
            continue
        where = str(dist.locate_file(""))
        packages[name] = {"version": dist.version, "from": where}
        if dist.version != pin:  # an error when the wheels were installed, else what this machine has
            (problems if site else warnings).append(f"{name} {dist.version} is imported, not the pinned {pin}")
        if site and not where.startswith(site):
            problems.append(f"{name} comes from {where}, not from the carried wheels in {site}")
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                have = md.version(req.name)
            except md.PackageNotFoundError:
                warnings.append(f"{name} needs {req}, which is missing")
                continue
            if not req.specifier.contains(have, prereleases=True):
                warnings.append(f"{name} needs {req}; found {req.name} {have}")
    info["packages"] = packages
    for module in ("transformers", "peft", "datasets", "trl", "kdpipe.train"):
        try:
            __import__(module)
        except Exception as e:  # any import failure is the finding
            problems.append(f"import {module}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    info["warnings"] = warnings
    return {"status": "failed" if problems else "ok", "reason": "; ".join(problems + warnings) or None,
            "info": info}


def train_part(part: Part, dry: bool, tmp: Path) -> dict:
    import bench_train as bt
    import student_shapes as ss

    if part.kind == "qlora":
        import importlib.util

        import torch

        if not torch.cuda.is_available():
            return {"status": "skipped", "reason": "QLoRA needs CUDA (bitsandbytes 4-bit weights)"}
        if importlib.util.find_spec("bitsandbytes") is None:
            return {"status": "skipped", "reason": "bitsandbytes is not importable here (its CUDA wheel is not "
                                                   "among the carried ones)"}
    s = settings(part, dry)
    params = ss.n_params(s.shape)
    _, flops = bt.device_flops()
    style = "dss" if part.kind == "dss" else "cot"
    student, sft = bt.synthetic_student(s.shape, tmp, s.records, s.rationale_words, style)
    student = str(student)
    out = {"shape": s.shape, "params": params, "steps": s.steps, "batch_size": s.batch_size,
           "mean_row_tokens": round(ss.mean_row_tokens(Path(student), sft), 1)}
    if part.kind == "lora":
        runs = [("kdpipe train", bt.run_kdpipe, sft, {}), ("TRL defaults", bt.run_trl_defaults, sft, {})]
    elif part.kind == "dss":
        plain = ss.without_rationale_task(sft, tmp / "sft-plain.jsonl")
        runs = [("DSS weighted loss", bt.run_kdpipe, sft, {}), ("plain loss", bt.run_kdpipe, plain, {})]
    else:
        runs = [(f"kdpipe {part.kind}", bt.run_kdpipe, sft, {part.kind: True})]
    rows = []
    for config, fn, data, option in runs:
        try:  # one configuration failing (out of memory, say) keeps the others' numbers
            rows.append(bt.summarise(config, [bt.measure(fn, student, data, s, **option)], params, flops))
        except Exception as e:
            traceback.print_exc()
            rows.append({"config": config, "error": one_line(e)})
    errors = [f"{r['config']}: {r['error']}" for r in rows if "error" in r]
    return {"status": "failed" if errors else "ok", "reason": "; ".join(errors) or None, **out, "rows": rows}


def one_line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def run(name: str, out: Path, dry: bool) -> int:
    part = next((p for p in PARTS if p.name == name), None)
    if part is None:
        sys.exit(f"unknown part {name!r}; parts: {', '.join(p.name for p in PARTS)}")
    started, cpu = time.time(), time.process_time()
    try:
        with tempfile.TemporaryDirectory(prefix=f"gpu-{name}.") as tmp:
            result = check(dry) if part.kind == "check" else train_part(part, dry, Path(tmp))
    except Exception as e:  # the report must say why, whatever broke
        traceback.print_exc()
        result = {"status": "failed", "reason": one_line(e)}
    result = {"part": name, **result, "seconds": round(time.time() - started, 1),
              "cpu_seconds": round(time.process_time() - cpu, 1)}
    out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"gpu_check: {name}: {result['status']}" + (f" ({result['reason']})" if result.get("reason") else ""))
    return 0 if result["status"] != "failed" else 1


def _last_error(log: Path) -> str:
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    lines = [x for x in text.splitlines() if x.strip()]
    return lines[-1].strip()[:300] if lines else "no output"


def report(work: Path, out_dir: Path, dry: bool) -> None:
    """gpu-check.json and gpu-check.md from the parts' files and the exit statuses in work/status.txt."""
    statuses = {}
    status_file = work / "status.txt"
    for line in status_file.read_text(encoding="utf-8").splitlines() if status_file.is_file() else []:
        name, rc, seconds, limit = line.split()
        statuses[name] = (int(rc), float(seconds), int(limit))
    parts = []
    for name in ["install"] + [p.name for p in PARTS]:
        path = work / f"{name}.json"
        if path.is_file():
            parts.append(json.loads(path.read_text(encoding="utf-8")))
        elif name in statuses:
            rc, seconds, limit = statuses[name]
            why = (f"timed out after {limit} s" if rc in (124, 137) else
                   f"exited with status {rc}: {_last_error(work / f'{name}.log')}")
            parts.append({"part": name, "status": "failed", "reason": why, "seconds": seconds})
    info = next((p.get("info", {}) for p in parts if p["part"] == "check"), {})
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "dry_run": dry,
              "device": info.get("device", "cpu" if dry else "unknown (no check result)"), "info": info,
              "parts": parts, "not_measured": NOT_YET,
              "seconds": round(sum(p.get("seconds", 0) for p in parts), 1)}
    (out_dir / "gpu-check.json").write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    (out_dir / "gpu-check.md").write_text(markdown(result), encoding="utf-8")


def markdown(result: dict) -> str:
    info = result["info"]
    dry = ", dry run on tiny shapes: not a measurement" if result["dry_run"] else ""
    head = (f"GPU check {result['date']}: {result['device']}, torch {info.get('torch')} "
            f"(CUDA {info.get('torch_cuda')}){dry}; {result['seconds']:.0f} s in all\n\n")
    lines = ["| part | shape | configuration | tokens/s | s/step | peak GiB | MFU | status |",
             "|---|---|---|---|---|---|---|---|"]
    for p in result["parts"]:
        status = p["status"] + (f": {p['reason']}" if p.get("reason") else "")
        rows = p.get("rows") or [None]
        for r in rows:
            if r is None:
                lines.append(f"| {p['part']} | {p.get('shape', '-')} | - | - | - | - | - | {status} |")
                continue
            peak = "-" if r.get("peak_gib") is None else f"{r['peak_gib']:.2f}"
            mfu = "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%"
            if "error" in r:
                lines.append(f"| {p['part']} | {p.get('shape')} | {r['config']} | - | - | - | - | "
                             f"failed: {r['error']} |")
                continue
            lines.append(f"| {p['part']} | {p.get('shape')} | {r['config']} | {r['tokens_per_s']:.0f} | "
                         f"{r['step_s']:.3f} | {peak} | {mfu} | ok |")
    return head + "\n".join(lines) + f"\n\nNot measured: {result['not_measured']}.\n"


def plan(dry_run_json: Path | None, mfus: list[float], peak_tflops: float) -> str:
    """The sizing table: 6·N·tokens of each part's GPU shapes, its time at each MFU, and the tiny run's seconds."""
    import student_shapes as ss

    measured = {}
    if dry_run_json:
        measured = {p["part"]: p for p in json.loads(Path(dry_run_json).read_text(encoding="utf-8"))["parts"]}
    at = " | ".join(f"s at {100 * m:.0f}% MFU" for m in mfus)
    lines = [f"| part | shape | N | runs × steps × batch × tokens/row | 6·N·tokens | {at} | "
             "tiny run s (CPU s) | limit s |",
             "|---|---|---|---|---|---|" + "---|" * len(mfus) + "---|"]
    row_tokens: dict[str, float] = {}
    total = 0
    for part in PARTS:
        m = measured.get(part.name, {})
        tiny = f"{m['seconds']:.0f} ({m.get('cpu_seconds', 0):.0f})" if m else "-"
        total += part.limit_s
        if part.kind == "check":
            lines.append(f"| {part.name} | - | - | - | - | " + "- | " * len(mfus) + f"{tiny} | {part.limit_s} |")
            continue
        s = settings(part, dry=False)
        style = "dss" if part.kind == "dss" else "cot"
        if style not in row_tokens:
            with tempfile.TemporaryDirectory(prefix="gpu-plan.") as tmp:
                recs = ss.synthetic_records(64, rationale_words=s.rationale_words)
                tok = ss.tokenizer_dir(Path(tmp) / "tok", ss.corpus(recs))
                row_tokens[style] = ss.mean_row_tokens(tok, ss.write_sft(Path(tmp) / "sft.jsonl", recs, style))
        runs = 2 if part.kind in ("lora", "dss") else 1
        n = ss.n_params(s.shape)
        flop = 6 * n * runs * s.steps * s.batch_size * row_tokens[style]
        times = " | ".join(f"{flop / (m * peak_tflops * 1e12):.1f}" for m in mfus)
        lines.append(f"| {part.name} | {s.shape} | {n / 1e9:.2f} B | {runs} × {s.steps} × {s.batch_size} × "
                     f"{row_tokens[style]:.0f} ({style}) | {flop:.2e} | {times} | {tiny} | {part.limit_s} |")
    return "\n".join(lines) + f"\n\nLimits of the parts: {total} s; no part starts past {BUDGET_S} s in all.\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="'NAME LIMIT_S' per part, in order")
    r = sub.add_parser("run")
    r.add_argument("part")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--dry-run", action="store_true")
    rep = sub.add_parser("report")
    rep.add_argument("work", type=Path)
    rep.add_argument("out_dir", type=Path)
    rep.add_argument("--dry-run", action="store_true")
    pl = sub.add_parser("plan")
    pl.add_argument("--dry-run-json", type=Path, help="a dry run's gpu-check.json, for the measured seconds")
    pl.add_argument("--mfu", type=float, nargs="+", default=[0.3, 0.1])
    pl.add_argument("--peak-tflops", type=float, default=989.0)
    args = p.parse_args()
    if args.cmd == "list":
        print("\n".join(f"{x.name} {x.limit_s}" for x in PARTS))
    elif args.cmd == "run":
        sys.exit(run(args.part, args.out, args.dry_run))
    elif args.cmd == "report":
        report(args.work, args.out_dir, args.dry_run)
    else:
        print(plan(args.dry_run_json, args.mfu, args.peak_tflops))


if __name__ == "__main__":
    main()
