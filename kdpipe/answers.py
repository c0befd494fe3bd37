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

import json
import re
import string
import unicodedata
from dataclasses import dataclass

# Numbers are read, written and compared by kdpipe/numbers.py (integers exact, tolerance for the rest).
from kdpipe.numbers import (clean, format_number, is_expression, number_tokens, numbers_agree,  # noqa: F401
                            safe_eval, to_number)

LETTERS = string.ascii_lowercase

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
        # Options that are numbers (["2", "4", "0"], answer 2) are matched as text before
        # the answer is taken as an index.
        i = match_choice(text, choices or [])
        if i is None and isinstance(raw, int) and not isinstance(raw, bool) and choices and 0 <= raw < len(choices):
            i = raw
        return None if i is None else choices[i]
    return text or None


def choices_problem(choices: list[str] | None) -> str | None:
    """Why a list of options cannot be asked with letters (a)-(z), or None when it can."""
    if choices is not None and len(choices) > len(LETTERS):
        return f"{len(choices)} options, more than the {len(LETTERS)} letters (a)-(z) that name them"
    return None


def answers_agree(pred: str | None, gold: str | None, task: str, choices: list[str] | None = None,
                  rel_tol: float = 1e-4) -> bool:
    """Whether a predicted answer matches the gold answer under the task's rule.

    numeric: integers equal exactly, other numbers within `rel_tol`; choice: the same
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


def disagrees_with_gold(pred: str | None, gold: str | None, task: str, choices: list[str] | None = None,
                        rel_tol: float = 1e-4, agree=answers_agree) -> bool:
    """filter's gold_mismatch rule, which `generate --mode rationalize` asks again for: there is a gold
    answer to check (an instruction's gold is one good response among many, never matched) and `pred`
    does not agree with it. `agree`: answers_agree, or a cached copy of it (filter's)."""
    return gold is not None and task != "instruction" and not agree(pred, gold, task, choices, rel_tol)


def _same_option(a: int, b: int, choices: list[str]) -> bool:
    return a == b or normalize_text(choices[a]) == normalize_text(choices[b])


def answer_key(answer: str | None, task: str, choices: list[str] | None = None) -> str | None:
    """A key under which agreeing answers collide (for majority votes)."""
    if answer is None:
        return None
    if task == "numeric":
        value = to_number(answer)
        if value is None or isinstance(value, int):
            return None if value is None else format_number(value)
        # Round so that 0.333333 and 0.3333333 vote together.
        return format_number(round(value, 4))
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


# An invented next few-shot example: the completion ran on past its answer. A numbered question
# ("Q2:", "Question 2:") is a sub-question of a Socratic decomposition (socratic.py), not a new example.
_NEXT_EXAMPLE = re.compile(
    r"\n\s*(?:Q(?!\s*\d)|Question(?!\s*\d)|Premise|Problem|Input|Example|Answer Choices)\s*\d*\s*:", re.I)
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
_REASONING = re.compile(r"\s*<(think|thinking|reasoning)>(.*?)(?:</\1>|$)", re.S | re.I)
_REASONING_CLOSE = re.compile(r"</(?:think|thinking|reasoning)>", re.I)
_JSON_ANSWER_KEYS = ("final_answer", "answer", "label", "prediction")
_JSON_RATIONALE_KEYS = ("rationale", "reasoning", "explanation", "thought", "steps")


def parse_completion(text: str | None, task: str, choices: list[str] | None = None) -> Parsed:
    """Split a completion into rationale and canonical final answer.

    Understands "The answer is X", "So the answer is (c) text", "Answer: X",
    "**Final answer:** X", "\\boxed{X}", a JSON object with an "answer" field,
    and arithmetic answers for numeric tasks ("(84 / 2)", evaluated without
    `eval`). A reasoning block (`<think>…</think>`) is set aside first, and text
    after the answer that starts an invented next example ("\\n\\nQ: ...") is
    cut, so its answer is never taken. Of the answers left, the first complete
    one counts (the strongest marker first: \\boxed, "final answer", "the answer
    is", "Answer:"). A completion with no answer is "refusal" when it declines,
    else "unparseable". An instruction task's answer is the whole response (after any
    reasoning block): open-ended output has no final answer to find.
    """
    if text is None or not text.strip():
        return Parsed(None, None, "empty", "no text")
    reasoning, after = split_reasoning(text)
    if reasoning is not None and not after.strip():
        return Parsed(reasoning or None, None, "unparseable", "no answer after the reasoning block")
    if task == "instruction":
        return _parse_response(after)
    parsed = _parse_json(after, task, choices)
    if parsed is not None:
        return parsed
    body = _drop_invented_examples(after)
    found = _find_answer(body, task, choices)
    if found is None:
        rationale = body.strip() or reasoning or None
        if _REFUSAL.search(body):
            return Parsed(rationale, None, "refusal", "the teacher declined to answer")
        return Parsed(rationale, None, "unparseable", "no answer marker")
    start, span, answer = found
    rationale = body[:start].strip() or reasoning or None
    if answer is None:
        return Parsed(rationale, None, "unparseable", f"answer {span[:80]!r} is not a {task} answer")
    return Parsed(rationale, answer)


def _parse_response(text: str) -> Parsed:
    """An open-ended response is its whole text (no final answer to find). It is a refusal when it
    opens by declining: a response that says "I can't" further on still answers."""
    response = text.strip()
    if not response:
        return Parsed(None, None, "empty", "no text after the reasoning block")
    if _REFUSAL.match(response) or _REFUSAL.search(response[:80]) and len(response) < 300:
        return Parsed(None, None, "refusal", "the teacher declined to answer")
    return Parsed(None, response)


def split_reasoning(text: str) -> tuple[str | None, str]:
    """(reasoning block, text after it) of a completion that opens with `<think>…</think>`
    (Qwen3, DeepSeek-R1 style; R1's template opens the block in the prompt, so its
    completions start inside it); (None, text) without one. An unclosed block is all reasoning."""
    m = _REASONING.match(text)
    if m:
        return m.group(2).strip(), text[m.end():]
    close = _REASONING_CLOSE.search(text)
    if close and "<" not in text[: close.start()].replace("</", ""):
        return text[: close.start()].strip(), text[close.end():]
    return None, text


def student_text(text: str) -> str:
    """What a student said before running on: its reasoning block set aside, invented
    next examples ("\\nQ: …") cut."""
    return _drop_invented_examples(split_reasoning(text)[1])


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


def _find_answer(body: str, task: str, choices: list[str] | None) -> tuple[int, str, str | None] | None:
    """(start of the marker, answer span, canonical answer) of the first complete answer under
    the strongest marker; the canonical answer is None when a marker holds no answer of the task.

    A span that is an answer ("(d) feeling guilty", "38 apples") beats one that only contains
    one ("the feeling of someone who is being judged" names the option "being judged"), wherever
    it stands: rationales open with "The answer should be the …".
    """
    unread = None
    for loose in (False, True):
        for kind, pattern in _MARKERS:
            for m in pattern.finditer(body):
                span = _braced(body, m.end()) if kind == "boxed" else _first_sentence(body[m.end():])
                if not span or not span.strip(" *_.:"):
                    continue
                answer = _canonical_span(span, task, choices, loose)
                if answer is not None:
                    return m.start(), span, answer
                unread = unread or (m.start(), span, None)
    return unread


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


def _canonical_span(span: str, task: str, choices: list[str] | None, loose: bool = True) -> str | None:
    """The canonical answer a marker's span states; `loose` also takes an answer the span only
    contains (the first number of "42 apples and 3 pears", the one option named in a sentence)."""
    span = re.sub(r"\\boxed\{(.*)\}", r"\1", span).replace("\\$", "$").strip()
    if task == "numeric":
        for candidate in _numeric_candidates(span, loose):
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
        if not loose:
            return None
        # The option's text inside a longer answer, when exactly one option is named.
        norm = f" {normalize_text(span)} "
        hits = {normalize_text(c) for c in choices if f" {normalize_text(c)} " in norm}
        if len(hits) == 1:
            return canonical_answer(hits.pop(), task, choices)
        return None
    return canonical_answer(span, "text")


def _numeric_candidates(span: str, loose: bool):
    yield span
    if "=" in span:  # "84 / 2 = 42"
        yield span.rsplit("=", 1)[1]
    s = clean(span)
    m = _ARITH_PREFIX.match(s)
    if m and m.group(0).lstrip().startswith("("):  # "(16 * 17) * 4 pieces of mail"
        yield m.group(0)
    numbers = number_tokens(s)
    if loose and numbers and not is_expression(s):  # "42 apples and 3 pears" names 42 first; "56 - 18" none
        yield numbers[0]


_FENCED = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def unfenced(text: str) -> str:
    """`text` stripped, and without the Markdown code fence (```json ... ```) that wraps it whole, if any."""
    s = text.strip()
    fenced = _FENCED.match(s)
    return fenced.group(1) if fenced else s


def _parse_json(text: str, task: str, choices: list[str] | None) -> Parsed | None:
    s = unfenced(text)
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
