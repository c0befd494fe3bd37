import json
from collections import Counter

import pytest

from kdpipe import answers
from kdpipe.prompt_format import PromptFormat, inference_task, load_prompt_format, render_answer, render_completion, render_prompt
from kdpipe.records import Record, Sample, meta_path

CHOICES = ["park", "coloring book", "garden center", "math problem", "gravity"]


def records():
    num = Record(id="n1", question="Jack has 3 pens and buys 4. How many pens?", task="numeric", gold="7",
                 samples=[Sample(index=0, rationale="3 + 4 = 7 pens in all.", answer="7"),
                          Sample(index=2, rationale="He has 3, then 4 more: 7.", answer="7")])
    frac = Record(id="n2", question="Half of 5?", task="numeric", gold="2.5",
                  samples=[Sample(index=0, rationale="5 / 2 = 2.5.", answer="2.5")])
    mc = Record(id="c1", question="What is '3 apples fall, X remain' an example of?", task="choice",
                choices=CHOICES, gold="math problem",
                samples=[Sample(index=0, rationale="Counting apples is arithmetic.", answer="math problem")])
    return [num, frac, mc]


def write(path, recs):
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in recs))
    return path


def fmt_cli(cli, tmp_path, style, *args, recs=None):
    inp = write(tmp_path / "in.jsonl", recs or records())
    out = tmp_path / f"{style}.jsonl"
    code, _, err = cli("format", inp, "-o", out, "--style", style, "--val-frac", "0", *args)
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return rows, json.loads(meta_path(out).read_text()), err


def test_dss_two_tasks_per_sample_with_prefixes(tmp_path, cli):
    rows, meta, err = fmt_cli(cli, tmp_path, "dss")
    assert Counter(r["task"] for r in rows) == {"label": 4, "rationale": 4}
    assert Counter((r["id"], r["sample"]) for r in rows) == {("n1", 0): 2, ("n1", 2): 2, ("n2", 0): 2,
                                                              ("c1", 0): 2}
    by = {(r["id"], r["sample"], r["task"]): r for r in rows}
    label = by[("c1", 0, "label")]
    assert set(label) == {"id", "sample", "task", "split", "prompt", "completion"}
    assert label["prompt"] == [{"role": "user", "content":
                                "predict: What is '3 apples fall, X remain' an example of?\nAnswer Choices:\n"
                                "(a) park\n(b) coloring book\n(c) garden center\n(d) math problem\n(e) gravity"}]
    assert label["completion"] == [{"role": "assistant", "content": "(d) math problem"}]
    expl = by[("n1", 2, "rationale")]
    assert expl["prompt"][0]["content"] == "explain: Jack has 3 pens and buys 4. How many pens?"
    assert expl["completion"][0]["content"] == "He has 3, then 4 more: 7."
    fmt = load_prompt_format(meta["prompt_format"], "meta")
    assert fmt == PromptFormat(style="dss")
    # eval rebuilds exactly the training prompt of the label task from the stored format
    assert inference_task(fmt) == "label"
    assert render_prompt(fmt, "Half of 5?", None, inference_task(fmt)) == \
        by[("n2", 0, "label")]["prompt"][0]["content"]
    assert "8 rows" in err


def test_cot_completion_ends_in_a_parseable_answer(tmp_path, cli):
    rows, meta, _ = fmt_cli(cli, tmp_path, "cot")
    assert {r["task"] for r in rows} == {"cot"} and len(rows) == 4
    by = {(r["id"], r["sample"]): r["completion"][0]["content"] for r in rows}
    assert by[("n2", 0)] == "5 / 2 = 2.5. The answer is 2.5."
    assert by[("c1", 0)] == "Counting apples is arithmetic. The answer is (d) math problem."
    golds = {r.id: r for r in records()}
    for (rid, _), text in by.items():
        rec = golds[rid]
        parsed = answers.parse_completion(text, rec.task, rec.choices)
        assert answers.answers_agree(parsed.answer, rec.gold, rec.task, rec.choices), text


@pytest.mark.parametrize("style", ["label", "gold"])
def test_answer_only_styles(tmp_path, cli, style):
    recs = records()
    recs[0].samples[1].answer = "7.0"  # teacher answer differs in form from gold
    rows, _, _ = fmt_cli(cli, tmp_path, style, "--no-chat", recs=recs)
    assert {r["task"] for r in rows} == {"answer"}
    got = sorted((r["id"], r["sample"], r["completion"]) for r in rows)
    if style == "label":
        assert got == [("c1", 0, "(d) math problem"), ("n1", 0, "7"), ("n1", 2, "7.0"), ("n2", 0, "2.5")]
    else:
        assert got == [("c1", None, "(d) math problem"), ("n1", None, "7"), ("n2", None, "2.5")]
    assert all(isinstance(r["prompt"], str) and not r["prompt"].startswith("predict") for r in rows)
    # a plain-text prompt ends on a token boundary before its completion (see test_eval)
    assert all(r["prompt"].endswith("\n") and not r["completion"][0].isspace() for r in rows)


def test_rendered_answers_read_back_canonical():
    fmt = PromptFormat()
    for ans in CHOICES:
        shown = render_answer(fmt, ans, CHOICES)
        assert answers.canonical_answer(shown, "choice", CHOICES) == ans
    assert render_answer(fmt, "2.5") == "2.5"
    assert render_completion(fmt, "cot", "7", None, " x ") == "x The answer is 7."
    assert PromptFormat.from_dict(PromptFormat(style="cot", chat=False).to_dict()) == PromptFormat("cot", False)
    with pytest.raises(ValueError, match="unknown prompt format field"):
        PromptFormat.from_dict({"style": "dss", "extra": 1})


def test_split_by_record_id_is_deterministic_and_shuffled(tmp_path, cli):
    recs = [Record(id=f"r{i}", question=f"q {i}?", task="numeric", gold=str(i),
                   samples=[Sample(index=j, rationale=f"because {i}", answer=str(i)) for j in range(2)])
            for i in range(200)]
    inp = write(tmp_path / "in.jsonl", recs)
    outs = []
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        code, _, err = cli("format", inp, "-o", tmp_path / f"{name}.jsonl", "--style", "dss",
                           "--val-frac", "0.1", "--seed", seed)
        assert code == 0, err
        outs.append([json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()])
    a, b, c = outs
    assert a == b
    val_ids = {r["id"] for r in a if r["split"] == "val"}
    assert len(val_ids) == 20
    assert all((r["split"] == "val") == (r["id"] in val_ids) for r in a)  # a record never straddles
    assert val_ids != {r["id"] for r in c if r["split"] == "val"}
    assert [r["id"] for r in a[:10]] != sorted(r["id"] for r in a[:10])  # shuffled, not in input order


def test_unusable_input_and_bad_options(tmp_path, cli):
    seeds = [Record(id="s", question="No teacher here?", task="numeric", gold="1")]
    inp = write(tmp_path / "in.jsonl", seeds)
    code, _, err = cli("format", inp, "-o", tmp_path / "o.jsonl", "--style", "dss")
    assert code == 1 and "no training examples for style dss (record without teacher samples: 1)" in err
    assert not (tmp_path / "o.jsonl").exists()
    code, _, err = cli("format", inp, "-o", tmp_path / "o.jsonl", "--style", "foo", "--val-frac", "2",
                       "--answer-sentence", "Answer:")
    assert code == 2
    assert "--style must be one of" in err and "--val-frac" in err and "{answer}" in err


@pytest.mark.parametrize("sentence", ["The answer is {answer}. {0}", "x {answer} {foo}", "{answer", "{answer.x}"])
def test_answer_sentence_that_is_not_a_template_is_a_usage_error(tmp_path, cli, sentence):
    inp = write(tmp_path / "in.jsonl", records())
    code, _, err = cli("format", inp, "-o", tmp_path / "o.jsonl", "--style", "cot", "--answer-sentence", sentence)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "is not a valid template" in err and "must contain {answer}" in err
    assert not (tmp_path / "o.jsonl").exists()
    assert PromptFormat(answer_sentence="So {{it}} is {answer}.").validate() is None  # escaped braces are fine
