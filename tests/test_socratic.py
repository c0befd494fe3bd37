"""Socratic CoT: the decomposition parser, the teacher's decompositions over real HTTP, filter, format, eval."""

from __future__ import annotations

import json

import pytest

from kdpipe.label_prompts import PROMPTS_DIR
from kdpipe.loopback import ScriptLine, running
from kdpipe.prompt_format import PromptFormat
from kdpipe.records import Record, load_records, write_records
from kdpipe.socratic import PROBLEMS, parse_decomposition, render_decomposition

GOOD = ("Q1: How many trees were there at first?\nA1: There were 15 trees.\n"
        "Q2: How many did the workers plant?\nA2: 21 - 15 = 6.\nThe answer is 6.")


@pytest.mark.parametrize("text", [
    GOOD,
    GOOD.replace("\n", " "),  # one line
    GOOD.replace("Q1:", "**Q1:**").replace("A1:", "**A1:**"),  # markdown
    GOOD.replace("Q1:", "Question 1:").replace("A1:", "Answer 1:").replace("Q2:", "Sub-question 2:"),
    "Let me break it down.\n" + GOOD + "\n\nProblem: A new one?\nQ1: What?\nA1: 3.\nThe answer is 3.",  # run-on
    "<think>15 then 21.</think>" + GOOD,
    GOOD.replace("A2: 21 - 15 = 6.\nThe answer is 6.", "A2: 21 - 15 = 6. So the answer is 6."),
])
def test_well_formed_decompositions_are_read_however_they_are_written(text):
    d = parse_decomposition(text, "numeric")
    assert d.problem is None and d.answer == "6", d
    assert [q for q, _ in d.steps] == ["How many trees were there at first?", "How many did the workers plant?"]
    assert d.steps[1][1] == "21 - 15 = 6."


@pytest.mark.parametrize("text, problem", [
    ("", "empty"),
    ("There were 15 and then 21, so 6. The answer is 6.", "no_subquestions"),
    ("Q1: How many at first?\nQ2: How many planted?\nA2: 6.\nThe answer is 6.", "unanswered_subquestion"),
    ("Q1: How many at first?\nA1: 15.\nQ2: How many planted?", "unanswered_subquestion"),
    ("Q1: How many at first?\nA1: 15.\nQ3: How many planted?\nA3: 6.\nThe answer is 6.", "misnumbered"),
    ("Q1: How many at first?\nA2: 15.\nThe answer is 15.", "misnumbered"),
    ("A1: 15.\nQ1: How many at first?\nA1: 15.\nThe answer is 15.", "answer_without_subquestion"),
    ("Q1:\nA1: 15.\nThe answer is 15.", "empty_step"),
    ("Q1: How many at first?\nA1: 15.\nQ2: How many planted?\nA2: 21 - 15 = 6.", "no_final_answer"),
    ("Q1: How many at first?\nA1: 15.\nThe answer is many.", "no_final_answer"),
])
def test_malformed_decompositions_get_their_reason_code(text, problem):
    d = parse_decomposition(text, "numeric")
    assert d.problem == problem and d.answer is None and d.reason.startswith(problem + ": ")
    assert problem in PROBLEMS


@pytest.mark.parametrize("sentence", ["The answer is {answer}.", "Therefore: {answer}"])
def test_a_rendered_decomposition_reads_back(sentence):
    fmt = PromptFormat(style="socratic", answer_sentence=sentence)
    steps = [("Which fruit is long?", "A banana is long."), ("Which option is it?", "It is option (b).")]
    text = render_decomposition(fmt, steps, "banana", ["apple", "banana"])
    assert text.startswith("Q1: Which fruit is long?\nA1: A banana is long.\nQ2:")
    d = parse_decomposition(text, "choice", ["apple", "banana"], fmt)
    assert d.problem is None and d.steps == steps and d.answer == "banana"


# ------------------------------------------------------------------ generate -> filter -> format, over HTTP

QUESTIONS = {
    "good": ("Tom has 3 apples and buys 4 more. How many apples does he have now?", "7",
             "Q1: How many apples did Tom have?\nA1: He had 3.\nQ2: How many after buying 4?\nA2: 3 + 4 = 7.\n"
             "The answer is 7."),
    # a plain chain of thought: the loopback answers a Socratic request with it decomposed
    "converted": ("Ivan picks 5 coins and Dara picks 2 coins. How many coins did they pick in all?", "7",
                  "Ivan picks 5 and Dara picks 2. Together 5 + 2 = 7. So the answer is 7."),
    "answer_first": ("Sam reads 4 pages and then 5 pages. How many pages did he read?", "9",
                     "The answer is 9, since 4 + 5 = 9."),
    "unanswered": ("Ada had 10 pens and lost 2. How many pens are left?", "8",
                   "Q1: How many pens did Ada have?\nQ2: How many are left after losing 2?\nA2: 10 - 2 = 8.\n"
                   "The answer is 8."),
    "misnumbered": ("Bo has 6 cups and gets 6 more. How many cups does Bo have?", "12",
                    "Q1: How many cups at first?\nA1: 6.\nQ3: How many in all?\nA3: 6 + 6 = 12.\n"
                    "The answer is 12."),
    "answer_before": ("Cy had 9 hats and gave away 3. How many hats are left?", "6",
                      "The answer is 6.\nQ1: How many hats are left?\nA1: 9 - 3 = 6."),
    "differs": ("Di baked 2 pies and then 3 pies. How many pies did Di bake?", "5",
                "At a guess the answer is 4.\nQ1: How many pies in all?\nA1: 2 + 3 = 5.\nThe answer is 5."),
}
EXPECTED = {"answer_first": "no_subquestions", "unanswered": "unanswered_subquestion",
            "misnumbered": "misnumbered", "answer_before": "no_final_answer", "differs": "final_answer_differs"}


def teacher_run(cli, tmp_path, prompt: str) -> tuple:
    seeds = tmp_path / "seeds.jsonl"
    write_records(seeds, [Record(id=k, question=q, task="numeric", gold=g) for k, (q, g, _) in QUESTIONS.items()])
    script = [ScriptLine(q, [text]) for q, _, text in QUESTIONS.values()]
    out = tmp_path / f"teacher-{prompt}.jsonl"
    with running(script) as srv:
        code, _, err = cli("generate", seeds, "-o", out, "--model", "loopback", "--base-url", srv.base_url,
                           "--prompt", PROMPTS_DIR / f"{prompt}.txt", "--cache", tmp_path / "cache.sqlite", "-q")
    assert code == 0, err
    kept, rejected = tmp_path / f"kept-{prompt}.jsonl", tmp_path / f"rejected-{prompt}.jsonl"
    code, _, err = cli("filter", out, "-o", kept, "--rejected", rejected, "--no-near-dup", "-q")
    assert code == 0, err
    return kept, {r.id: r for r in load_records(rejected)}


def test_the_teachers_malformed_decompositions_are_dropped_with_their_reason(cli, tmp_path):
    kept, rejected = teacher_run(cli, tmp_path, "socratic")
    assert {r.id for r in load_records(kept)} == {"good", "converted"}
    assert set(rejected) == set(EXPECTED)
    for rid, problem in EXPECTED.items():
        r = rejected[rid]
        assert r.reason == "malformed_decomposition" and r.samples[0].reason == "malformed_decomposition"
        assert r.samples[0].reason_detail.startswith(problem + ": "), r.samples[0].reason_detail
    # the Socratic rows: one model asks and answers its own sub-questions
    out = tmp_path / "sft.jsonl"
    code, _, err = cli("format", kept, "-o", out, "--style", "socratic", "--val-frac", "0")
    assert code == 0, err
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"good", "converted"} and {r["task"] for r in rows.values()} == {"socratic"}
    assert rows["good"]["prompt"][0]["content"] == QUESTIONS["good"][0]
    assert rows["good"]["completion"][0]["content"] == QUESTIONS["good"][2]
    converted = rows["converted"]["completion"][0]["content"]
    assert converted.startswith("Q1: ") and "\nQ2: What is 5 + 2?\nA2: Together 5 + 2 = 7.\n" in converted
    assert converted.endswith("\nThe answer is 7.")


def test_the_rule_leaves_records_of_other_prompts_alone(cli, tmp_path):
    """Labelled with the chain-of-thought prompt, nothing is a decomposition, and nothing is asked to be."""
    kept, rejected = teacher_run(cli, tmp_path, "numeric")
    assert not any(r.reason == "malformed_decomposition" for r in rejected.values())
    assert {r.id for r in load_records(kept)} >= {"converted", "unanswered", "misnumbered"}


def test_format_socratic_skips_what_filter_did_not_see(cli, tmp_path):
    """Unfiltered teacher output: format counts each malformed decomposition under its problem."""
    from kdpipe.answers import parse_completion

    def read(text):  # the answer generate reads from the whole text
        return parse_completion(text, "numeric").answer

    seeds = tmp_path / "in.jsonl"
    recs = [Record.from_dict({"id": k, "question": q, "task": "numeric", "gold": g, "provenance": {
        "teacher": {"prompt": "socratic.txt"}}, "samples": [{"index": 0, "text": t, "answer": read(t)}]})
        for k, (q, g, t) in QUESTIONS.items() if k != "converted"]
    write_records(seeds, recs)
    code, _, err = cli("format", seeds, "-o", tmp_path / "o.jsonl", "--style", "socratic", "--val-frac", "0")
    assert code == 0, err
    meta = json.loads((tmp_path / "o.jsonl.meta.json").read_text())
    assert meta["counts"]["rows"] == 1
    assert meta["counts"]["skipped"] == {f"malformed decomposition ({p})": 1 for p in EXPECTED.values()}


# ------------------------------------------------------------------ eval


def test_eval_scores_the_final_answer_and_counts_a_malformed_decomposition_wrong():
    from kdpipe.evaluate import score

    fmt = PromptFormat(style="socratic")
    recs = [Record(id=str(i), question=f"q{i}?", task="numeric", gold="6") for i in range(4)]
    texts = [GOOD,
             GOOD.replace("6.\nThe answer is 6.", "7.\nThe answer is 7."),  # well formed, wrong
             "Q1: How many trees?\nA1: 15.\nQ2: How many planted?\nThe answer is 6.",  # right answer, malformed
             "The answer is 6."]
    s, preds = score("student", "run", recs, texts, "socratic", "socratic", 1.0, fmt)
    assert [p.correct for p in preds] == [True, False, False, False]
    assert [p.answer for p in preds] == ["6", "7", None, None]
    assert [p.error for p in preds] == [None, None, "unanswered_subquestion", "no_subquestions"]
    assert s.correct == 1 and s.unparsed == 2 and s.asked_task == "socratic"


@pytest.mark.slow
@pytest.mark.parametrize("roles", ["one", "two"])
def test_a_trained_socratic_student_asks_itself_and_is_scored_on_its_final_answer(tmp_path, roles):
    """format --style socratic -> train -> eval: the student is asked the bare question (one model) or its
    question generator and solver take turns (two roles), and eval reads the decomposition with the same
    parser."""
    import sys
    from pathlib import Path

    from typer.testing import CliRunner

    from kdpipe.cli import app
    from kdpipe.format import FormatOptions, run_format

    sys.path.insert(0, str(Path(__file__).parent))
    import support_tiny as st

    recs = st.teacher_records(4)
    for r in recs:
        r.provenance = {"teacher": {"prompt": "socratic.txt"}}
        for s in r.samples:
            s.text = f"Q1: What do we know about it?\nA1: Everyone has seen it.\nThe answer is {s.answer}."
    write_records(tmp_path / "records.jsonl", recs)
    run_format(tmp_path / "records.jsonl", tmp_path / "sft.jsonl", FormatOptions(style="socratic", val_frac=1 / 6,
                                                                                       socratic_roles=roles))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in st.corpus_texts()))
    runner = CliRunner()

    def ok(*args):
        r = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.stderr

    ok("tiny-student", tmp_path / "student", "--corpus", corpus, "--vocab-size", "400", "-q")
    ok("train", tmp_path / "sft.jsonl", "-o", tmp_path / "run", "--student", tmp_path / "student", "--merge",
       "--max-steps", "60", "--batch-size", "8", "--max-length", "128", "--lr", "3e-3", "-q")
    ok("eval", st.write_eval(tmp_path / "eval.jsonl"), "--model", tmp_path / "run", "--baseline",
       tmp_path / "student", "-o", tmp_path / "eval.json", "-q")
    scores = {m["role"]: m for m in json.loads((tmp_path / "eval.json").read_text())["models"]}
    assert scores["student"]["asked_task"] == "socratic"
    assert scores["student"]["accuracy"] > scores["baseline"]["accuracy"]
    preds = [json.loads(x) for x in (tmp_path / "eval.predictions.jsonl").read_text().splitlines()]
    for p in preds:
        assert p["correct"] is (p["answer"] == p["gold"])
        assert (p["answer"] is None) is (p["error"] in PROBLEMS)  # no answer: a malformed decomposition
    assert any(p["correct"] and p["text"].lstrip().startswith("Q1:") for p in preds if p["model"] == "student")


# ------------------------------------------------------------------ two roles: question generator and solver


def test_two_roles_write_a_question_generator_row_and_a_solver_row_per_step(cli, tmp_path):
    seeds = tmp_path / "in.jsonl"
    q, g, text = QUESTIONS["good"]
    write_records(seeds, [Record.from_dict({"id": "good", "question": q, "task": "numeric", "gold": g, "provenance": {
        "teacher": {"prompt": "socratic.txt"}}, "samples": [{"index": 0, "text": text, "answer": g}]})])
    out = tmp_path / "roles.jsonl"
    code, _, err = cli("format", seeds, "-o", out, "--style", "socratic", "--socratic-roles", "two",
                       "--val-frac", "0", "--no-chat")
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by = {(r["task"], r["completion"].split(":")[0]): r for r in rows}
    assert sorted(by) == [("subanswer", "A1"), ("subanswer", "A2"), ("subquestion", "Q1"), ("subquestion", "Q2")]
    assert by[("subquestion", "Q1")]["prompt"] == f"ask: {q}\n"
    assert by[("subquestion", "Q2")]["prompt"] == f"ask: {q}\nQ1: How many apples did Tom have?\nA1: He had 3.\n"
    assert by[("subanswer", "A2")]["prompt"] == (f"solve: {q}\nQ1: How many apples did Tom have?\nA1: He had 3.\n"
                                                 "Q2: How many after buying 4?\n")
    assert by[("subanswer", "A2")]["completion"] == "A2: 3 + 4 = 7.\nThe answer is 7."
    code, _, err = cli("format", seeds, "-o", out, "--style", "cot", "--socratic-roles", "two")
    assert code == 2 and "--socratic-roles two goes with --style socratic" in err
    code, _, err = cli("format", seeds, "-o", out, "--style", "socratic", "--socratic-roles", "two", "--icl-shots", "1")
    assert code == 2 and "--icl-shots does not go with --socratic-roles two" in err


class Roles:
    """Stands in for a two-role student: answers each role's prompt from a script of decompositions, as a
    student that learnt them would; `generator_says` replaces what the generator writes."""

    def __init__(self, steps, final, generator_says=None):
        self.steps, self.final, self.generator_says, self.calls = steps, final, generator_says, 0

    def __call__(self, prompts):
        self.calls += 1
        out = []
        for p in prompts:
            done = p.count("\nA")
            if p.startswith("ask: "):
                out.append(self.generator_says or f"Q{done + 1}: {self.steps[done % len(self.steps)][0]}\nA{done + 1}:")
            else:
                tail = f"\n{self.final}" if self.final and done + 1 == len(self.steps) else ""
                out.append(f"A{done + 1}: {self.steps[done % len(self.steps)][1]}{tail}\nQ{done + 2}: run-on?")
        return out


def test_eval_runs_the_roles_in_turn_until_a_final_answer():
    from kdpipe.local_answers import read_answer
    from kdpipe.socratic_roles import MAX_STEPS, ask_in_roles

    fmt = PromptFormat(style="socratic", socratic_roles="two", chat=False)
    rec = Record(id="r", question="Tom has 3 apples and buys 4 more. How many?", task="numeric", gold="7")
    steps = [("How many at first?", "3."), ("How many after buying 4?", "3 + 4 = 7.")]
    finishing = Roles(steps, "The answer is 7.")
    [text] = ask_in_roles(fmt, [rec], finishing)
    assert text == "Q1: How many at first?\nA1: 3.\nQ2: How many after buying 4?\nA2: 3 + 4 = 7.\nThe answer is 7."
    assert finishing.calls == 4 and read_answer(text, "socratic", rec, fmt) == ("7", None)
    # a generator that writes no sub-question: one turn, then the malformed transcript is scored wrong
    [text] = ask_in_roles(fmt, [rec], Roles(steps, "The answer is 7.", generator_says="I do not know."))
    assert read_answer(text, "socratic", rec, fmt) == (None, "no_subquestions")
    # a solver that never states a final answer: stopped after MAX_STEPS turns
    endless = Roles(steps, None)
    [text] = ask_in_roles(fmt, [rec], endless)
    assert endless.calls == 2 * MAX_STEPS and read_answer(text, "socratic", rec, fmt) == (None, "no_final_answer")
