"""In-context distillation: `format --icl-shots K` and a student asked with K demonstrations at eval."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import support_tiny as st  # noqa: E402

from kdpipe.demos import DemoPool  # noqa: E402
from kdpipe.prompt_format import load_prompt_format  # noqa: E402
from kdpipe.records import Record, Sample, meta_path, write_records  # noqa: E402


def arithmetic(n: int = 12) -> list[Record]:
    """Numeric records with one teacher sample each, and one choice record (a task of its own), plus a twin
    of the first question under another id (its answer must never be shown to it)."""
    out = [Record(id=f"n{i}", question=f"Ann has {i} pens and buys {i + 2}. How many pens?", task="numeric",
                  gold=str(2 * i + 2), samples=[Sample(index=0, rationale=f"{i} + {i + 2} = {2 * i + 2}.",
                                                       answer=str(2 * i + 2))]) for i in range(n)]
    out.append(Record(id="twin", question=out[0].question, task="numeric", gold="2",
                      samples=[Sample(index=0, rationale="0 + 2 = 2.", answer="2")]))
    out += [Record(id=f"c{i}", question=f"Which colour is thing {i}?", task="choice", choices=["red", "blue"],
                   gold="blue", samples=[Sample(index=0, rationale="It is blue.", answer="blue")]) for i in range(4)]
    return out


def run(cli, tmp_path, name, *args, recs=None):
    inp = tmp_path / "in.jsonl"
    write_records(inp, recs or arithmetic())
    out = tmp_path / f"{name}.jsonl"
    code, _, err = cli("format", inp, "-o", out, *args)
    assert code == 0, err
    return out, [json.loads(line) for line in out.read_text().splitlines()], json.loads(meta_path(out).read_text())


@pytest.mark.parametrize("style", ["cot", "dss"])
def test_rows_carry_k_demonstrations_of_other_training_records(cli, tmp_path, style):
    out, rows, meta = run(cli, tmp_path, style, "--style", style, "--icl-shots", "2", "--val-frac", "0.2")
    recs = {r.id: r for r in arithmetic()}
    fmt = load_prompt_format(meta["prompt_format"], "meta")
    val = {r["id"] for r in rows if r["split"] == "val"}
    pool = {d["id"] for d in fmt.demonstrations}
    assert fmt.icl_shots == 2 and val and not pool & val  # the pool holds training records only
    assert meta["counts"]["icl"] == {"shots": 2, "pool": len(pool), "rows_with_fewer_demos": 0}
    for row in rows:
        rec = recs[row["id"]]
        assert len(row["demos"]) == 2, row
        for d in row["demos"]:
            assert d != rec.id and d not in val and recs[d].task == rec.task
            assert recs[d].question != rec.question  # the twin of a question is never its demonstration
            # the demonstration is in the prompt: its question, then its completion in this style
            assert recs[d].question in row["prompt"][0]["content"]
        asked = row["prompt"][0]["content"].rsplit("\n\n", 1)[1]
        assert rec.question in asked and all(recs[d].question not in asked for d in row["demos"])
    # the same demonstrations are drawn the same way eval draws them
    pool_ = DemoPool(fmt)
    for row in rows:
        rec = recs[row["id"]]
        assert pool_.prompt(rec.id, rec.question, rec.choices, rec.task, row["task"]) == \
            (row["prompt"][0]["content"], row["demos"])
    if style == "cot":
        row = next(r for r in rows if r["id"] == "n5")
        demo = recs[row["demos"][0]]
        assert f"{demo.question}\n{demo.samples[0].rationale} The answer is {demo.gold}.\n\n" in \
            row["prompt"][0]["content"]


def test_demonstrations_are_the_same_on_every_run_and_in_any_order(cli, tmp_path):
    first, _, _ = run(cli, tmp_path, "a", "--style", "label", "--icl-shots", "3", "--val-frac", "0")
    again, _, _ = run(cli, tmp_path, "b", "--style", "label", "--icl-shots", "3", "--val-frac", "0")
    assert first.read_text() == again.read_text()
    _, shuffled, _ = run(cli, tmp_path, "c", "--style", "label", "--icl-shots", "3", "--val-frac", "0",
                         recs=arithmetic()[::-1])
    demos = {json.loads(line)["id"]: json.loads(line)["demos"] for line in first.read_text().splitlines()}
    assert {r["id"]: r["demos"] for r in shuffled} == demos
    _, reseeded, _ = run(cli, tmp_path, "d", "--style", "label", "--icl-shots", "3", "--val-frac", "0",
                         "--seed", "7")
    assert {r["id"]: r["demos"] for r in reseeded} != demos


def test_too_few_training_records_and_bad_values_are_one_line(cli, tmp_path):
    inp = tmp_path / "in.jsonl"
    write_records(inp, arithmetic())
    code, _, err = cli("format", inp, "-o", tmp_path / "o.jsonl", "--icl-shots", "4", "--val-frac", "0")
    assert code == 1 and "too few training records to draw demonstrations from (choice: 4" in err
    assert not (tmp_path / "o.jsonl").exists()
    code, _, err = cli("format", inp, "-o", tmp_path / "o.jsonl", "--icl-shots", "3", "--icl-pool", "3")
    assert code == 2 and "--icl-pool (3) must be larger than --icl-shots (3)" in err
    code, _, err = cli("format", inp, "-o", tmp_path / "o.jsonl", "--icl-shots", "-1")
    assert code == 2 and "--icl-shots must not be negative" in err


def test_pool_is_capped_per_task(cli, tmp_path):
    _, rows, meta = run(cli, tmp_path, "capped", "--style", "label", "--icl-shots", "2", "--icl-pool", "5",
                        "--val-frac", "0")
    pool = meta["prompt_format"]["demonstrations"]
    assert sum(d["task"] == "numeric" for d in pool) == 5 and sum(d["task"] == "choice" for d in pool) == 4
    assert {d for r in rows for d in r["demos"]} <= {d["id"] for d in pool}


def test_a_damaged_stored_pool_is_one_line():
    with pytest.raises(Exception, match="demonstration 0 must be an object"):
        load_prompt_format({"style": "label", "icl_shots": 1, "demonstrations": [{"id": "x"}]}, "fmt")


@pytest.mark.slow
def test_trained_student_is_asked_with_k_training_demonstrations(tmp_path):
    """train copies the pool into the run directory; eval asks the student (and the baseline, the same way)
    with K demonstrations drawn from training records, never an eval record nor the question asked."""
    from typer.testing import CliRunner

    from kdpipe.cli import app
    from kdpipe.format import FormatOptions, run_format

    runner = CliRunner()

    def ok(*args):
        r = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.stderr
        return r

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in st.corpus_texts()))
    records = tmp_path / "records.jsonl"
    write_records(records, st.teacher_records(2))
    sft = tmp_path / "sft.jsonl"
    run_format(records, sft, FormatOptions(style="label", val_frac=1 / 6, icl_shots=2))
    ev = st.write_eval(tmp_path / "eval.jsonl")
    ok("tiny-student", tmp_path / "student", "--corpus", corpus, "--vocab-size", "400", "-q")
    ok("train", sft, "-o", tmp_path / "run", "--student", tmp_path / "student", "--max-steps", "10",
       "--batch-size", "8", "--max-length", "512", "-q")
    stored = json.loads((tmp_path / "run" / "prompt_format.json").read_text())
    assert stored["icl_shots"] == 2 and stored["demonstrations"]
    ok("eval", ev, "--model", tmp_path / "run", "--baseline", tmp_path / "student", "-o", tmp_path / "eval.json",
       "-q")
    rows = [json.loads(line) for line in sft.read_text().splitlines()]
    train_ids = {r["id"] for r in rows if r["split"] == "train"}
    question_of = {r.id: r.question for r in st.teacher_records(1)}
    evals = {r.id: r for r in st.eval_records()}
    preds = [json.loads(line) for line in (tmp_path / "eval.predictions.jsonl").read_text().splitlines()]
    assert {p["model"] for p in preds} == {"student", "baseline"} and len(preds) == 2 * len(evals)
    for p in preds:
        assert len(p["demos"]) == 2 and set(p["demos"]) <= train_ids and not set(p["demos"]) & set(evals)
        assert all(question_of[d] != evals[p["id"]].question for d in p["demos"])
