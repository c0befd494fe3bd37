"""The record-by-record rules of `kdpipe filter` (rules 1-4; see filter.py for the order).

Pure functions of one record and the options: they run in worker processes
on chunks of the input. Agreement and vote keys come from answers.py only.
"""

from __future__ import annotations

import functools
import string
from collections import Counter

from kdpipe import answers
from kdpipe.records import Record

RULES = ("teacher_error", "gold_mismatch", "no_consensus", "minority_answer", "question_length",
         "rationale_length", "rationale_restates_answer", "contaminated", "duplicate", "near_duplicate")

# Words that may surround an answer without making a rationale of it ("So the answer is 42.").
_FILLER = frozenset("so thus therefore hence answer is it final correct we get that this which "
                    "means option choice result equals".split())
_NOT_OWN = _FILLER | answers.ARTICLES
_PUNCT = string.punctuation + "“”‘’"


@functools.lru_cache(maxsize=1 << 16)
def _agree(pred, gold, task, choices, rel_tol):
    return answers.answers_agree(pred, gold, task, list(choices) if choices else None, rel_tol)


@functools.lru_cache(maxsize=1 << 16)
def _key(answer, task, choices):
    return answers.answer_key(answer, task, list(choices) if choices else None)


@functools.lru_cache(maxsize=1 << 16)
def _answer_words(answer: str) -> frozenset[str]:
    return frozenset(answers.normalize_text(answer).split())


def restates_answer(rationale: str, answer: str) -> bool:
    """Whether a rationale says nothing but the answer: fewer than two words of its own.

    Words of the answer, filler words ("so", "the answer is") and single
    letters (option labels) are not the rationale's own.
    """
    answer_words = _answer_words(answer)
    own = 0
    for w in rationale.split():
        # Fast path on raw words: most rationales show two words of their own at once.
        w = w.strip(_PUNCT).casefold()
        if len(w) > 1 and w.isalpha() and w not in answer_words and w not in _NOT_OWN:
            own += 1
            if own >= 2:
                return False
    own_words = [w for w in answers.normalize_text(rationale).split()
                 if w not in answer_words and w not in _FILLER and not (len(w) == 1 and w.isalpha())]
    return len(own_words) < 2


def judge(rec: Record, opts) -> tuple[str | None, list[str | None]]:
    """Apply rules 1-4 to one record: (the record's reason or None, each sample's reason or None)."""
    reasons: list[str | None] = [None] * len(rec.samples)
    choices = tuple(rec.choices) if rec.choices else None

    def alive():
        return [i for i, r in enumerate(reasons) if r is None] if reasons else reasons

    def drop(i, rule, detail=""):
        reasons[i] = rule + (f": {detail}" if detail else "")

    def record_reason(rule):
        # The record goes when the rule took its last sample.
        return rule if reasons and None not in reasons else None

    rec.vote_share = None
    if opts.drop_errors:
        for i, s in enumerate(rec.samples):
            if s.error is not None or s.answer is None:
                drop(i, "teacher_error", s.error or "no answer")
        if (why := record_reason("teacher_error")):
            return why, reasons
    if opts.gold and rec.gold is not None:
        for i in alive():
            a = rec.samples[i].answer
            if not _agree(a, rec.gold, rec.task, choices, opts.rel_tol):
                drop(i, "gold_mismatch", f"answer {a!r}, gold {rec.gold!r}")
        if (why := record_reason("gold_mismatch")):
            return why, reasons
    if opts.vote and rec.gold is None and len(alive()) > 1:
        live = alive()
        keys = {i: _key(rec.samples[i].answer, rec.task, choices) for i in live}
        counts = Counter(k for k in keys.values() if k is not None)
        top = counts.most_common(2)
        share = top[0][1] / len(live) if top else 0.0
        tied = len(top) > 1 and top[0][1] == top[1][1]
        if not top or tied or share < opts.min_agreement:
            for i in live:
                drop(i, "no_consensus", f"top answer share {share:.2f}" + (" (tie)" if tied else ""))
            return "no_consensus", reasons
        for i in live:
            if keys[i] != top[0][0]:
                drop(i, "minority_answer", f"majority {top[0][0]!r} with share {share:.2f}")
        rec.vote_share = round(share, 4)
    if opts.length:
        n = len(rec.question.split())
        if not (opts.min_question_words <= n <= opts.max_question_words):
            return (f"question_length: {n} words, bounds {opts.min_question_words}-"
                    f"{opts.max_question_words}"), reasons
        for i in alive():
            s = rec.samples[i]
            n = len(s.rationale.split()) if s.rationale else 0
            if not (opts.min_rationale_words <= n <= opts.max_rationale_words):
                drop(i, "rationale_length", f"{n} words, bounds {opts.min_rationale_words}-"
                                            f"{opts.max_rationale_words}")
        if (why := record_reason("rationale_length")):
            return why, reasons
    if opts.restated:
        for i in alive():
            s = rec.samples[i]
            if s.rationale and s.answer is not None and restates_answer(s.rationale, s.answer):
                drop(i, "rationale_restates_answer")
        if (why := record_reason("rationale_restates_answer")):
            return why, reasons
    return None, reasons


def rule_of(reason: str) -> str:
    return reason.split(":", 1)[0]


def rejected_obj(obj: dict, reason: str, sample_reasons: list[str | None]) -> dict:
    out = dict(obj)
    out["reason"] = reason
    if sample_reasons:
        out["samples"] = [dict(s, reason=r) if r else s for s, r in zip(obj["samples"], sample_reasons)]
    return out


def unchanged_when_kept(obj: dict, rec: Record, sample_reasons: list[str | None]) -> bool:
    """Whether the kept record is the input object itself (so its input line can be copied as is)."""
    return ("reason" not in obj and obj.get("vote_share") == rec.vote_share
            and all(r is None for r in sample_reasons))


def kept_obj(obj: dict, rec: Record, sample_reasons: list[str | None]) -> dict:
    out = dict(obj)
    out.pop("reason", None)
    if sample_reasons:
        out["samples"] = [s for s, r in zip(obj["samples"], sample_reasons) if r is None]
    if rec.vote_share is not None:
        out["vote_share"] = rec.vote_share
    else:
        out.pop("vote_share", None)
    return out
