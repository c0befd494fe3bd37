"""bench/gpu_check.sh, the offline GPU check of `kdpipe train`: its CPU dry run, limits and wheel list.

The dry run is the GPU script itself on the tiny shape (a few training steps
per part, each part in its own process under its own time limit), so the
script cannot rot between visits to a GPU.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "bench"))

import gpu_parts  # noqa: E402
import student_shapes  # noqa: E402


def run_check(out: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args, str(out)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def parts(out: Path) -> dict[str, dict]:
    return {p["part"]: p for p in json.loads((out / "gpu-check.json").read_text())["parts"]}


def test_cpu_dry_run_runs_every_part_and_writes_the_report(tmp_path):
    out = tmp_path / "out"
    proc = run_check(out, "--cpu-dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = parts(out)
    assert list(got) == ["install"] + [p.name for p in gpu_parts.PARTS]
    assert got["install"]["status"] == "skipped"
    assert got["check"]["status"] == "ok", got["check"]
    assert got["check"]["info"]["packages"]["trl"]["version"] == md.version("trl")
    for name in ("lora-0.5b", "lora-1.5b", "full-0.5b", "dss-0.5b"):
        part = got[name]
        assert part["status"] == "ok", part
        assert part["shape"] == "tiny" and part["mean_row_tokens"] > 20
        assert all(r["tokens_per_s"] > 0 and r["step_s"] > 0 for r in part["rows"])
    assert [r["config"] for r in got["lora-0.5b"]["rows"]] == ["kdpipe train", "TRL defaults"]
    assert [r["config"] for r in got["dss-0.5b"]["rows"]] == ["DSS weighted loss", "plain loss"]
    assert got["qlora-0.5b"]["status"] == "skipped" and "CUDA" in got["qlora-0.5b"]["reason"]
    table = (out / "gpu-check.md").read_text()
    assert "dry run on tiny shapes: not a measurement" in table
    assert "| dss-0.5b | tiny | plain loss |" in table and "Not measured: sparse top-k KD" in table
    assert "==== full-0.5b (exit 0" in (out / "gpu-check.log").read_text()


def test_a_part_past_its_limit_is_reported_and_the_rest_skipped(tmp_path):
    out = tmp_path / "out"
    proc = run_check(out, "--cpu-dry-run", GPU_CHECK_LIMIT_S="1")
    assert proc.returncode == 1
    got = parts(out)
    assert got["check"] == {**got["check"], "status": "failed", "reason": "timed out after 1 s"}
    assert {got[p.name]["status"] for p in gpu_parts.PARTS[1:]} == {"skipped"}
    assert got["lora-0.5b"]["reason"] == "the environment check failed"
    assert "| check | - | - | - | - | - | - | failed: timed out after 1 s |" in (out / "gpu-check.md").read_text()


def test_a_crashed_part_is_reported_with_its_last_line(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir(), out.mkdir()
    (work / "status.txt").write_text("check 0 3 45\nlora-0.5b 139 12 90\n")
    (work / "check.json").write_text(json.dumps({"part": "check", "status": "ok", "info": {"torch": "2.x"}}))
    (work / "lora-0.5b.log").write_text("loading\nSegmentation fault (core dumped)\n")
    # a part where one configuration failed keeps the other's numbers
    (work / "full-0.5b.json").write_text(json.dumps({
        "part": "full-0.5b", "status": "failed", "reason": "kdpipe full: KdpipeError: out of memory", "shape": "s",
        "rows": [{"config": "a", "tokens_per_s": 1000.0, "step_s": 0.5, "peak_gib": 9.0, "mfu": 0.25},
                 {"config": "kdpipe full", "error": "KdpipeError: out of memory"}]}))
    gpu_parts.report(work, out, dry=False)
    lora = parts(out)["lora-0.5b"]
    assert lora["status"] == "failed"
    assert lora["reason"] == "exited with status 139: Segmentation fault (core dumped)"
    table = (out / "gpu-check.md").read_text()
    assert "| full-0.5b | s | a | 1000 | 0.500 | 9.00 | 25.0% | ok |" in table
    assert "| full-0.5b | s | kdpipe full | - | - | - | - | failed: KdpipeError: out of memory |" in table


def test_shapes_are_the_published_architectures():
    # Parameter counts of the published checkpoints (tied embeddings counted once).
    assert student_shapes.n_params("qwen2.5-0.5b") == 494_032_768
    assert student_shapes.n_params("qwen2.5-1.5b") == 1_543_714_304
    assert student_shapes.n_params("llama-3.2-1b") == 1_235_814_400
    with pytest.raises(SystemExit, match="unknown student shape 'qwen9'; known: .*qwen2.5-0.5b"):
        student_shapes.load_shape("qwen9")


def test_wheel_list_pins_the_tested_versions():
    pins = gpu_parts.wheel_pins()
    constraints = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                       if "==" in line and not line.startswith("#"))
    assert {"trl", "datasets", "transformers", "peft"} <= set(pins)
    for name, version in pins.items():
        # constraints.txt's pin where it has one; else the version installed beside those pins
        assert version == constraints.get(name, md.version(name)), name
        assert "torch" not in name  # never carried: the GPU machine's CUDA build stays
