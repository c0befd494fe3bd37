"""`kdpipe train` on a locally built tiny student, on the CPU: the real TRL/PEFT code path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import support_tiny as st  # noqa: E402

from kdpipe.errors import KdpipeError, UsageError  # noqa: E402
from kdpipe.train import TrainOptions, run_train  # noqa: E402

FAST = dict(max_steps=40, batch_size=8, max_length=96, learning_rate=3e-3, log_every=5, eval_every=20)


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    return st.build_student(tmp_path_factory.mktemp("tiny") / "student")


@pytest.fixture(scope="module")
def label_run(student, tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("label")
    sft = st.write_sft(d / "sft.jsonl", "label")
    run_train(sft, d / "run", TrainOptions(student=str(student), merge=True, **FAST))
    return d / "run", sft


# ------------------------------------------------------------------ validation before spending


def test_all_option_problems_reported_at_once(cli, tmp_path):
    sft = st.write_sft(tmp_path / "sft.jsonl")
    code, _, err = cli("train", sft, "-o", tmp_path / "run", "--student", "x", "--lora-r", "0",
                       "--lora-dropout", "1.5", "--full", "--qlora")
    assert code == 2
    line = err.strip()
    assert "\n" not in line
    assert "--lora-r must be positive" in line and "--lora-dropout" in line and "--full and --qlora" in line


def test_wrong_data_shape_names_file_and_line(cli, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"question": "no prompt"}\n')
    code, _, err = cli("train", bad, "-o", tmp_path / "run", "--student", "whatever")
    assert code == 1
    assert err.strip() == f"kdpipe: error: {bad}:2: missing field 'prompt' (expected the SFT rows written by " \
                          "`kdpipe format`)"
    assert not (tmp_path / "run").exists()


def test_stored_prompt_format_is_checked(cli, tmp_path):
    """train copies the data's prompt format into the run for eval: a broken one is refused up front."""
    sft = st.write_sft(tmp_path / "sft.jsonl")
    meta = tmp_path / "sft.jsonl.meta.json"
    stored = json.loads(meta.read_text())
    for bad, says in (({"style": "nope"}, "--style must be one of"), ({"style": "label", "colour": 1},
                      "unknown prompt format field(s) colour"), ({"style": "label", "chat": False},
                      "says chat=False, but the rows")):
        meta.write_text(json.dumps(dict(stored, prompt_format=bad)))
        code, _, err = cli("train", sft, "-o", tmp_path / "run", "--student", "whatever")
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert str(meta) in err and says in err
    assert not (tmp_path / "run").exists()


def test_missing_model_folder_is_one_line(cli, tmp_path):
    sft = st.write_sft(tmp_path / "sft.jsonl")
    code, _, err = cli("train", sft, "-o", tmp_path / "run", "--student", str(tmp_path / "no-such-model"))
    assert code == 1
    assert err.strip() == f"kdpipe: error: {tmp_path / 'no-such-model'}: no such model folder"


def test_max_length_that_cuts_every_completion(cli, student, tmp_path):
    sft = st.write_sft(tmp_path / "sft.jsonl")
    code, _, err = cli("train", sft, "-o", tmp_path / "run", "--student", student, "--max-length", "8")
    assert code == 1
    assert "--max-length 8 cuts every completion" in err and "raise --max-length above" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_qlora_without_cuda_is_a_clear_error(student, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    sft = st.write_sft(tmp_path / "sft.jsonl")
    with pytest.raises(KdpipeError, match="--qlora needs a CUDA GPU"):
        run_train(sft, tmp_path / "run", TrainOptions(student=str(student), qlora=True))


def test_packing_refused_on_dss_data(student, tmp_path):
    sft = st.write_sft(tmp_path / "sft.jsonl", "dss")
    with pytest.raises(UsageError, match="--packing cannot be used on dss data"):
        run_train(sft, tmp_path / "run", TrainOptions(student=str(student), packing=True))


def test_non_empty_run_dir_needs_resume_or_overwrite(label_run, student, tmp_path):
    run, sft = label_run
    with pytest.raises(KdpipeError, match="not empty; pass --resume"):
        run_train(sft, run, TrainOptions(student=str(student), **FAST))


def test_overwrite_keeps_the_old_run_when_options_are_bad(label_run, student, cli, tmp_path):
    """--overwrite deletes the previous run only once the new one is built; bad options are one line."""
    import shutil

    old, sft = label_run
    run = tmp_path / "run"
    shutil.copytree(old, run)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    fast = ("--max-steps", "2", "--max-length", "96", "--overwrite", "-q")
    code, _, err = cli("train", sft, "-o", run, "--student", student, "--lr-scheduler", "foo", *fast)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--lr-scheduler must be one of linear, cosine" in err and "'foo'" in err
    code, _, err = cli("train", sft, "-o", run, "--student", student, "--lr-scheduler", "cosine_with_min_lr",
                       *fast)
    assert code == 2 and "needs a minimum learning rate" in err
    code, _, err = cli("train", sft, "-o", run, "--student", student, "--lora-targets", "nope_proj", *fast)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "--lora-targets nope_proj: no such module" in err and "q_proj" in err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


# ------------------------------------------------------------------ the weighted DSS loss


def _trainer(student: Path, sft: Path, weight: float, dss: bool, **config):
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from kdpipe.train.data import read_sft
    from kdpipe.student import load_tokenizer
    from kdpipe.train import dataset
    from kdpipe.train.trainers import pick
    from kdpipe.train.trainers.weighted import weighted_trainer_classes

    torch.manual_seed(0)
    data = read_sft(sft)
    tokenizer = load_tokenizer(str(student))
    model = AutoModelForCausalLM.from_pretrained(student)
    args = SFTConfig(**{**dict(output_dir=str(sft.parent / "out"), bf16=False, report_to="none", max_length=96,
                               activation_checkpointing=False, dataloader_pin_memory=False,
                               remove_unused_columns=not dss, per_device_train_batch_size=len(data.train),
                               disable_tqdm=True), **config})
    kwargs = {}
    cls = SFTTrainer
    if dss:
        collator, cls = weighted_trainer_classes()
        kwargs["data_collator"] = collator(pad_token_id=tokenizer.pad_token_id)
        kwargs["rationale_weight"] = weight
    return cls(model=model, args=args, train_dataset=dataset(data.train, pick(dss)), processing_class=tokenizer,
               **kwargs)


def _task_means_by_hand(model, tokenizer, batch) -> tuple[float, float]:
    """(mean token loss of the label rows, of the rationale rows), from the model's logits, one token at a time.

    A row's task is read from its own prompt text ("explain: ..." is the rationale task), not from the
    task column the trainer uses.
    """
    import torch

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    sums, counts = {"label": 0.0, "rationale": 0.0}, {"label": 0, "rationale": 0}
    for row in range(batch["input_ids"].shape[0]):
        text = tokenizer.decode(batch["input_ids"][row], skip_special_tokens=True)
        task = "rationale" if "explain: " in text else "label"
        assert ("predict: " in text) != (task == "rationale")
        for t in range(1, batch["labels"].shape[1]):
            target = int(batch["labels"][row, t])
            if target != -100:
                sums[task] -= float(torch.log_softmax(logits[row, t - 1], dim=-1)[target])
                counts[task] += 1
    assert counts["label"] and counts["rationale"]
    assert counts["rationale"] > counts["label"]  # rationales are longer: a token mean would favour them
    return sums["label"] / counts["label"], sums["rationale"] / counts["rationale"]


def test_dss_loss_is_label_mean_plus_lambda_rationale_mean(student, tmp_path):
    """The trainer's loss on a fixed batch is L_label + λ·L_rationale, each a mean over its own tokens."""
    import torch

    sft = st.write_sft(tmp_path / "sft.jsonl", "dss", repeats=2)
    got = {}
    for weight in (0.25, 3.0):
        trainer = _trainer(student, sft, weight, dss=True)
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.model.eval()
        label, rationale = _task_means_by_hand(trainer.model, trainer.processing_class, batch)
        with torch.no_grad():
            got[weight] = float(trainer.compute_loss(trainer.model, dict(batch)))
        assert got[weight] == pytest.approx(label + weight * rationale, rel=1e-4)
    assert abs(label - rationale) > 0.05 * rationale  # λ on the wrong rows would give another number
    assert got[3.0] - got[0.25] == pytest.approx(2.75 * rationale, rel=1e-4)  # λ scales the rationale rows


def test_dss_loss_with_one_task_missing_from_the_batch():
    """A micro-batch with label rows only has loss L_label (the absent task adds 0, not NaN)."""
    import torch

    from kdpipe.train.trainers.weighted import dss_loss

    token_loss = torch.rand(2, 5)
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]]).bool()
    total, label, rationale = dss_loss(token_loss * mask, mask, torch.tensor([0, 0]), 2.0)
    assert float(rationale) == 0.0 and float(total) == pytest.approx(float(label))
    assert float(label) == pytest.approx(float(token_loss[mask].mean()), rel=1e-6)
    total, label, rationale = dss_loss(token_loss * mask, mask, torch.tensor([1, 1]), 2.0)
    assert float(label) == 0.0 and float(total) == pytest.approx(2.0 * float(token_loss[mask].mean()), rel=1e-6)


def test_loss_falls_on_the_completion_only(student, tmp_path):
    """Every prompt token is masked out of the labels; every completion token is in them."""
    from kdpipe.train.data import prompt_lengths, read_sft
    from kdpipe.student import load_tokenizer

    sft = st.write_sft(tmp_path / "sft.jsonl", "cot", repeats=1)
    data = read_sft(sft)
    trainer = _trainer(student, sft, 1.0, dss=False)
    lengths = prompt_lengths(data.train, load_tokenizer(str(student)), chat=True)
    labels = [list(x) for x in trainer.train_dataset["labels"]]
    assert len(labels) == len(lengths)
    by_length = sorted((len(lab), lab) for lab in labels)
    for (p, pc), (n, lab) in zip(sorted(lengths, key=lambda x: x[1]), by_length):
        assert n == pc
        assert all(t == -100 for t in lab[:p]) and all(t != -100 for t in lab[p:])


# ------------------------------------------------------------------ a real LoRA run


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_lora_run_directory(label_run, student):
    run, sft = label_run
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "train_config.json",
                 "prompt_format.json", "metrics.jsonl", "loss.png", "merged/config.json"):
        assert (run / name).is_file(), name
    config = json.loads((run / "train_config.json").read_text())
    from kdpipe.records import file_digest

    assert config["data"]["digest"] == file_digest(sft)
    assert config["options"]["lora_r"] == 16 and config["resolved"]["device"] == "cpu"
    assert config["trainer_args"]["max_steps"] == 40
    assert config["results"]["tokens_per_s"] > 0
    assert json.loads((run / "prompt_format.json").read_text()) == st.prompt_format("label")
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 8 and any("eval_loss" in r for r in rows)
    # One validation line per evaluation: the one at the last step is not logged again after training.
    assert [r["step"] for r in rows if "eval_loss" in r] == [20, 40]
    assert config["results"]["eval_loss"] == [r["eval_loss"] for r in rows if "eval_loss" in r][-1]
    assert all(r["tokens_per_s"] > 0 for r in rows if "loss" in r)
    assert losses[-1] < 0.5 * losses[0]  # LoRA training lowers the loss


def test_adapter_moved_and_base_did_not(label_run, student):
    import torch

    run, _ = label_run
    adapter = _weights(run / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(torch.count_nonzero(v) > 0 for v in lora_b)  # B starts at zero in PEFT
    # The base folder is untouched, and the adapter applied on it reproduces the merged model.
    base_before = _weights(student / "model.safetensors")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(student)
    for k, v in base.state_dict().items():
        assert torch.equal(v, base_before[k]), k
    with_adapter = PeftModel.from_pretrained(base, str(run)).eval()
    merged = AutoModelForCausalLM.from_pretrained(run / "merged").eval()
    ids = torch.tensor([[3, 40, 41, 42, 43, 2, 4]])
    with torch.no_grad():
        a, b = with_adapter(ids).logits, merged(ids).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, AutoModelForCausalLM.from_pretrained(student)(ids).logits, atol=1e-3)


@pytest.mark.slow
def test_resume_continues_from_checkpoint(student, tmp_path):
    sft = st.write_sft(tmp_path / "sft.jsonl", "label")
    opts = dict(FAST, save_every=10)
    run_train(sft, tmp_path / "run", TrainOptions(student=str(student), **dict(opts, max_steps=20)))
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-20").is_dir()
    r = run_train(sft, tmp_path / "run", TrainOptions(student=str(student), resume=True,
                                                       **dict(opts, max_steps=30)))
    assert r.steps == 30
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [row for row in rows if "loss" in row]
    assert [row["step"] for row in train_rows] == [5, 10, 15, 20, 25, 30]  # resumed at step 21, not at 1
    # The totals cover the whole run, not only the resumed steps: each logged loss is the mean of 5 steps.
    losses = [row["loss"] for row in train_rows]
    assert r.train_loss == pytest.approx(sum(losses) / 6, abs=1e-4)
    assert abs(r.train_loss - sum(losses[4:]) / 2) > 0.05  # what the resumed steps alone would say
    tokens = [row["num_tokens"] for row in train_rows]
    assert tokens == sorted(tokens) and tokens[4] - tokens[3] == pytest.approx(tokens[3] - tokens[2], rel=0.5)
    config = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert config["results"]["tokens"] == tokens[-1] and config["results"]["train_loss"] == r.train_loss
    assert all(row["tokens_per_s"] < 10 * train_rows[0]["tokens_per_s"] for row in train_rows)


def test_student_path_is_stored_resolved_with_its_digest(student, tmp_path, monkeypatch):
    from kdpipe.records import file_digest
    from kdpipe.student import check_model_exists, resolve_source

    sft = st.write_sft(tmp_path / "sft.jsonl", "label")
    monkeypatch.chdir(student.parent)
    run_train(sft, tmp_path / "run", TrainOptions(student=student.name, **dict(FAST, max_steps=2)))
    config = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert config["student"] == str(student.resolve()) and config["options"]["student"] == student.name
    assert config["student_digest"] == {p.name: file_digest(p) for p in student.iterdir()
                                        if p.name in ("config.json", "generation_config.json", "model.safetensors")}
    # From another directory, eval finds the base model of the adapter.
    monkeypatch.chdir(tmp_path)
    source = resolve_source(str(tmp_path / "run"))
    check_model_exists(source.model)
    assert source.model == str(student.resolve())


def test_a_hub_id_is_stored_as_it_is():
    from kdpipe.train.run_dir import resolved_student, student_digest

    assert resolved_student("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert student_digest("Qwen/Qwen2.5-0.5B-Instruct") is None


@pytest.mark.slow
def test_full_fine_tuning_saves_loadable_weights(student, tmp_path):
    from transformers import AutoModelForCausalLM

    sft = st.write_sft(tmp_path / "sft.jsonl", "label")
    r = run_train(sft, tmp_path / "run", TrainOptions(student=str(student), full=True,
                                                       **dict(FAST, learning_rate=1e-3)))
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert not (tmp_path / "run" / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(tmp_path / "run")
    assert r.train_loss is not None and r.eval_loss < 3.0
