"""A tiny run reported to TensorBoard, its model card in the Hub's format, and eval adding its scorecard."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import support_tiny as st  # noqa: E402

from kdpipe.train import TrainOptions, run_train  # noqa: E402

FAST = dict(max_steps=12, batch_size=8, max_length=96, learning_rate=3e-3, log_every=3, eval_every=6)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("hubrun")
    student = st.build_student(d / "student")
    sft = st.write_sft(d / "sft.jsonl", "label")
    run_train(sft, d / "run", TrainOptions(student=str(student), report_to="tensorboard", **FAST))
    return d / "run", sft


def test_tensorboard_events_hold_the_logged_losses(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = run
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events, list(run_dir.iterdir())
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    losses = {e.step: e.value for e in acc.Scalars("train/loss")}
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # TensorBoard saw the same losses kdpipe logged itself, and kdpipe's own files are still written.
    assert losses == pytest.approx({r["step"]: r["loss"] for r in rows if "loss" in r})
    assert sorted(losses) == [3, 6, 9, 12]
    assert {e.step for e in acc.Scalars("eval/loss")} == {6, 12}
    assert (run_dir / "loss.png").is_file()
    config = json.loads((run_dir / "train_config.json").read_text())
    assert config["trainer_args"]["report_to"] == ["tensorboard"]
    assert config["trainer_args"]["run_name"] == "run"


def test_model_card_parses_and_holds_the_run_facts(run):
    from huggingface_hub import ModelCard

    run_dir, sft = run
    card = ModelCard.load(run_dir / "README.md")
    assert card.data.library_name == "peft" and "kdpipe" in card.data.tags and "lora" in card.data.tags
    assert card.data.base_model is None  # a local folder is no Hub id: named in the text instead
    config = json.loads((run_dir / "train_config.json").read_text())
    text = card.text
    assert f"`{config['student']}`" in text
    assert config["resolved"]["loss"] in text
    assert config["data"]["digest"] in text and f"{config['data']['train_rows']} train" in text
    assert "| lora_r | `16` |" in text and "| report_to | `tensorboard` |" in text
    assert "Not evaluated yet" in text


def test_eval_adds_its_scorecard_to_the_card(run, tmp_path, cli):
    from huggingface_hub import ModelCard

    run_dir, _ = run
    ev = st.write_eval(tmp_path / "eval.jsonl")
    code, out, err = cli("eval", ev, "--model", run_dir, "--limit", "4", "--max-new-tokens", "8")
    assert code == 0, err
    card = ModelCard.load(run_dir / "README.md")
    results = card.data.eval_results
    assert len(results) == 1 and results[0].metric_type == "accuracy" and results[0].dataset_name == "eval.jsonl"
    scored = json.loads((run_dir / "eval_results.json").read_text())
    assert results[0].metric_value == pytest.approx(scored["models"][0]["accuracy"], abs=1e-4)
    assert "## Evaluation" in card.text and "Accuracy on 4 questions (eval.jsonl)" in card.text
    assert "Not evaluated yet" not in card.text


def test_an_instruction_eval_puts_its_rouge_l_on_the_card(run, tmp_path, cli):
    from huggingface_hub import ModelCard

    run_dir, _ = run
    ev = tmp_path / "instructions.jsonl"
    ev.write_text("".join(json.dumps({"id": f"i{k}", "question": f"Write a greeting for guest {k}.",
                                      "task": "instruction", "gold": f"Hello, guest {k}, welcome."}) + "\n"
                          for k in range(3)))
    code, out, err = cli("eval", ev, "--model", run_dir, "--max-new-tokens", "8")
    assert code == 0, err
    card = ModelCard.load(run_dir / "README.md")
    (result,) = card.data.eval_results
    scored = json.loads((run_dir / "eval_results.json").read_text())
    assert result.metric_type == "rouge_l" and result.dataset_name == "instructions.jsonl"
    assert result.metric_value == pytest.approx(scored["models"][0]["rouge_l"], abs=1e-4)


def test_report_to_checked_before_training(cli, tmp_path):
    sft = st.write_sft(tmp_path / "sft.jsonl", "label")
    code, _, err = cli("train", sft, "-o", tmp_path / "r", "--student", "x", "--report-to", "tensorboard,comet")
    assert code == 2 and "--report-to must be none or a comma list of tensorboard, wandb, trackio" in err


def test_a_tracker_that_is_not_installed_is_one_line_before_training(run, cli, tmp_path):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    student = run[0].parent / "student"
    sft = st.write_sft(tmp_path / "sft.jsonl", "label")
    code, _, err = cli("train", sft, "-o", tmp_path / "r", "--student", student, "--report-to", "wandb")
    assert code == 1 and err.strip() == "kdpipe: error: --report-to wandb needs the wandb package: pip install wandb"
    assert not (tmp_path / "r").exists()
