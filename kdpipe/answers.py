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
    if value is None or isinstance(value, complex) or not math.isfinite(value):
        return None
    return float(value)


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

_ARTICLES = re.compile(r"\b(a|an|the)\b")
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


_ANSWER_IS = re.compile(r"(?:the )?answer is[:\s]*(.+?)(?:\.\s*$|\.\s*\n|\n|$)", re.I)


def parse_completion(text: str | None, task: str, choices: list[str] | None = None) -> Parsed:
    """Split a completion into rationale and final answer ("... The answer is X.")."""
    if text is None or not text.strip():
        return Parsed(None, None, "empty", "no text")
    m = None
    for m in _ANSWER_IS.finditer(text):
        break
    if m is None:
        return Parsed(text.strip(), None, "unparseable", "no answer marker")
    answer = canonical_answer(m.group(1).strip(), task, choices)
    rationale = text[: m.start()].strip() or None
    if answer is None:
        return Parsed(rationale, None, "unparseable", f"answer {m.group(1).strip()!r} is not a {task} answer")
    return Parsed(rationale, answer)
