"""The Makefile pipeline, end to end, at demo shape but small sizes.

This runs the real targets a user runs (`make eval`), with the real loopback
teacher started by the Makefile, so the demo cannot rot unnoticed.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def make(work: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["make", "-C", str(REPO), f"WORK={work}", f"KDPIPE={sys.executable} -m kdpipe",
           # The suite already runs inside an installed environment.
           "-o", ".venv/.installed",
           # A slice of the bundled questions keeps the teacher and filter steps short.
           f"SRC={work.parent / 'questions.jsonl'}",
           "NUM_NEW=12", "MAX_STEPS=4", "TRAIN_FLAGS=--batch-size 8 --max-length 128 --eval-every 2 --save-every 4",
           "EVAL_FLAGS=--max-new-tokens 8 --limit 10", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and run.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return run


@pytest.fixture
def work(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    lines = (REPO / "data" / "example" / "questions.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "questions.jsonl").write_text("".join(lines[:200]))
    return tmp_path / "work"


def test_demo_pipeline_runs_end_to_end_and_reruns_nothing(work):
    make(work, "eval")
    for name in ("seeds.jsonl", "eval.jsonl", "expanded.jsonl", "teacher.jsonl", "filtered.jsonl",
                 "rejected.jsonl", "filter-report.json", "sft.jsonl", "eval.json", "eval.md"):
        assert (work / name).is_file(), name
    for name in ("adapter_config.json", "prompt_format.json", "train_config.json", "metrics.jsonl", "loss.png"):
        assert (work / "student" / name).is_file(), name
    scorecard = json.loads((work / "eval.json").read_text())
    assert "student" in json.dumps(scorecard) and "baseline" in json.dumps(scorecard)

    # Nothing changed: every target is up to date.
    assert make(work, "-q", "eval", check=False).returncode == 0

    # A touched prompt (here a fresh copy of the same prompt) reruns from generate on, and the teacher cache answers every request.
    prompt = work.parent / "numeric.txt"
    shutil.copy(REPO / "prompts" / "numeric.txt", prompt)
    os.utime(prompt)
    assert make(work, "-q", "eval", f"LABEL_PROMPT={prompt}", check=False).returncode != 0
    make(work, "eval", f"LABEL_PROMPT={prompt}")
    meta = json.loads((work / "teacher.jsonl.meta.json").read_text())
    assert meta["counts"]["cached"] == meta["counts"]["samples"] > 0
    assert meta["usage"]["requests"] == 0


@pytest.mark.slow
def test_demo_student_learns(tmp_path):
    """`make demo` at its own settings: the trained student clearly beats its untrained self on held-out questions."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    work = tmp_path / "work"
    cmd = ["make", "-C", str(REPO), f"WORK={work}", f"KDPIPE={sys.executable} -m kdpipe", "-o", ".venv/.installed",
           "demo"]
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    scores = {m["role"]: m for m in json.loads((work / "eval.json").read_text())["models"]}
    student, baseline = scores["student"], scores["baseline"]
    assert student["n"] == baseline["n"] >= 200
    assert student["accuracy"] >= 0.40, run.stdout[-2000:]
    assert student["accuracy"] - baseline["accuracy"] >= 0.30
    assert student["ci95"][0] > baseline["ci95"][1]
    assert "| student |" in run.stdout
