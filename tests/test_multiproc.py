"""`kdpipe train` on two CPU processes (gloo) under the real launchers, against one process with the same
global batch: the two-process run is one run, written once, whose loss curve is the one-process curve.

The tiny student trains 6 LoRA steps; 2 processes x --batch-size 2 against 1 process x --batch-size 4.
LoRA dropout is off so that both runs draw nothing at random but the data order, which the launch does not
change (each process takes its half of every global batch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import support_tiny as st  # noqa: E402

from kdpipe.train import TrainOptions, run_train  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
STEPS = 6
# The two curves agree to float rounding (measured: 1e-6 at most); one process training alone on its half
# of each batch (--batch-size 2) is another curve, up to 0.25 away at a step (measured).
TOLERANCE = 1e-3
RUN = ["--max-steps", str(STEPS), "--log-every", "1", "--lora-dropout", "0", "--max-length", "96",
       "--eval-every", "50", "--save-every", "3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("multiproc")
    return st.build_student(d / "student"), st.write_sft(d / "sft.jsonl", "label")


def launch(launcher: list[str], args: list, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*launcher, "-m", "kdpipe", "train", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def one_process(student: Path, sft: Path, out: Path, **kw) -> list[float]:
    run_train(sft, out, TrainOptions(student=str(student), max_steps=STEPS, batch_size=4, log_every=1,
                                     lora_dropout=0.0, max_length=96, eval_every=50, save_every=3, **kw))
    return losses(out)


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--main_process_port", "0", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


@pytest.mark.parametrize("launcher", [TORCHRUN, pytest.param(ACCELERATE, marks=pytest.mark.slow)],
                         ids=["torchrun", "accelerate"])
def test_two_processes_train_one_run_with_the_one_process_curve(data, tmp_path, launcher):
    student, sft = data
    run = launch(launcher, [sft, "-o", tmp_path / "two", "--student", student, "--batch-size", "2", *RUN])
    assert run.returncode == 0, run.stderr[-3000:]
    two = tmp_path / "two"
    config = json.loads((two / "train_config.json").read_text())
    assert config["resolved"]["world_size"] == 2 and config["resolved"]["global_batch_size"] == 4
    assert config["resolved"]["device"] == "cpu" and config["results"]["steps"] == STEPS
    # Both ranks trained to the end: each saved its random state into the last checkpoint.
    last = two / "checkpoints" / f"checkpoint-{STEPS}"
    assert sorted(p.name for p in last.glob("rng_state_*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]
    # Written once: one metrics line per step (two writers would append two), one report on stderr.
    assert len(losses(two)) == STEPS
    assert run.stderr.count(f"train: step {STEPS}/{STEPS} loss") == 1
    assert run.stderr.count("train: 40 train rows") == 1 and run.stderr.count("; run in ") == 1
    reference = one_process(student, sft, tmp_path / "one")
    assert max(abs(a - b) for a, b in zip(losses(two), reference)) < TOLERANCE, (losses(two), reference)
    assert json.loads((tmp_path / "one" / "train_config.json").read_text())["resolved"]["world_size"] == 1


def test_accelerate_cpu_with_several_processes_is_refused(data, tmp_path, monkeypatch):
    """What `accelerate launch --cpu --num_processes 2` hands its one process (the environment of
    accelerate 1.15's simple launcher) is refused before a model loads; one process asked for is not."""
    from kdpipe.errors import UsageError

    student, sft = data
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(UsageError, match="starts one process, not N"):
        run_train(sft, tmp_path / "run", TrainOptions(student=str(student), max_steps=1))
    assert not (tmp_path / "run").exists()
    monkeypatch.delenv("MASTER_ADDR")  # `accelerate launch --cpu` alone: one process, as asked
    assert run_train(sft, tmp_path / "run", TrainOptions(student=str(student), max_steps=1)).steps == 1


@pytest.mark.slow
def test_accelerate_cpu_with_several_processes_is_refused_in_one_line(data, tmp_path):
    """The same through the real `accelerate launch`: one line on stderr, nothing written."""
    student, sft = data
    run = launch([sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--cpu", "--num_processes", "2",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
                 [sft, "-o", tmp_path / "run", "--student", student, *RUN], timeout=120)
    assert run.returncode != 0 and not (tmp_path / "run").exists()
    errors = [line for line in run.stderr.splitlines() if line.startswith("kdpipe: error:")]
    assert len(errors) == 1 and "starts one process, not N" in errors[0], run.stderr[-2000:]
    assert "accelerate launch --multi_gpu --num_processes N" in errors[0] and "torchrun" in errors[0]


@pytest.mark.slow
def test_white_box_distillation_on_two_processes(data, tmp_path):
    """--teacher-model: each process loads its own teacher and scores its own half of the batch."""
    from kdpipe.tiny_student import TinyOptions, build_tiny_student

    teacher, sft = data  # the tiny model itself, untrained, is teacher enough: it shares the tokenizer
    small = build_tiny_student(tmp_path / "small", st.corpus_texts(), TinyOptions(vocab_size=400, hidden_size=32,
                                                                                   seed=1))
    args = ["--student", small, "--teacher-model", teacher, "--kd-alpha", "0.2"]
    run = launch(TORCHRUN, [sft, "-o", tmp_path / "two", "--batch-size", "2", *args, *RUN])
    assert run.returncode == 0, run.stderr[-3000:]
    config = json.loads((tmp_path / "two" / "train_config.json").read_text())
    assert config["resolved"]["world_size"] == 2 and config["teacher"]["method"] == "offline"
    reference = one_process(small, sft, tmp_path / "one", teacher_model=str(teacher), kd_alpha=0.2)
    assert len(losses(tmp_path / "two")) == STEPS
    assert max(abs(a - b) for a, b in zip(losses(tmp_path / "two"), reference)) < TOLERANCE
