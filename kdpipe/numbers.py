"""Numbers in answers: how they are read, written and compared (answers.py uses these rules).

Integers stay Python ints from reading to comparison, so an answer of twenty
digits is never rounded through a float; non-integers are floats. Integers
are compared exactly; a relative tolerance applies only when one side is not
an integer (1/3 written as 0.333333).

What reads as a number:
    "42", "+42", "-42", "−42" (Unicode minus), "42.0" (the integer 42), ".5", "$1,200", "1,234,567.5",
    "50%", "3/4", "2.5e3", "3 apples" (the one number in the text)
and what does not:
    "3,8" and "12,34" (a comma that is not a thousands separator), "3 and 4" (two numbers),
    "56 - 18" (a bare expression: more often a restated question, a score or a range than a result).
An arithmetic expression reads as its value when it opens with a parenthesis, the
convention of the PaLM rationales: "(84 / 2)" is 42, "(16 * 17) * 4" is 1088.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import unicodedata
from fractions import Fraction

Number = int | float

_MAX_EXPR_CHARS = 200
# A result (or intermediate value) past this many bits is no answer: 999999**64 has 1276.
_MAX_BITS = 4096
_MAX_DIGITS = 1000

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_CURRENCY = re.compile(r"[$€£¥₹]")
# Signs and separators NFKC leaves alone: the minus sign, the fraction slash ("½" -> "1⁄2").
_SIGNS = str.maketrans({"\u2212": "-", "\u2044": "/"})
# A number token: digits with commas (checked by _GROUPED afterwards), an optional decimal part.
_TOKEN = re.compile(r"(?<![\w.])[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d{1,3}(?!\d))?")
_GROUPED = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d{1,3})?")
_FRACTION = re.compile(r"([-+]?\d+)/(\d+)")
_OPENS_WITH_EXPRESSION = re.compile(r"\(*\s*[-+]?[\d.,]*\d(?:[eE][-+]?\d+)?\)*\s*(?:\*\*|[-+*/×÷^])\s*[-+]?[\d(.]")


class _TooBig(ValueError):
    pass


def clean(text: str) -> str:
    """An answer's text with Unicode forms, currency signs, percent and the final period dropped."""
    s = unicodedata.normalize("NFKC", text).translate(_SIGNS).strip().rstrip(".").strip()
    return _CURRENCY.sub("", s).replace("%", "").strip()


def safe_eval(expr: str) -> Number | None:
    """Evaluate plain arithmetic ("(84 / 2) * 3", "2^3") exactly, without `eval`.

    Only numbers, + - * / // % ** and parentheses; None for anything else, for
    division by zero and for results too large to be an answer.
    """
    expr = clean(expr).replace("×", "*").replace("÷", "/").replace("^", "**")
    if not expr or len(expr) > _MAX_EXPR_CHARS:
        return None
    expr = _GROUPS_IN_TEXT.sub(lambda m: m.group(0).replace(",", ""), expr)
    try:
        value = _eval_node(ast.parse(expr, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError, RecursionError, MemoryError):
        return None
    return _as_number(value)


_GROUPS_IN_TEXT = re.compile(r"(?<![\d,])\d{1,3}(?:,\d{3})+(?![\d,])")


def _eval_node(node) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        # repr gives back the literal as written ("0.1"), so the Fraction is exact.
        return Fraction(node.value) if type(node.value) is int else Fraction(repr(node.value))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _power(_eval_node(node.left), _eval_node(node.right))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _bounded(_BINOPS[type(node.op)](_eval_node(node.left), _eval_node(node.right)))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval_node(node.operand))
    raise ValueError("not arithmetic")


def _power(base: Fraction, exp: Fraction) -> Fraction:
    if exp.denominator == 1:
        size = max(base.numerator.bit_length(), base.denominator.bit_length())
        if size * abs(exp.numerator) > _MAX_BITS:
            raise _TooBig("power too large")
        return base ** exp.numerator
    value = float(base) ** float(exp)
    if isinstance(value, complex) or not math.isfinite(value):
        raise ValueError("not a real number")
    return Fraction(value)


def _bounded(value: Fraction) -> Fraction:
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > _MAX_BITS:
        raise _TooBig("value too large")
    return value


def _as_number(value: Fraction) -> Number | None:
    if value.denominator == 1:
        return int(value.numerator)
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _token_value(token: str) -> Number | None:
    token = token.rstrip(",")
    if len(token) > _MAX_DIGITS or not _GROUPED.fullmatch(token):
        return None
    try:
        return _as_number(Fraction(token.replace(",", "")))
    except (ValueError, ZeroDivisionError):
        return None


def number_tokens(text: str) -> list[str]:
    """The number-looking tokens of a cleaned text, in order ("1,234", "-3.5", "3,8")."""
    return _TOKEN.findall(text)


def to_number(text: str | int | float | None) -> Number | None:
    """Read a number from an answer (see the module docstring); None when there is no single reading."""
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text
    if isinstance(text, float):
        if not math.isfinite(text):
            return None
        return int(text) if text.is_integer() else text
    s = clean(str(text))
    if not s:
        return None
    m = _FRACTION.fullmatch(s)
    if m:
        if len(s) > _MAX_DIGITS or not m.group(2).strip("0"):
            return None
        return _as_number(Fraction(int(m.group(1)), int(m.group(2))))
    if s.startswith("("):
        value = safe_eval(s)
        if value is not None:
            return value
    tokens = number_tokens(s)
    return _token_value(tokens[0]) if len(tokens) == 1 else None


def is_expression(text: str) -> bool:
    """Whether a text opens with arithmetic on numbers ("56 - 18", "(84 / 2) apples"), not with a number."""
    return bool(_OPENS_WITH_EXPRESSION.match(clean(text)))


def is_number_only(text: str) -> bool:
    """Whether a text is one number and nothing else ("26", "$26.00", "−3", "(13 * 2)"), not "26 apples"."""
    s = clean(text)
    if s.startswith("("):
        return safe_eval(s) is not None
    return bool(_FRACTION.fullmatch(s) or _TOKEN.fullmatch(s)) and to_number(s) is not None


def format_number(value: Number) -> str:
    """The canonical string of a number: integers exactly, others with at most 6 decimals."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def numbers_agree(a: Number, b: Number, rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> bool:
    """Integers: equal. Otherwise equal within `rel_tol` (relative) or `abs_tol` (absolute)."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    try:
        return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)
    except OverflowError:  # an integer beyond any float is close to no non-integer
        return False
