"""The Makefile as a user drives it: settings that rerun what they change, a cache that is never
poisoned or lost, a dry run of the whole run, no demo teacher under a real model's name.

Every test runs the real targets with `make -C` into a WORK folder under tmp, with the
demo's loopback teacher (started by the Makefile) or a loopback started here and given as
BASE_URL, posing as a real endpoint (it does not name itself a loopback).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kdpipe.loopback import running

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "data" / "example" / "teacher.jsonl"
SMALL = ["NUM_NEW=12", "SAMPLES=2"]


def make(work: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # A small slice of the example questions keeps each teacher step to a second or two.
    src = work.parent / "questions.jsonl"
    if not src.exists():
        src.write_text("".join((REPO / "data" / "example" / "questions.jsonl").read_text().splitlines(True)[:40]))
    cmd = ["make", "-C", str(REPO), f"WORK={work}", f"KDPIPE={sys.executable} -m kdpipe",
           "-o", ".venv/.installed", f"SRC={src}", *SMALL, *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and run.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return run


def meta(work: Path, name: str) -> dict:
    return json.loads((work / f"{name}.meta.json").read_text())


def lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


@pytest.fixture
def work(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    return tmp_path / "work"


def test_a_real_model_name_without_base_url_is_refused(work):
    run = make(work, "label", "TEACHER_MODEL=gpt-4o-mini", check=False)
    assert run.returncode != 0
    assert "TEACHER_MODEL=gpt-4o-mini needs BASE_URL" in run.stderr
    assert not (work / "expanded.jsonl").exists() and not (work / "teacher.jsonl").exists()
    assert not (work / "teacher-cache.sqlite").exists()


def test_loopback_answers_are_never_served_for_a_real_endpoint(work):
    # The demo's loopback answers first, under the demo's model name.
    make(work, "label")
    first = meta(work, "teacher.jsonl")["counts"]["samples"]
    # The same model name behind an endpoint that is not a loopback (a stand-in for a vLLM
    # replica, scripted alike): the label step reruns and every request is sent.
    with running(SCRIPT, identify=False) as real:
        make(work, "label", f"BASE_URL={real.base_url}")
        assert meta(work, "teacher.jsonl")["usage"]["cached_samples"] == 0
        assert meta(work, "expanded.jsonl")["usage"]["cached_samples"] == 0
        assert real.stats["requests"] > 0
        label = meta(work, "teacher.jsonl")
        assert label["counts"]["samples"] == first and label["usage"]["requests"] >= lines(work / "questions.jsonl")
    # Another replica of that real endpoint (another port): its answers are shared, nothing sent.
    with running(SCRIPT, identify=False) as replica:
        make(work, "label", f"BASE_URL={replica.base_url}")
        assert replica.stats["requests"] == 0
        assert meta(work, "teacher.jsonl")["usage"]["cached_samples"] == first


def test_settings_rerun_the_stage_they_shape_and_nothing_before_it(work):
    make(work, "format")
    assert make(work, "-q", "format", check=False).returncode == 0
    before = {name: (work / name).stat().st_mtime_ns for name in ("seeds.jsonl", "expanded.jsonl")}
    old = meta(work, "teacher.jsonl")["counts"]["samples"]
    questions = lines(work / "questions.jsonl")

    # SAMPLES: from the label step on, paying only for the new samples.
    assert make(work, "-q", "format", "SAMPLES=3", check=False).returncode != 0
    make(work, "format", "SAMPLES=3")
    label = meta(work, "teacher.jsonl")
    # Only the third sample of each question was asked for: one request each.
    assert label["counts"]["samples"] == 3 * questions and label["usage"]["cached_samples"] == old
    assert label["usage"]["requests"] == questions
    assert {name: (work / name).stat().st_mtime_ns for name in before} == before
    assert make(work, "-q", "format", "SAMPLES=3", check=False).returncode == 0

    # STYLE: format alone.
    upstream = {name: (work / name).stat().st_mtime_ns
                for name in ("seeds.jsonl", "expanded.jsonl", "teacher.jsonl", "filtered.jsonl")}
    run = make(work, "format", "SAMPLES=3", "STYLE=cot")
    assert " generate " not in run.stdout and " filter " not in run.stdout and " format " in run.stdout
    assert {name: (work / name).stat().st_mtime_ns for name in upstream} == upstream
    assert meta(work, "sft.jsonl")["params"]["style"] == "cot"
    assert make(work, "-q", "format", "SAMPLES=3", "STYLE=cot", check=False).returncode == 0


def test_dry_run_sends_nothing_and_prints_one_estimate_for_the_whole_run(work):
    with running(SCRIPT, identify=False) as server:
        run = make(work, "dry-run", f"BASE_URL={server.base_url}", "TEACHER_MODEL=gpt-4o-mini")
        assert server.stats["requests"] == 0
    out = run.stdout
    assert out.count("dry run, nothing sent") == 1 and out.count("requests to send:") == 1
    seeds = lines(work / "seeds.jsonl")
    # Expansion's first round (8 questions a request), the seeds, and the 12 questions to come.
    assert f"requests to send: {2 + seeds + 12:,} ({2 + 2 * (seeds + 12):,} samples)" in out
    assert "cost: $" in out
    assert sorted(p.name for p in work.iterdir() if not p.name.startswith(".")) == [
        "eval.jsonl", "eval.jsonl.meta.json", "seeds.jsonl", "seeds.jsonl.meta.json"]
    assert not list(work.rglob("*.tmp")) and not (work / ".dry-run-questions.jsonl").exists()


@pytest.mark.slow
def test_dry_run_after_expansion_prices_the_questions_written(work):
    make(work, "expand")
    run = make(work, "dry-run")
    questions = lines(work / "seeds.jsonl") + lines(work / "expanded.jsonl")
    assert f"requests to send: {questions:,}" in run.stdout
    assert not (work / ".dry-run-questions.jsonl").exists()


def test_dry_run_in_generate_flags_is_refused(work):
    run = make(work, "label", "GENERATE_FLAGS=--dry-run", check=False)
    assert run.returncode != 0 and "make dry-run" in run.stderr
    assert not work.exists() or not list(work.rglob("*.tmp"))


def test_clean_keeps_the_cache_and_clean_cache_says_what_it_held(work):
    make(work, "label", "NUM_NEW=0")
    run = make(work, "clean")
    assert "teacher cache" in run.stdout
    # The cache and its spending ledger (what was paid stays counted against MAX_USD).
    assert sorted(p.name for p in work.iterdir()) == ["teacher-cache.sqlite", "teacher-cache.sqlite.spend.jsonl"]
    make(work, "label", "NUM_NEW=0")
    assert meta(work, "teacher.jsonl")["usage"]["requests"] == 0
    held = meta(work, "teacher.jsonl")["counts"]["samples"]
    run = make(work, "clean-cache")
    assert f"{held} cached answers" in run.stdout and " MB" in run.stdout
    assert not (work / "teacher-cache.sqlite").exists()


def test_a_real_student_gets_no_demo_tuning(work):
    real = make(work, "-n", "eval", "STUDENT=Qwen/Qwen2.5-0.5B-Instruct").stdout
    train = next(line for line in real.splitlines() if " train " in line)
    assert "--max-steps" not in train and "--learning-rate" not in train and "--max-length" not in train
    assert "tiny-student" not in real and "--max-new-tokens" not in real
    demo = make(work, "-n", "eval").stdout
    assert "--max-steps 800" in demo and "--learning-rate 3e-3" in demo and "--max-new-tokens 16" in demo


def test_epochs_in_train_flags_trains_by_epochs(work):
    train = next(line for line in make(work, "-n", "train", "TRAIN_FLAGS=--epochs 2").stdout.splitlines()
                 if " train " in line)
    assert "--epochs 2" in train and "--max-steps" not in train
    run = make(work, "-n", "train", "MAX_STEPS=50", "TRAIN_FLAGS=--epochs 2", check=False)
    assert run.returncode != 0 and "MAX_STEPS=50 and --epochs in TRAIN_FLAGS" in run.stderr


@pytest.mark.slow
def test_clean_then_eval_pays_nothing_and_the_demo_prints_one_scorecard(work):
    tiny = ["MAX_STEPS=2", "TRAIN_FLAGS=--batch-size 8 --max-length 128 --eval-every 2 --save-every 2",
            "EVAL_FLAGS=--max-new-tokens 8 --limit 6"]
    first = make(work, "demo", *tiny)
    assert first.stdout.count("| role | model |") == 1
    make(work, "clean")
    again = make(work, "demo", *tiny)
    assert again.stdout.count("| role | model |") == 1
    for name in ("expanded.jsonl", "teacher.jsonl"):
        assert meta(work, name)["usage"]["requests"] == 0, name
    # The teacher's rate is not measured on answers the cache returned.
    teacher = [m for m in json.loads((work / "eval.json").read_text())["models"] if m["role"] == "teacher"]
    assert teacher and teacher[0]["examples_per_s"] == 0.0
    up_to_date = make(work, "demo", *tiny)
    assert up_to_date.stdout.count("| role | model |") == 1 and "kdpipe eval" not in up_to_date.stdout


def test_logprobs_and_style_kd_carry_the_teachers_top_k_into_the_training_rows(work):
    make(work, "format", "NUM_NEW=0", "LOGPROBS=5", "STYLE=kd")
    rows = [json.loads(x) for x in (work / "sft.jsonl").read_text().splitlines()]
    assert rows and all(len(r["teacher"]["top_tokens"][0]) == 5 for r in rows)
    assert all("".join(r["teacher"]["tokens"]) == r["completion"][0]["content"] for r in rows)
    local = make(work, "-n", "format", "NUM_NEW=0", "LOGPROBS=5", "STYLE=kd", f"TEACHER_DIR={work}/teacher").stdout
    assert f"--model {work}/teacher" in local and "--logprobs 5" in local


def test_style_socratic_and_icl_shots_run_the_methods_through_the_pipeline(work):
    """STYLE=socratic labels with the Socratic prompt and writes decompositions; ICL_SHOTS=K puts K
    demonstrations into every training prompt; the demo student gets room for both."""
    make(work, "format", "NUM_NEW=0", "STYLE=socratic", "ICL_SHOTS=2")
    teacher = [json.loads(x) for x in (work / "teacher.jsonl").read_text().splitlines()]
    assert {r["provenance"]["teacher"]["prompt"] for r in teacher} == {"socratic.txt"}
    rows = [json.loads(x) for x in (work / "sft.jsonl").read_text().splitlines()]
    assert rows and {r["task"] for r in rows} == {"socratic"} and all(len(r["demos"]) == 2 for r in rows)
    assert all(r["completion"][0]["content"].startswith("Q1: ") for r in rows)
    plan = make(work, "-n", "eval", "NUM_NEW=0", "STYLE=socratic", "ICL_SHOTS=2").stdout
    assert "--max-length 512" in plan and "--max-new-tokens 96" in plan and "--teacher-prompt prompts/socratic.txt" in plan
