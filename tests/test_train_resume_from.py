"""`train --resume-from RUN`: a new run that starts from a finished run's weights (a loop round that
continues from the last round's student), on the tiny student."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import support_tiny as st  # noqa: E402

from kdpipe.errors import UsageError  # noqa: E402
from kdpipe.train import TrainOptions, run_train  # noqa: E402

FAST = dict(batch_size=8, max_length=96, log_every=5, eval_every=20)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    d = tmp_path_factory.mktemp("first")
    student = st.build_student(d / "student")
    sft = st.write_sft(d / "sft.jsonl", "label")
    run_train(sft, d / "run", TrainOptions(student=str(student), max_steps=40, learning_rate=3e-3, **FAST))
    return student, sft, d / "run"


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _first_loss(run: Path) -> float:
    return next(r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r)


def test_a_resumed_run_starts_from_the_adapter_trains_it_further_and_reloads(first, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    student, sft, prev = first
    # One step at a vanishing learning rate: the adapter saved is the previous one, so training began there.
    still = tmp_path / "still"
    run_train(sft, still, TrainOptions(student=str(student), resume_from=str(prev), max_steps=1,
                                       learning_rate=1e-9, **FAST))
    before, after = _weights(prev / "adapter_model.safetensors"), _weights(still / "adapter_model.safetensors")
    assert before.keys() == after.keys() and all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    assert any(torch.count_nonzero(v) for k, v in after.items() if "lora_B" in k)  # not a fresh adapter (B = 0)
    # Trained further: it begins at the loss the previous run ended with, far below a fresh start.
    more = tmp_path / "more"
    r = run_train(sft, more, TrainOptions(student=str(student), resume_from=str(prev), max_steps=10,
                                          learning_rate=3e-3, lora_r=4, **FAST))
    assert _first_loss(more) < 0.5 * _first_loss(prev)
    assert any("--lora-r ignored" in n for n in r.notes)
    config = json.loads((more / "train_config.json").read_text())
    assert config["student"] == str(student.resolve())  # eval finds the base under the adapter
    assert config["resumed_from"]["run"] == str(prev.resolve()) and config["resumed_from"]["kind"] == "lora"
    assert json.loads((more / "adapter_config.json").read_text())["r"] == 16  # the adapter's own shape
    # Saved and reloaded on the base: the continued adapter, not the previous one.
    base = AutoModelForCausalLM.from_pretrained(student)
    ids = torch.tensor([[3, 40, 41, 42, 43, 2, 4]])
    with torch.no_grad():
        logits = {name: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(student), str(run))
                  .eval()(ids).logits for name, run in (("prev", prev), ("more", more))}
        plain = base.eval()(ids).logits
    assert not torch.allclose(logits["more"], logits["prev"], atol=1e-4)
    assert not torch.allclose(logits["more"], plain, atol=1e-3)


def test_resume_from_a_run_that_does_not_fit_is_refused_in_one_line(first, tmp_path, cli):
    student, sft, prev = first
    other = st.build_student(tmp_path / "other")
    with pytest.raises(UsageError) as e:
        run_train(sft, tmp_path / "x", TrainOptions(student=str(other), resume_from=str(prev), full=True, **FAST))
    assert f"was trained from {student.resolve()}" in str(e.value) and "drop --full" in str(e.value)
    code, _, err = cli("train", sft, "-o", prev, "--overwrite", "--student", student, "--resume-from", prev)
    assert code == 2 and "is the output run itself" in err and "Traceback" not in err
    assert (prev / "adapter_model.safetensors").is_file()  # the run named twice is left alone
    code, _, err = cli("train", sft, "-o", tmp_path / "y", "--student", student, "--resume-from", tmp_path)
    assert code == 2 and "not a finished `kdpipe train` run" in err
    assert not (tmp_path / "y").exists()


@pytest.mark.slow
def test_a_full_fine_tuning_run_continues_from_its_weights(first, tmp_path):
    import torch

    student, sft, _ = first
    run_train(sft, tmp_path / "full", TrainOptions(student=str(student), full=True, max_steps=10,
                                                   learning_rate=3e-3, **FAST))
    run_train(sft, tmp_path / "again", TrainOptions(student=str(student), full=True, resume_from=str(tmp_path / "full"),
                                                    max_steps=1, learning_rate=1e-9, **FAST))
    a, b = _weights(tmp_path / "full" / "model.safetensors"), _weights(tmp_path / "again" / "model.safetensors")
    base = _weights(student / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(not torch.allclose(base[k], b[k], atol=1e-4) for k in base if k in b)
    config = json.loads((tmp_path / "again" / "train_config.json").read_text())
    assert config["resumed_from"]["kind"] == "full"
