"""`kdpipe train` on two CPU processes (gloo) under the real launchers, against one process with the same
global batch: the two-process run is one run, written once, whose loss curve is the one-process curve.

The tiny student trains 6 LoRA steps; 2 processes x --batch-size 2 against 1 process x --batch-size 4.
LoRA dropout is off so that both runs draw nothing at random but the data order, which the launch does not
change (each process takes its half of every global batch). The launched runs are slow tests
(`make test-all`, or `pytest -m slow tests/test_multiproc.py`); the refusals and the configs are not.
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
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--main_process_port", "0"]
ACCELERATE_FLAGS = [*ACCELERATE, "--multi_gpu", "--num_machines", "1", "--mixed_precision", "no",
                    "--dynamo_backend", "no"]
ACCELERATE_DDP = [*ACCELERATE, "--config_file", str(REPO / "configs" / "ddp.yaml")]


# Slow: 29-50 s each on the shared 2-core machine (two interpreters importing torch, transformers and TRL).
@pytest.mark.slow
@pytest.mark.parametrize("launcher", [TORCHRUN, ACCELERATE_FLAGS, ACCELERATE_DDP],
                         ids=["torchrun", "accelerate", "accelerate-ddp-yaml"])
def test_two_processes_train_one_run_with_the_one_process_curve(data, tmp_path, launcher):
    student, sft = data
    run = launch(launcher, [sft, "-o", tmp_path / "two", "--student", student, "--batch-size", "2", *RUN])
    assert run.returncode == 0, run.stderr[-3000:]
    two = tmp_path / "two"
    config = json.loads((two / "train_config.json").read_text())
    assert config["resolved"]["world_size"] == 2 and config["resolved"]["global_batch_size"] == 4
    assert config["resolved"]["device"] == "cpu" and config["results"]["steps"] == STEPS
    assert config["resolved"]["distributed_type"] == "MULTI_CPU" and not config["notes"]
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
def test_fsdp_config_on_cpus_trains_as_data_parallel_and_says_so(data, tmp_path):
    """transformers trains on CPUs as DDP over gloo whatever the accelerate config asks: the run says it."""
    student, sft = data
    run = launch([*ACCELERATE, "--config_file", str(REPO / "configs" / "fsdp.yaml")],
                 [sft, "-o", tmp_path / "run", "--student", student, "--batch-size", "2", "--full", *RUN])
    assert run.returncode == 0, run.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert config["resolved"]["world_size"] == 2 and config["resolved"]["distributed_type"] == "MULTI_CPU"
    assert config["notes"] == ["the accelerate config asks for FSDP but this run is MULTI_CPU (no GPU): the "
                               "student was not sharded, each process held all of it"]
    assert "train: note: the accelerate config asks for FSDP" in run.stderr


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


# ------------------------------------------------------------------ configs/ and make train LAUNCH=


@pytest.mark.parametrize("name,kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed_zero3", "DEEPSPEED")])
def test_shipped_accelerate_configs_load(name, kind):
    """Each config loads with accelerate's own loader, and every key of its fsdp/deepspeed block is an
    option `accelerate launch` knows (a misspelt key would otherwise be ignored silently)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    config = load_config_from_file(str(REPO / "configs" / f"{name}.yaml"))
    assert config.distributed_type.value == kind and config.num_machines == 1
    assert config.mixed_precision == "no"  # kdpipe decides bf16 itself
    block = {**config.fsdp_config, **config.deepspeed_config}
    assert bool(block) == (kind != "MULTI_GPU")
    argv = [a for key, value in block.items() for a in (f"--{key}", str(value))]
    _, unknown = launch_command_parser().parse_known_args([*argv, "train.py"])
    assert unknown == []


def test_sharded_launches_refuse_what_they_cannot_run(data, tmp_path, monkeypatch):
    """What accelerate's launchers set for ZeRO-3 and FSDP: a teacher checkpoint under ZeRO-3, and --qlora under
    either, are refused before a model loads."""
    from kdpipe.errors import UsageError

    student, sft = data
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(UsageError, match="--teacher-model cannot run under DeepSpeed ZeRO-3"):
        run_train(sft, tmp_path / "run", TrainOptions(student=str(student), teacher_model=str(student)))
    with pytest.raises(UsageError, match="--qlora runs on one GPU or under data parallel"):
        run_train(sft, tmp_path / "run", TrainOptions(student=str(student), qlora=True))
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(UsageError, match="not under FSDP or DeepSpeed ZeRO-3"):
        run_train(sft, tmp_path / "run", TrainOptions(student=str(student), qlora=True))
    assert not (tmp_path / "run").exists()


def test_make_train_launch_prefixes_the_train_command(tmp_path):
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")

    def train_line(*variables: str) -> str:
        run = subprocess.run(["make", "-n", "-C", str(REPO), f"WORK={tmp_path}", "-o", ".venv/.installed",
                              f"KDPIPE={sys.executable} -m kdpipe", "train", *variables],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert run.returncode == 0, run.stderr
        return next(c for c in run.stdout.splitlines() if "kdpipe train " in c)

    launched = train_line("LAUNCH=accelerate launch --config_file configs/fsdp.yaml")
    assert " accelerate launch --config_file configs/fsdp.yaml -m kdpipe train " in launched
    assert launched.startswith(f'PATH="{REPO}/.venv/bin:')
    assert train_line().startswith(f"{sys.executable} -m kdpipe train ")


def test_make_loop_launches_every_rounds_training_too(tmp_path):
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    run = subprocess.run(["make", "-n", "-C", str(REPO), f"WORK={tmp_path}", "-o", ".venv/.installed",
                          f"KDPIPE={sys.executable} -m kdpipe", "loop", "ROUNDS=2", "LAUNCH=torchrun --nproc_per_node 2"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr
    trains = [c for c in run.stdout.splitlines() if "kdpipe train " in c]
    assert len(trains) == 3 and all(" torchrun --nproc_per_node 2 -m kdpipe train " in c for c in trains), trains
