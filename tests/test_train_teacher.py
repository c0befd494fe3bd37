"""`kdpipe train --teacher-model`: white-box distillation from a tiny teacher trained here, on the CPU.

The teacher is the tiny model trained (full fine-tuning) on the toy colour task; the student is a narrower
model built from the same corpus, so it has the very same tokenizer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import support_tiny as st  # noqa: E402

from kdpipe.errors import KdpipeError, UsageError  # noqa: E402
from kdpipe.train import TrainOptions, build_trainer, prepare_data, run_train  # noqa: E402

FAST = dict(batch_size=8, max_length=96, learning_rate=3e-3, log_every=2, eval_every=50)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("teacher")
    base = st.build_student(d / "base")
    sft = st.write_sft(d / "sft.jsonl", "label")
    run_train(sft, d / "run", TrainOptions(student=str(base), full=True, max_steps=12,
                                           **dict(FAST, learning_rate=1e-3)))
    return d / "run"


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    from kdpipe.tiny_student import TinyOptions, build_tiny_student

    out = tmp_path_factory.mktemp("student") / "student"
    return build_tiny_student(out, st.corpus_texts(), TinyOptions(vocab_size=400, hidden_size=32, seed=1))


def _opts(student, teacher, **kw) -> TrainOptions:
    return TrainOptions(student=str(student), teacher_model=str(teacher), **{**FAST, "max_steps": 4, **kw})


# ------------------------------------------------------------------ the loss, by hand


def _trainer(student, teacher, tmp_path, style="label", **kw):
    import torch

    torch.manual_seed(0)
    sft = st.write_sft(tmp_path / "sft.jsonl", style, repeats=2)
    opts = _opts(student, teacher, **kw)
    prep = prepare_data(sft, tmp_path / "run", opts)
    trainer = build_trainer(prep, tmp_path / "run", opts, [])[0]
    return trainer, next(iter(trainer.get_train_dataloader()))


def _by_hand(trainer, batch, alpha, tau, divergence, beta=0.5) -> float:
    """The mean over completion tokens of α·CE + (1−α)·τ²·D, one token at a time, from both models' logits."""
    import torch

    with torch.no_grad():
        s = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
        t = trainer.teacher_model(input_ids=batch["input_ids"],
                                  attention_mask=batch["attention_mask"]).logits.double()
    total, count = 0.0, 0
    for row in range(batch["input_ids"].shape[0]):
        for pos in range(1, batch["labels"].shape[1]):
            target = int(batch["labels"][row, pos])
            if target == -100:
                continue
            ps, pt = torch.softmax(s[row, pos - 1] / tau, -1), torch.softmax(t[row, pos - 1] / tau, -1)
            kl = lambda p, q: float((p * (p.log() - q.log())).sum())  # noqa: E731
            if divergence == "forward":
                d = kl(pt, ps)
            elif divergence == "reverse":
                d = kl(ps, pt)
            else:
                m = beta * pt + (1 - beta) * ps
                d = beta * kl(pt, m) + (1 - beta) * kl(ps, m)
            ce = -float(torch.log_softmax(s[row, pos - 1], -1)[target])
            total += alpha * ce + (1 - alpha) * tau ** 2 * d
            count += 1
    assert count > batch["input_ids"].shape[0]
    return total / count


@pytest.mark.parametrize("divergence", ["forward", "reverse", "jsd"])
def test_offline_loss_equals_hand_computation(student, teacher, tmp_path, divergence):
    import torch

    jsd = {"beta": 0.3} if divergence == "jsd" else {}
    trainer, batch = _trainer(student, teacher, tmp_path, divergence=divergence, kd_alpha=0.3, kd_temperature=2.0,
                              **jsd)
    trainer.model.eval()
    with torch.no_grad():
        got = float(trainer.compute_loss(trainer.model, dict(batch)))
    assert got == pytest.approx(_by_hand(trainer, batch, 0.3, 2.0, divergence, beta=0.3), rel=1e-4)


def test_beta_0_and_1_are_forward_and_reverse_kl():
    import torch

    from kdpipe.train.trainers.teacher_logits import token_losses

    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11) * 3
    labels = torch.randint(0, 11, (2, 5))
    loss = lambda b: token_losses(s, t, labels, alpha=0.0, temperature=1.0, beta=b)[0]  # noqa: E731
    forward = (t.softmax(-1) * (t.log_softmax(-1) - s.log_softmax(-1))).sum(-1)
    reverse = (s.softmax(-1) * (s.log_softmax(-1) - t.log_softmax(-1))).sum(-1)
    assert torch.allclose(loss(0.0), forward, atol=1e-5)
    assert torch.allclose(loss(1.0), reverse, atol=1e-5)
    assert not torch.allclose(forward, reverse, atol=1e-2)
    # In between, the generalised JSD runs continuously from 0 (at beta -> 0) to 0 (at beta -> 1).
    assert (loss(0.5) > 0).all() and (loss(0.5) < torch.maximum(forward, reverse)).all()


def test_on_policy_batches_are_completed_by_the_student(student, teacher, tmp_path):
    """With --on-policy-frac 1 every training batch is the student's own completion of the prompts."""
    trainer, batch = _trainer(student, teacher, tmp_path, kd="on-policy", on_policy_frac=1.0)
    inputs = {k: v.clone() for k, v in batch.items()}
    teacher_before = {k: v.clone() for k, v in trainer.teacher_model.state_dict().items()}
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this step skips
    trainer.training_step(trainer.model, inputs)
    prompts = batch["prompts"]
    assert inputs["input_ids"].shape[1] > prompts.shape[1]
    assert (inputs["input_ids"][:, :prompts.shape[1]] == prompts).all()  # the prompt, then the student's text
    assert (inputs["labels"][:, :prompts.shape[1]] == -100).all()
    generated = inputs["labels"][:, prompts.shape[1]:]
    assert (generated != -100).any()
    assert not trainer.own_batch  # the flag that drops the CE term lives for one batch
    # The teacher is frozen: eval mode, no gradients, weights as they were.
    assert not trainer.teacher_model.training
    assert not any(p.requires_grad or p.grad is not None for p in trainer.teacher_model.parameters())
    assert all(v.equal(teacher_before[k]) for k, v in trainer.teacher_model.state_dict().items())


# ------------------------------------------------------------------ runs, saved and reloaded


@pytest.mark.parametrize("kd,full", [("offline", False), ("on-policy", True)])
def test_each_method_runs_saves_and_reloads(student, teacher, tmp_path, kd, full):
    from transformers import AutoModelForCausalLM

    sft = st.write_sft(tmp_path / "sft.jsonl", "label")
    r = run_train(sft, tmp_path / "run", _opts(student, teacher, kd=kd, full=full, merge=not full,
                                               divergence="reverse"))
    assert r.steps == 4 and r.train_loss is not None and r.eval_loss is not None
    config = json.loads((tmp_path / "run" / "train_config.json").read_text())
    recorded = config["teacher"]
    assert recorded["model"] == str(teacher.resolve()) and recorded["method"] == kd
    assert recorded["digest"]["model.safetensors"] and recorded["beta"] == 1.0
    assert recorded["on_policy_frac"] == (0.5 if kd == "on-policy" else 0.0)
    assert config["resolved"]["trainer"] == "teacher-logits" and kd in config["resolved"]["loss"]
    AutoModelForCausalLM.from_pretrained(tmp_path / "run" / ("." if full else "merged"))


def test_a_teacher_with_a_padded_embedding_table(student, teacher, tmp_path):
    """One family, one tokenizer, embedding tables padded to different sizes (as Qwen2.5's sizes differ)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    padded = AutoModelForCausalLM.from_pretrained(teacher)
    padded.resize_token_embeddings(padded.config.vocab_size + 24)
    padded.save_pretrained(tmp_path / "padded")
    AutoTokenizer.from_pretrained(teacher).save_pretrained(tmp_path / "padded")
    sft = st.write_sft(tmp_path / "sft.jsonl", "label")
    r = run_train(sft, tmp_path / "run", _opts(student, tmp_path / "padded", max_steps=2))
    assert r.steps == 2 and r.train_loss is not None


@pytest.mark.slow
def test_dss_rows_keep_their_two_tasks(student, teacher, tmp_path):
    sft = st.write_sft(tmp_path / "sft.jsonl", "dss")
    run_train(sft, tmp_path / "run", _opts(student, teacher, rationale_weight=0.5))
    config = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert "L_label + 0.5 * L_rationale" in config["resolved"]["loss"]


# ------------------------------------------------------------------ refusals


def test_teacher_with_another_tokenizer_is_refused_in_one_line(cli, student, tmp_path):
    from kdpipe.tiny_student import TinyOptions, build_tiny_student

    other = build_tiny_student(tmp_path / "other", st.corpus_texts(), TinyOptions(vocab_size=300))
    sft = st.write_sft(tmp_path / "sft.jsonl", "label")
    code, out, err = cli("train", sft, "-o", tmp_path / "run", "--student", student, "--teacher-model", other)
    assert code != 0 and not (tmp_path / "run").exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "tokenizer is not the student's" in lines[0], err


@pytest.mark.parametrize("flag", ["--qlora", "--teacher-4bit"])
def test_4bit_distillation_without_cuda_is_refused_in_one_line(cli, student, tmp_path, flag):
    """A QLoRA student (or a 4-bit teacher) with white-box distillation takes the SFT path's 4-bit loading, which
    needs CUDA and bitsandbytes: on this CPU machine, one line before any model loads, nothing written."""
    sft = st.write_sft(tmp_path / "sft.jsonl", "label")
    code, _, err = cli("train", sft, "-o", tmp_path / "run", "--student", student, "--teacher-model", student, flag)
    assert code == 1 and not (tmp_path / "run").exists()
    assert err.strip() == (f"kdpipe: error: {flag} needs a CUDA GPU (4-bit weights via bitsandbytes); none is "
                           f"present: drop {flag} to use full-precision weights")


def test_distillation_option_problems_at_once(student, teacher, tmp_path):
    sft = st.write_sft(tmp_path / "sft.jsonl", "label")
    with pytest.raises(UsageError) as e:
        run_train(sft, tmp_path / "run", _opts(student, teacher, kd="sideways", divergence="cosine", beta=2.0,
                                                kd_alpha=1.0, on_policy_frac=-1))
    for flag in ("--kd must", "--divergence must", "--beta", "--kd-alpha 1", "--on-policy-frac"):
        assert flag in str(e.value)
    with pytest.raises(UsageError, match="--kd, --on-policy-frac only apply with --teacher-model"):
        run_train(sft, tmp_path / "run", TrainOptions(student=str(student), kd="on-policy", on_policy_frac=1.0))
    with pytest.raises(UsageError, match="--beta applies to --divergence jsd"):
        run_train(sft, tmp_path / "run", _opts(student, teacher, beta=0.2))
    with pytest.raises(KdpipeError, match="no such model folder"):
        run_train(sft, tmp_path / "run", _opts(student, tmp_path / "nowhere"))


def test_makefile_passes_the_teacher_checkpoint_to_train(tmp_path):
    """`make train TEACHER_CKPT=... KD=on-policy` trains from the teacher's logits after format (commands
    shown, not run: the whole pipeline is the Makefile tests' business)."""
    import os
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    repo = Path(__file__).resolve().parent.parent
    run = subprocess.run(["make", "-n", "-C", str(repo), f"WORK={tmp_path}", "-o", ".venv/.installed",
                          f"KDPIPE={sys.executable} -m kdpipe", "train", "TEACHER_CKPT=ckpt/teacher",
                          "KD=on-policy", "KD_FLAGS=--divergence reverse"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(repo)})
    assert run.returncode == 0, run.stderr
    commands = run.stdout.splitlines()
    train = [c for c in commands if " -m kdpipe train " in c]
    assert len(train) == 1 and train[0].endswith("--teacher-model ckpt/teacher --kd on-policy --divergence reverse")
    assert [c for c in commands if " -m kdpipe format " in c]  # format comes first
