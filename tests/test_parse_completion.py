"""parse_completion on the shapes real teachers (and students) write, and on recorded PaLM outputs."""

import pytest

from kdpipe.answers import parse_completion
from support_parse import palm_rows, palm_scores

CHOICES = ["park", "coloring book", "garden center", "math problem", "gravity"]


@pytest.mark.parametrize("text, answer", [
    ("Luke scored 84 points in 2 rounds. 84 / 2 = 42. The answer is (84 / 2).", "42"),
    ("So he has 3.5 apples. The answer is 3.5.", "3.5"),
    ("16 * 17 = 272, times 4. The answer is (16 * 17) * 4.\n\nQ: next", "1088"),
    ("Step 1.\nAnswer: 42", "42"),
    ("Some work.\n**Final answer:** $1,200", "1200"),
    ("Compute it: $\\boxed{\\frac12}$ no; so $\\boxed{12}$.", "12"),
    ('{"rationale": "84 / 2 = 42", "answer": "42"}', "42"),
    ('```json\n{"reasoning": ["a", "b"], "final_answer": 7}\n```', "7"),
    ("He spent 5 + 3 = 8. The answer is 8 dollars.", "8"),
    ("So the total is 84 / 2 = 42. The final answer is x = 42.", "42"),
    ("The answer is -3.25.", "-3.25"),
])
def test_numeric_shapes(text, answer):
    p = parse_completion(text, "numeric")
    assert (p.answer, p.error) == (answer, None)


def test_rationale_is_the_text_before_the_answer():
    p = parse_completion("84 / 2 = 42.\nThe answer is 42.\n\nQ: Tom has 3 cats.\nA: The answer is 3.", "numeric")
    assert p.rationale == "84 / 2 = 42."
    assert p.answer == "42"


def test_invented_next_example_answer_is_never_taken():
    text = "Luke scored 84 points. So he scored 84 points in 2 rounds.\n\nQ: Tom has 3 cats.\nA: The answer is 3."
    p = parse_completion(text, "numeric")
    assert p.answer is None and p.error == "unparseable"


@pytest.mark.parametrize("text, answer", [
    ("Only math problem fits. So the answer is (d) math problem.\n\nQ: x\nAnswer Choices:\n(a) y", "math problem"),
    ("So the answer is (c).", "garden center"),
    ("Answer: gravity", "gravity"),
    ("The answer is (c) garden center, because plants are sold there.", "garden center"),
    ("I would say the answer is math problem since it counts apples.", "math problem"),
])
def test_choice_shapes(text, answer):
    p = parse_completion(text, "choice", CHOICES)
    assert (p.answer, p.error) == (answer, None)


def test_two_options_named_is_unparseable():
    p = parse_completion("So the answer is either (a) park or (e) gravity.", "choice", CHOICES)
    assert p.answer is None and p.error == "unparseable"


@pytest.mark.parametrize("text, error", [
    ("", "empty"), ("   \n", "empty"), (None, "empty"),
    ("I don't know.", "refusal"),
    ("I'm sorry, but I can't help with that request.", "refusal"),
    ("As an AI language model, I cannot answer this.", "refusal"),
    ("Luke scored many points and then some more", "unparseable"),
    ("The answer is banana.", "unparseable"),
])
def test_failures_carry_a_reason(text, error):
    p = parse_completion(text, "numeric")
    assert p.answer is None and p.error == error and p.detail


def test_student_output_shape_for_text_task():
    p = parse_completion("Paris is the capital of France.\nThe answer is Paris.", "text")
    assert (p.rationale, p.answer) == ("Paris is the capital of France.", "Paris")


# The recorded PaLM-540B outputs: the parser should find PaLM's answer wherever it wrote one,
# so agreement with gold is bounded by PaLM's own accuracy (the paper's parsers: svamp 73.5%/74.0%,
# cqa 74.26%/77.23%). Counts measured with this parser are the floors. SVAMP train: five outputs
# that state no single number ("((28 - 13) and (28 - 15))", a cut "(9 + 6") have no answer, and two
# answers 22 and 78 away from gold no longer agree with it through the tolerance (integers compare exactly).
@pytest.mark.parametrize("dataset, split, min_parsed, min_correct", [
    ("svamp", "train", 784, 595), ("svamp", "test", 198, 156),
    ("cqa", "train", 9560, 7390), ("cqa", "test", 1205, 963),
])
def test_recorded_palm_outputs(shared_data, dataset, split, min_parsed, min_correct):
    s = palm_scores(shared_data, dataset, split)
    assert s["parsed"] >= min_parsed and s["correct"] >= min_correct, s


def test_recorded_outputs_without_an_answer_get_reasons(shared_data):
    for text, task, choices, _ in palm_rows(shared_data, "svamp", "train"):
        p = parse_completion(text, task, choices)
        assert (p.answer is None) == (p.error is not None)
