"""How answers are read and compared: a regression suite of student outputs with their expected reading.

Each row is an output a student (or teacher) really writes: run-on text after the answer,
echoed prompts, several "answer is" sentences, reasoning blocks, numbers in many forms.
The same rules serve `generate`, `filter` and `eval` (kdpipe/answers.py, kdpipe/numbers.py).
"""

from __future__ import annotations

import json

import pytest

from kdpipe import answers
from kdpipe.errors import InputError
from kdpipe.evaluate import read_answer
from kdpipe.prompt_format import PromptFormat
from kdpipe.records import Record, Sample, read_records, write_records

COT = PromptFormat(style="cot")
LABEL = PromptFormat(style="label")
NUM = Record(id="n", question="What is 56 - 18?", task="numeric", gold="38")
CHOICE = Record(id="c", question="Which colour is the sky?", task="choice", choices=["red", "blue", "green"],
                gold="blue")


# (completion, asked task, record, expected answer or None for no answer)
STUDENT_OUTPUTS = [
    # several answer sentences: the first complete one is the student's
    ("56 - 18 = 37. The answer is 37.\nQ: What is 3 + 3? 3 + 3 = 6. The answer is 38.", "cot", NUM, "37"),
    ("56 - 18 = 38. The answer is 38.\nQ: What is 3 + 3? 3 + 3 = 6. The answer is 37.", "cot", NUM, "38"),
    ("56 - 18 = 38. The answer is 38. The answer is 40.", "cot", NUM, "38"),
    ("56 - 18 = 37. The answer is 37. Wait, the answer is 38.", "cot", NUM, "37"),
    ("The answer is not clear yet. 56 - 18 = 38. The answer is 38.", "cot", NUM, "38"),
    ("So the sky is blue. The answer is (b) blue.\nQ: Which colour is grass?\nThe answer is (c) green.",
     "cot", CHOICE, "blue"),
    # run-on text after an answer-only completion
    ("38\nQ: What is 2 + 2?\nA: 4", "label", NUM, "38"),
    ("38\n\nWhat is 7 + 8?\n15", "label", NUM, "38"),
    ("(b) blue\n(c) green", "label", CHOICE, "blue"),
    # echoed prompts
    ("What is 56 - 18?\n38", "label", NUM, "38"),
    ("What is 56 - 18? 56 - 18 = 38. The answer is 38.", "cot", NUM, "38"),
    ("Q: What is 56 - 18?\nA: 56 - 18 = 38. The answer is 38.", "cot", NUM, "38"),
    # reasoning blocks (Qwen3's empty one, a real one, an unclosed one, R1's opened in the prompt)
    ("<think>\n\n</think>\n\n38", "label", NUM, "38"),
    ("<think>\n56 - 18 is 38, the answer is 40? no.\n</think>\n\nThe answer is 38.", "cot", NUM, "38"),
    ("<think>\nThe answer is 38", "cot", NUM, None),
    ("56 - 18: the answer is 39? No, 38.\n</think>\n\nThe answer is 38.", "cot", NUM, "38"),
    ("<think>\n\n</think>\n\n(b) blue", "label", CHOICE, "blue"),
    # numbers in many forms
    ("−38", "label", NUM, "-38"),
    ("The answer is −38.", "cot", NUM, "-38"),
    ("3,8", "label", NUM, None),
    ("The answer is 3,8.", "cot", NUM, None),
    ("1,234", "label", NUM, "1234"),
    ("The answer is $1,234.50.", "cot", NUM, "1234.5"),
    ("The answer is 1,234,567.", "cot", NUM, "1234567"),
    ("12,34", "label", NUM, None),
    ("56 - 18", "label", NUM, None),
    ("The answer is 56 - 18.", "cot", NUM, None),
    ("The answer is 56 - 18 = 38.", "cot", NUM, "38"),
    ("The answer is 38 (56 - 18).", "cot", NUM, "38"),
    ("The answer is 38 apples.", "cot", NUM, "38"),
    ("38.0", "label", NUM, "38"),
    ("+38", "label", NUM, "38"),
    ("3/4", "label", NUM, "0.75"),
    ("½", "label", NUM, "0.5"),
    ("50%", "label", NUM, "50"),
    ("(13 * 3)", "label", NUM, "39"),
    ("The answer is 2.5.", "cot", NUM, "2.5"),
    ("The answer is 12345678901234567891.", "cot", NUM, "12345678901234567891"),
    ("2.5e3", "label", NUM, "2500"),
    ("The answer is (2)**3 apples.", "cot", NUM, "8"),
    ("The answer is 2 ** 3.", "cot", NUM, None),
]


@pytest.mark.parametrize("text, asked, record, expected", STUDENT_OUTPUTS)
def test_student_outputs_read_as_expected(text, asked, record, expected):
    fmt = COT if asked == "cot" else LABEL
    answer, error = read_answer(text, asked, record, fmt)
    assert answer == expected, (text, error)
    assert (error is None) == (expected is not None)


@pytest.mark.parametrize("text, expected", [
    ("56 - 18 = 37. The answer is 37.\nQ: What is 3 + 3? The answer is 38.", "37"),
    ("56 - 18 = 37. The answer is 37. Then the answer is 38.", "37"),
    ("<think>\nhmm\n</think>\n\nThe answer is −38.", "-38"),
    ("The answer is 56 - 18.", None),
    ("The answer is 3,8.", None),
])
def test_teacher_completions_follow_the_same_rules(text, expected):
    assert answers.parse_completion(text, "numeric").answer == expected


def test_an_answer_beats_a_sentence_that_only_names_an_option():
    """CQA rationales open with "The answer should be the …": the sentence names an option, the
    answer comes later."""
    choices = ["being judged", "hurt feelings", "go to jail", "feeling guilty", "apologetic"]
    text = ("The answer should be the feeling of someone who has done wrong and is being judged. Of the "
            "above choices, the closest feeling is feeling guilty. So the answer is (d) feeling guilty.")
    assert answers.parse_completion(text, "choice", choices).answer == "feeling guilty"
    assert answers.parse_completion("I think the answer is being judged, surely.", "choice",
                                    choices).answer == "being judged"


def test_integers_are_compared_exactly_and_non_integers_within_the_tolerance():
    assert not answers.answers_agree("250020", "250000", "numeric")
    assert not answers.answers_agree("123460", "123456", "numeric")
    assert not answers.answers_agree("12345678901234567891", "12345678901234567890", "numeric")
    assert answers.answers_agree("42.0", "42", "numeric")
    assert answers.answers_agree("0.333333", "(1 / 3)", "numeric")
    assert answers.answers_agree("42.000001", "42", "numeric")
    assert not answers.answers_agree("0.3334", "0.3", "numeric")


def test_big_integers_stay_exact():
    big = "123456789012345678901234567890"
    assert answers.canonical_answer(big, "numeric") == big
    assert answers.canonical_answer(12345678901234567891, "numeric") == "12345678901234567891"
    assert answers.canonical_answer("(2**70)", "numeric") == str(2 ** 70)
    assert answers.answer_key("9007199254740993", "numeric") != answers.answer_key("9007199254740992", "numeric")


@pytest.mark.parametrize("expr", ["999999**64", "(999999**64)", "(999999 ** 64) * 3", "(10**400) / 3",
                                  "(2 ** 0.5) ** 99999", "9" * 5000, "(-8) ** (1 / 3)",
                                  "1" * 5000 + "/3", "3/" + "1" * 5000, "(" + "1" * 150 + ")**30", "1e308*10"])
def test_arithmetic_never_overflows_into_a_traceback(expr):
    assert answers.safe_eval(expr) is None or isinstance(answers.safe_eval(expr), (int, float))
    assert answers.canonical_answer(expr, "numeric") is None or answers.canonical_answer(expr, "numeric")
    answers.parse_completion(f"So it is big. The answer is {expr}.", "numeric")


def test_numeric_options_are_matched_as_text_before_an_index():
    options = ["2", "4", "0"]
    assert answers.canonical_answer(2, "choice", options) == "2"
    assert answers.canonical_answer("2", "choice", options) == "2"
    assert answers.canonical_answer(1, "choice", ["red", "blue"]) == "blue"  # an index when no text matches


def test_filter_compares_integers_exactly(tmp_path):
    from kdpipe.filter import FilterOptions, run_filter

    recs = [Record(id=f"r{i}", question=f"What is {i}?", task="numeric", gold=gold, samples=[
        Sample(index=0, text=f"Work {i}. The answer is {pred}.", rationale=f"Work {i} out step by step carefully.",
               answer=pred)]) for i, (pred, gold) in enumerate([("250020", "250000"), ("38", "38"),
                                                               ("0.333333", "0.3333333")])]
    write_records(tmp_path / "in.jsonl", recs)
    run_filter(tmp_path / "in.jsonl", tmp_path / "out.jsonl", FilterOptions(), rejected=tmp_path / "rej.jsonl")
    kept = {r.id for r in read_records(tmp_path / "out.jsonl")}
    rejected = {r.id: r.reason for r in read_records(tmp_path / "rej.jsonl")}
    assert "r0" in rejected and "gold" in str(rejected["r0"])
    assert {"r1", "r2"} <= kept


def test_more_options_than_letters_is_a_one_line_error(tmp_path, cli):
    src = tmp_path / "q.jsonl"
    src.write_text(json.dumps({"question": "Pick one", "choices": [f"option {i}" for i in range(30)],
                               "answer": "option 3"}) + "\n")
    code, _, err = cli("seed", src, "-o", tmp_path / "seed.jsonl")
    assert code != 0 and "30 options" in err and "Traceback" not in err
    assert not (tmp_path / "seed.jsonl").exists()
    bad = tmp_path / "records.jsonl"
    bad.write_text(json.dumps({"id": "x", "question": "Pick one", "task": "choice",
                               "choices": [str(i) for i in range(27)]}) + "\n")
    with pytest.raises(InputError) as e:
        list(read_records(bad))
    assert "27 options" in str(e.value)
