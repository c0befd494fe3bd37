"""Keys that several stages must compute alike: when two questions are the same, and where a record
falls in a seeded split.

`seed` drops repeated questions and `generate` refuses expanded ones that repeat a seed by
`question_key`; `filter`'s duplicate rule hashes the same key (filter/dedup.py), so the three agree on
what "the same question" is. `seed`'s held-out eval split and `format`'s validation split rank records
by `split_rank`.
"""

from __future__ import annotations

import hashlib
import re

from kdpipe.answers import ARTICLES, normalize_text

# Every ASCII byte that is not a word character (regex \w) becomes a space.
_NOT_WORD = bytes(c for c in range(128) if not (chr(c).isalnum() or chr(c) == "_"))
_ASCII_PUNCT = bytes.maketrans(_NOT_WORD, b" " * len(_NOT_WORD))
_ARTICLES = frozenset(w.encode("ascii") for w in ARTICLES)


# An arithmetic operator between two numbers, or a minus sign before one, is a word of the question:
# "7 + 3" and "7 - 3" are two questions, where dropping punctuation would make them one. Spelled out,
# so that "7+3" and "7 plus 3" stay the same question; a dash between words stays punctuation.
_OPERATOR = re.compile(r"(\d)\s*([-+*/×÷=])\s*(?=\d)|(?<![\w.])(-)(?=\d)")
_SPELLED = {"+": " plus ", "-": " minus ", "*": " times ", "×": " times ", "/": " over ", "÷": " over ",
            "=": " equals "}
_OPERATOR_CHARS = frozenset(_SPELLED)


def _spelled(m: re.Match) -> str:
    return m.group(1) + _SPELLED[m.group(2)] if m.group(1) else _SPELLED["-"]


def spell_operators(text: str) -> str:
    """`text` with each operator between two numbers, and each minus sign before a number, as a word."""
    if _OPERATOR_CHARS.isdisjoint(text):
        return text
    return _OPERATOR.sub(_spelled, text)


def words_of(text: str) -> list[bytes]:
    """The words a question is compared on, as UTF-8: `answers.normalize_text(spell_operators(text)).split()`.

    ASCII text takes a fast path with the same result (tests check it on real
    questions): lower case, every non-word character to a space, articles out.
    """
    text = spell_operators(text)
    if text.isascii():
        return [w for w in text.encode("ascii").lower().translate(_ASCII_PUNCT).split() if w not in _ARTICLES]
    return [w.encode("utf-8") for w in normalize_text(text).split()]


def key_of_words(words: list[bytes], choices: list[str] | None = None) -> bytes:
    """`question_key` of a question already split by `words_of`."""
    key = b" ".join(words)
    if choices:
        key += b"\0" + "\0".join(normalize_text(c) for c in choices).encode("utf-8")
    return key


def question_key(question: str, choices: list[str] | None = None) -> bytes:
    """Equal for questions that are the same after normalization (case, punctuation, articles,
    spacing; arithmetic operators count as words), with the same options; empty for a question with
    no words."""
    return key_of_words(words_of(question), choices)


def split_rank(record_id: str, seed: int) -> str:
    """Sort key of a seeded split: depends only on the id and the seed, so a record stays on its
    side of the split whatever else the file holds."""
    return hashlib.sha256(f"{seed}:{record_id}".encode("utf-8")).hexdigest()
