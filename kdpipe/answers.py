"""Answers: canonical forms and comparison, one place for every stage.

`seed` canonicalises gold answers, `generate` canonicalises what it parses
from the teacher, `filter` and `eval` compare with `answers_agree`. Keeping the
rules here means a student is scored by exactly the rule its data was
filtered with.

Canonical forms:
    numeric  the number as a short decimal string: "42", "0.5", "-3.25"
    choice   the text of the chosen option, exactly as in `choices`
    text     the answer as given, stripped
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
import string
import unicodedata
from dataclasses import dataclass

LETTERS = string.ascii_lowercase

# ------------------------------------------------------------------ numbers

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_MAX_EXPR_CHARS = 200


def safe_eval(expr: str) -> float | None:
    """Evaluate plain arithmetic ("(84 / 2) * 3", "2^3") without `eval`.

    Only numbers, + - * / // % ** and parentheses; None for anything else,
    for division by zero and for results too large to be an answer.
    """
    expr = expr.strip().replace("×", "*").replace("÷", "/").replace("^", "**")
    expr = re.sub(r"(?<=\d),(?=\d{3}\b)", "", expr)
    if not expr or len(expr) > _MAX_EXPR_CHARS:
        return None
    try:
        tree = ast.parse(expr, mode="eval")
        value = _eval_node(tree.body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError, RecursionError):
        return None
    if value is None or isinstance(value, complex):
        return None
    try:  # an int past float's range (999999**64) is no answer either
        return float(value) if math.isfinite(value) else None
    except OverflowError:
        return None


def _eval_node(node):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
            raise ValueError("exponent too large")
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval_node(node.operand))
    raise ValueError("not arithmetic")


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_CURRENCY = re.compile(r"[$€£¥₹]")


def to_number(text: str | float | int | None) -> float | None:
    """Read a number from an answer: "42", "42.0", "$1,200", "(84 / 2)", "50%", "3 apples".

    An arithmetic expression is evaluated; otherwise, when the text holds
    exactly one number, that number. None when there is no single reading.
    """
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text) if math.isfinite(text) else None
    s = unicodedata.normalize("NFKC", str(text)).strip().rstrip(".").strip()
    s = _CURRENCY.sub("", s).replace("%", "").strip()
    if not s:
        return None
    value = safe_eval(s)
    if value is not None:
        return value
    numbers = _NUMBER.findall(s)
    if len(numbers) == 1:
        try:
            return float(numbers[0].replace(",", ""))
        except ValueError:
            return None
    return None


def format_number(value: float) -> str:
    """The canonical string of a number: no trailing zeros, at most 6 decimals."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def numbers_agree(a: float, b: float, rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)


# ------------------------------------------------------------------ text and choices

ARTICLES = frozenset(("a", "an", "the"))  # dropped by normalize_text (and the filter's word lists)
_ARTICLES = re.compile(r"\b(" + "|".join(sorted(ARTICLES)) + r")\b")
_PUNCT = re.compile(r"[^\w\s]")


def normalize_text(text: str) -> str:
    """Casefold, drop punctuation and articles, collapse whitespace."""
    s = unicodedata.normalize("NFKC", text).casefold()
    s = _PUNCT.sub(" ", s)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


_LETTER_ONLY = re.compile(r"^\(?([a-zA-Z])[\).:]?$")
_LETTER_PREFIX = re.compile(r"^\(([a-zA-Z])\)\s*(.*)$|^([a-zA-Z])[\).:]\s+(.*)$")


def match_choice(answer: str, choices: list[str]) -> int | None:
    """Index of the option an answer names: by letter "(c)", "C", "c)" or by text."""
    s = answer.strip().rstrip(".").strip()
    if not s:
        return None
    norm_choices = [normalize_text(c) for c in choices]
    by_text = _index_of(normalize_text(s), norm_choices)
    if by_text is not None:
        return by_text
    m = _LETTER_ONLY.match(s)
    if m:
        i = LETTERS.index(m.group(1).lower())
        return i if i < len(choices) else None
    m = _LETTER_PREFIX.match(s)
    if m:
        letter = (m.group(1) or m.group(3)).lower()
        rest = m.group(2) if m.group(1) else m.group(4)
        i = LETTERS.index(letter)
        if i < len(choices):
            # "(d) math problem": letter and text must not contradict each other.
            rest_i = _index_of(normalize_text(rest), norm_choices)
            if rest_i is None or rest_i == i:
                return i
        return _index_of(normalize_text(rest), norm_choices)
    return None


def _index_of(norm: str, norm_choices: list[str]) -> int | None:
    # Datasets repeat options ("bridge", "bridge"): the first of equal texts stands for all.
    return norm_choices.index(norm) if norm in norm_choices else None


# ------------------------------------------------------------------ canonical form and agreement


def canonical_answer(raw, task: str, choices: list[str] | None = None) -> str | None:
    """The canonical string of an answer for a task type, or None if it has none."""
    if raw is None:
        return None
    if task == "numeric":
        value = to_number(raw)
        return None if value is None else format_number(value)
    text = str(raw).strip()
    if task == "choice":
        if isinstance(raw, int) and not isinstance(raw, bool) and choices and 0 <= raw < len(choices):
            return choices[raw]
        i = match_choice(text, choices or [])
        return None if i is None else choices[i]
    return text or None


def answers_agree(pred: str | None, gold: str | None, task: str, choices: list[str] | None = None,
                  rel_tol: float = 1e-4) -> bool:
    """Whether a predicted answer matches the gold answer under the task's rule.

    numeric: equal as numbers within a relative tolerance; choice: the same
    option by letter or normalized text; text: equal after normalization.
    """
    if pred is None or gold is None:
        return False
    if task == "numeric":
        a, b = to_number(pred), to_number(gold)
        return a is not None and b is not None and numbers_agree(a, b, rel_tol=rel_tol)
    if task == "choice":
        a, b = match_choice(pred, choices or []), match_choice(gold, choices or [])
        return a is not None and b is not None and _same_option(a, b, choices)
    return normalize_text(pred) == normalize_text(gold)


def _same_option(a: int, b: int, choices: list[str]) -> bool:
    return a == b or normalize_text(choices[a]) == normalize_text(choices[b])


def answer_key(answer: str | None, task: str, choices: list[str] | None = None) -> str | None:
    """A key under which agreeing answers collide (for majority votes)."""
    if answer is None:
        return None
    if task == "numeric":
        value = to_number(answer)
        # Round so that 0.333333 and 0.3333333 vote together.
        return None if value is None else format_number(round(value, 4))
    if task == "choice":
        i = match_choice(answer, choices or [])
        return None if i is None else normalize_text(choices[i])
    return normalize_text(answer) or None


# ------------------------------------------------------------------ parsing completions


@dataclass
class Parsed:
    """A completion split into rationale and canonical answer, or the reason it could not be."""

    rationale: str | None
    answer: str | None
    error: str | None = None  # one of records.SAMPLE_ERRORS
    detail: str | None = None


# An invented next few-shot example: the completion ran on past its answer.
_NEXT_EXAMPLE = re.compile(
    r"\n\s*(?:Q|Question|Premise|Problem|Input|Example|Answer Choices)\s*\d*\s*:", re.I)
# "So the", "Therefore, my": words that belong to the answer sentence, not the rationale.
_LEAD_IN = r"(?:\b(?:so|therefore|thus|hence)\s*,?\s+)?(?:\b(?:the|my|our)\s+)?"
# Answer markers, strongest first; the span after the marker is the answer.
_MARKERS = (
    ("boxed", re.compile(r"\\boxed\{")),
    ("final", re.compile(_LEAD_IN + r"\**final answer\**\s*(?:is)?\s*[:\-]?\s*\**\s*", re.I)),
    ("answer_is", re.compile(_LEAD_IN + r"\banswer\s+(?:is|would be|will be|should be)\s*:?\s*\**\s*", re.I)),
    ("answer_colon", re.compile(r"(?:^|\n)\s*[#*_]*\s*answer\s*[#*_]*\s*:\s*[*_]*\s*", re.I)),
)
_REFUSAL = re.compile(
    r"\b(?:I\s+(?:can(?:no|')t|am\s+(?:not\s+able|unable)|won't|don't\s+know|do\s+not\s+know|"
    r"'m\s+(?:not\s+able|unable|sorry))|as\s+an\s+AI\b|I\s+am\s+sorry|I\s+apologi[sz]e)", re.I)
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n")
_ARITH_PREFIX = re.compile(r"[\d\s.,+\-*/()×÷^]*\d[\d\s.,+\-*/()×÷^]*")
_JSON_ANSWER_KEYS = ("final_answer", "answer", "label", "prediction")
_JSON_RATIONALE_KEYS = ("rationale", "reasoning", "explanation", "thought", "steps")


def parse_completion(text: str | None, task: str, choices: list[str] | None = None) -> Parsed:
    """Split a completion into rationale and canonical final answer.

    Understands "The answer is X", "So the answer is (c) text", "Answer: X",
    "**Final answer:** X", "\\boxed{X}", a JSON object with an "answer" field,
    and arithmetic answers for numeric tasks ("(84 / 2)", evaluated without
    `eval`). Text after the answer that starts an invented next example
    ("\\n\\nQ: ...") is ignored, so its answer is never taken. A completion
    with no answer is "refusal" when it declines, else "unparseable".
    """
    if text is None or not text.strip():
        return Parsed(None, None, "empty", "no text")
    parsed = _parse_json(text, task, choices)
    if parsed is not None:
        return parsed
    body = _drop_invented_examples(text)
    found = _find_marker(body)
    if found is None:
        rationale = body.strip() or None
        if _REFUSAL.search(body):
            return Parsed(rationale, None, "refusal", "the teacher declined to answer")
        return Parsed(rationale, None, "unparseable", "no answer marker")
    start, span = found
    rationale = body[:start].strip() or None
    answer = _canonical_span(span, task, choices)
    if answer is None:
        return Parsed(rationale, None, "unparseable", f"answer {span[:80]!r} is not a {task} answer")
    return Parsed(rationale, answer)


def runs_on(text: str) -> bool:
    """Whether a completion carries on past its answer into an invented next example."""
    return _drop_invented_examples(text) != text


def _drop_invented_examples(text: str) -> str:
    # Keep everything up to the first invented example, unless that would leave no answer
    # (a completion that starts with "Q:" restating the question).
    for m in _NEXT_EXAMPLE.finditer(text):
        head = text[: m.start()]
        if head.strip():
            return head
    return text


def _find_marker(body: str) -> tuple[int, str] | None:
    """(start of the marker, answer span) of the strongest, last answer marker."""
    for kind, pattern in _MARKERS:
        matches = list(pattern.finditer(body))
        if not matches:
            continue
        m = matches[-1]
        if kind == "boxed":
            span = _braced(body, m.end())
        else:
            span = _first_sentence(body[m.end():])
        if span and span.strip(" *_.:"):
            return m.start(), span
    return None


def _braced(text: str, i: int) -> str:
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i: j - 1] if depth == 0 else text[i:]


def _first_sentence(rest: str) -> str:
    m = _SENTENCE_END.search(rest)
    span = rest[: m.start()] if m else rest
    return span.strip().strip("*_`\"' ").rstrip(".").strip()


def _canonical_span(span: str, task: str, choices: list[str] | None) -> str | None:
    span = re.sub(r"\\boxed\{(.*)\}", r"\1", span).replace("\\$", "$").strip()
    if task == "numeric":
        for candidate in _numeric_candidates(span):
            answer = canonical_answer(candidate, task)
            if answer is not None:
                return answer
        return None
    if task == "choice" and choices:
        answer = canonical_answer(span, task, choices)
        if answer is not None:
            return answer
        # "(c) garden center, because ..." or "c) garden center": the letter leads.
        m = re.match(r"^\(?([a-zA-Z])\)", span)
        if m and LETTERS.index(m.group(1).lower()) < len(choices):
            return choices[LETTERS.index(m.group(1).lower())]
        # The option's text inside a longer answer, when exactly one option is named.
        norm = f" {normalize_text(span)} "
        hits = {normalize_text(c) for c in choices if f" {normalize_text(c)} " in norm}
        if len(hits) == 1:
            return canonical_answer(hits.pop(), task, choices)
        return None
    return canonical_answer(span, "text")


def _numeric_candidates(span: str):
    yield span
    if "=" in span:  # "84 / 2 = 42"
        yield span.rsplit("=", 1)[1]
    m = _ARITH_PREFIX.match(span.replace("$", ""))
    if m:  # "(16 * 17) * 4 pieces of mail"
        yield m.group(0)
    numbers = _NUMBER.findall(span)
    if numbers:  # "42 apples and 3 pears" names 42 first
        yield numbers[0]


def _parse_json(text: str, task: str, choices: list[str] | None) -> Parsed | None:
    s = text.strip()
    fenced = re.match(r"^```(?:json)?\s*(.*?)\s*```$", s, re.S)
    if fenced:
        s = fenced.group(1)
    if not (s.startswith("{") and s.endswith("}")):
        return None
    try:
        obj = json.loads(s)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    key = next((k for k in _JSON_ANSWER_KEYS if k in obj), None)
    if key is None:
        return None
    rationale = next((obj[k] for k in _JSON_RATIONALE_KEYS if k in obj), None)
    if isinstance(rationale, list):
        rationale = "\n".join(map(str, rationale))
    rationale = str(rationale).strip() if rationale is not None else None
    raw = obj[key]
    answer = None if raw is None else _canonical_span(str(raw), task, choices)
    if answer is None:
        return Parsed(rationale or None, None, "unparseable", f"JSON answer {raw!r} is not a {task} answer")
    return Parsed(rationale or None, answer)
