import pytest

from kdpipe import answers


@pytest.mark.parametrize("text, value", [
    ("42", 42), ("42.0", 42), ("$42", 42), ("(84 / 2)", 42), ("( 84.0 / 2.0 )", 42),
    ("1,200", 1200), ("50%", 50), ("3 apples", 3), ("-7.5", -7.5), ("(16 * 17) * 4", 1088), ("(2^3)", 8),
])
def test_to_number(text, value):
    assert answers.to_number(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "abc", "3 and 4", "__import__('os')", "9**9**9", "1/0", "x" * 300])
def test_to_number_refuses_what_is_not_one_number(text):
    assert answers.to_number(text) is None


def test_numeric_agreement_uses_tolerance():
    for pred in ["42", "42.0", "$42", "(84 / 2)", "42.000001"]:
        assert answers.answers_agree(pred, "42", "numeric")
    assert not answers.answers_agree("43", "42", "numeric")
    assert answers.canonical_answer("( 84.0 / 2.0 )", "numeric") == "42"
    assert answers.canonical_answer("1/3", "numeric") == "0.333333"


def test_choice_agreement_by_letter_or_text():
    choices = ["park", "coloring book", "garden center", "math problem", "gravity"]
    for pred in ["(d) math problem", "d", "(D)", "Math problem.", "D) math problem"]:
        assert answers.answers_agree(pred, "math problem", "choice", choices), pred
    assert not answers.answers_agree("(a) park", "math problem", "choice", choices)
    # When the letter contradicts the option text, the text decides.
    assert answers.match_choice("(a) math problem", choices) == 3
    # Repeated options count as one.
    dup = ["bus depot", "beach", "train station", "bridge", "bridge"]
    assert answers.answers_agree("(e) bridge", "bridge", "choice", dup)


def test_text_agreement_normalizes():
    assert answers.answers_agree("The Eiffel Tower.", "eiffel tower", "text")
    assert not answers.answers_agree("Louvre", "eiffel tower", "text")


def test_vote_keys_collide_for_agreeing_answers():
    assert answers.answer_key("(84 / 2)", "numeric") == answers.answer_key("42.0", "numeric")
    assert answers.answer_key("(b)", "choice", ["x", "y"]) == answers.answer_key("y", "choice", ["x", "y"])
