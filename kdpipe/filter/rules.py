"""The rules of `kdpipe filter`, as one ordered list: `RULES`.

Each rule is a class that knows its name (the `reason` of what it drops), its
unit (it drops samples, or whole records), the FilterOptions fields that
switch and tune it, one line of help, and its check. The stage runs them in
list order; the report, `kdpipe filter --help` and the README's rule table are
rendered from this list (filter/report.py). A new rule is one class here, put
in its place in RULES, and one option in FilterOptions.

Rules are judged in one of three scopes:
    record  one record at a time, in worker processes on chunks of the input
            (`check` of a sample or a record, or `apply` for a rule that looks
            at all samples of a record together)
    chunk   a chunk's survivors against an index of the eval set (contamination)
    set     the whole input, on compact hashes (dedup.py): a record goes when it
            matches an earlier one

Pure functions of one record and the options. Agreement and vote keys come
from answers.py only.
"""

from __future__ import annotations

import functools
import string
from collections import Counter
from typing import NamedTuple

from kdpipe import answers
from kdpipe.filter.rule_base import Reason, RecordRule, Rule, SampleRule  # noqa: F401  (the rules' API)
from kdpipe.records import Record
from kdpipe.socratic import is_socratic, sample_decomposition

# Words that may surround an answer without making a rationale of it ("So the answer is 42.").
_FILLER = frozenset("so thus therefore hence answer is it final correct we get that this which "
                    "means option choice result equals".split())
_NOT_OWN = _FILLER | answers.ARTICLES
_PUNCT = string.punctuation + "“”‘’"


# ------------------------------------------------------------------ the rules, in their order


class TeacherError(SampleRule):
    name, switch, off_flag = "teacher_error", "drop_errors", "--keep-errors"
    summary = ("marked by `generate` (unparseable, empty, truncated, refusal, transport, not_sent) "
               "or without an answer")

    def check(self, rec, s, opts):
        if s.error is not None or s.answer is None:
            return s.error or "no answer"
        return None


class MalformedDecomposition(SampleRule):
    name, switch = "malformed_decomposition", "decomposition"
    summary = ("labelled with a Socratic prompt (prompts/socratic*.txt): the sub-questions and answers do not "
               "parse; the detail names the problem (no_subquestions, unanswered_subquestion, misnumbered, "
               "no_final_answer, ...: kdpipe/socratic.py)")

    def check(self, rec, s, opts):
        return sample_decomposition(rec, s).reason if is_socratic(rec) else None


class JudgeScore(SampleRule):
    name, options = "judge_score", ("judge", "min_score", "judge_prompt")
    summary = ("with --judge MODEL: the judge's 1-10 score (kept on every sample it saw) is below --min-score, "
               "or the judge gave no score")

    def enabled(self, opts) -> bool:
        return bool(opts.judge.model)

    def check(self, rec, s, opts):
        verdict = s.judge or {}
        if verdict.get("score") is None:
            return verdict.get("reason") or "not scored"
        if verdict["score"] < opts.min_score:
            return f"score {verdict['score']} below {opts.min_score:g}: {verdict.get('reason')}"
        return None


class GoldMismatch(SampleRule):
    name, switch, options = "gold_mismatch", "gold", ("rel_tol",)
    summary = ('disagrees with the gold answer ("42" = "42.0" = "$42" = "(84 / 2)"; integers exactly, other '
               'numbers within --rel-tol; choices by letter or text; text normalized)')

    def check(self, rec, s, opts):
        if not answers.disagrees_with_gold(s.answer, rec.gold, rec.task, _choices(rec), opts.rel_tol, _agree):
            return None
        return f"answer {s.answer!r}, gold {rec.gold!r}"


class Rationalized(SampleRule):
    name, switch, off_flag = "rationalized", "drop_rationalized", "--keep-rationalized"
    summary = ("with --drop-rationalized: a sample `generate --mode rationalize` wrote with the gold answer "
               "given (one that still disagrees with gold went under gold_mismatch)")

    def check(self, rec, s, opts):
        return "" if s.rationalized else None


def _counterfactual(rec: Record) -> dict | None:
    cf = rec.provenance.get("counterfactual")
    return cf if isinstance(cf, dict) and cf.get("intended_answer") is not None else None


class CounterfactualUnchanged(SampleRule):
    name, switch, options = "counterfactual_unchanged", "check_counterfactual", ("rel_tol",)
    summary = ("a counterfactual edit (`generate --mode counterfactual`) whose teacher answer is its source's "
               "answer: the edit did not change the answer")

    def check(self, rec, s, opts):
        cf = _counterfactual(rec)
        if cf is None or not _agree(s.answer, cf.get("source_answer"), rec.task, _choices(rec), opts.rel_tol):
            return None
        return f"answer {s.answer!r}, as the source {cf.get('of')}"


class CounterfactualDisagrees(SampleRule):
    name, switch, options = "counterfactual_disagrees", "check_counterfactual", ("rel_tol",)
    summary = ("a counterfactual edit whose teacher answer (its label by `generate --mode label`) is not the "
               "answer the edit intended (DISCO's consistency check)")

    def check(self, rec, s, opts):
        cf = _counterfactual(rec)
        if cf is None or _agree(s.answer, cf["intended_answer"], rec.task, _choices(rec), opts.rel_tol):
            return None
        return f"answer {s.answer!r}, intended {cf['intended_answer']!r}"


class NoConsensus(Rule):
    name, unit, switch, options = "no_consensus", "record", "vote", ("min_agreement",)
    summary = ("no gold and two or more samples: no answer reaches --min-agreement of the samples in a "
               "majority vote (a tie is no consensus); every sample goes")

    def apply(self, j):
        vote = j.vote()
        if vote is not None and not vote.agreed:
            for i in vote.live:
                j.drop(i, self.name, f"top answer share {vote.share:.2f}" + (" (tie)" if vote.tied else ""))
        return None


class MinorityAnswer(SampleRule):
    name, switch = "minority_answer", "vote"
    summary = "no gold, and a majority was reached: a sample outside it goes; `vote_share` is recorded"

    def apply(self, j):
        vote = j.vote()
        if vote is None or not vote.agreed:
            return None
        for i in vote.live:
            if vote.keys[i] != vote.top:
                j.drop(i, self.name, f"majority {vote.top!r} with share {vote.share:.2f}")
        j.rec.vote_share = round(vote.share, 4)
        return None


class QuestionLength(RecordRule):
    name, switch, options = "question_length", "length", ("min_question_words", "max_question_words")
    summary = "question with a word count out of bounds"

    def check(self, rec, opts):
        n = len(rec.question.split())
        if opts.min_question_words <= n <= opts.max_question_words:
            return None
        return f"{n} words, bounds {opts.min_question_words}-{opts.max_question_words}"


class RationaleLength(SampleRule):
    name, switch, options = "rationale_length", "length", ("min_rationale_words", "max_rationale_words")
    summary = "rationale with a word count out of bounds (label-only teacher output needs --min-rationale-words 0)"

    def check(self, rec, s, opts):
        if rec.task == "instruction":  # the response is the answer: there is no rationale to bound
            return None
        n = len(s.rationale.split()) if s.rationale else 0
        if opts.min_rationale_words <= n <= opts.max_rationale_words:
            return None
        return f"{n} words, bounds {opts.min_rationale_words}-{opts.max_rationale_words}"


class RationaleRestatesAnswer(SampleRule):
    name, switch = "rationale_restates_answer", "restated"
    summary = 'rationale with fewer than two words of its own besides the answer ("So the answer is 42.")'

    def check(self, rec, s, opts):
        if s.rationale and s.answer is not None and restates_answer(s.rationale, s.answer):
            return ""
        return None


class Contaminated(Rule):
    name, unit, scope, options = "contaminated", "record", "chunk", ("against", "ngram")
    summary = ("with --against EVAL (repeatable): shares an --ngram-word span with an eval question, or "
               "is a near-duplicate of one (a 64-value MinHash sketch: an estimate near the threshold)")

    def enabled(self, opts) -> bool:
        return bool(opts.against)

    def check_chunk(self, evals, words, feats) -> list[str | None]:
        """For each record of a chunk (dedup.Words, dedup.Features), what it shares with the eval set."""
        return evals.contaminated(words, feats)


class Duplicate(Rule):
    name, unit, scope, switch = "duplicate", "record", "set", "dedup"
    summary = ("same normalized question (and options) as an earlier surviving record; only the first of "
               "each text goes on to near_duplicate")
    found = "same question as"

    def earlier(self, feats, opts, eligible):
        """For each record, the index of the earlier one it repeats, or -1."""
        import numpy as np

        from kdpipe.filter.dedup import first_of_exact

        first = first_of_exact(feats.exact)
        return np.where(eligible & (first != np.arange(len(first))), first, -1)


class NearDuplicate(Rule):
    name, unit, scope, switch = "near_duplicate", "record", "set", "near_dup"
    options = ("near_threshold", "shingle")
    summary = ("Jaccard similarity of --shingle-word shingles >= --near-threshold with an earlier KEPT "
               "record, computed exactly for the pairs MinHash-LSH proposes (a pair at 0.6 is proposed "
               "about 89% of the time, at 0.7 about 99%); a~b, b~c, a not~c keeps a and c; counterfactual edits "
               "(near-copies of their source by design) are left out")
    found = "near-copy of the question of"

    def earlier(self, feats, opts, eligible):
        from kdpipe.filter.dedup import near_duplicate_of

        return near_duplicate_of(feats.bands, feats.shingle_sets, feats.set_sizes,
                                       opts.near_threshold, eligible=eligible)


RULES: tuple[Rule, ...] = (TeacherError(), MalformedDecomposition(), JudgeScore(), GoldMismatch(), Rationalized(),
                           CounterfactualUnchanged(), CounterfactualDisagrees(), NoConsensus(), MinorityAnswer(),
                           QuestionLength(), RationaleLength(), RationaleRestatesAnswer(), Contaminated(), Duplicate(),
                           NearDuplicate())
RULE_NAMES = tuple(r.name for r in RULES)


def rules_in(scope: str, opts) -> list[Rule]:
    """The rules of one scope that `opts` turns on, in their order."""
    return [r for r in RULES if r.scope == scope and r.enabled(opts)]


# ------------------------------------------------------------------ judging one record


@functools.lru_cache(maxsize=1 << 16)
def _agree(pred, gold, task, choices, rel_tol):
    return answers.answers_agree(pred, gold, task, list(choices) if choices else None, rel_tol)


@functools.lru_cache(maxsize=1 << 16)
def _key(answer, task, choices):
    return answers.answer_key(answer, task, list(choices) if choices else None)


@functools.lru_cache(maxsize=1 << 16)
def _answer_words(answer: str) -> frozenset[str]:
    return frozenset(answers.normalize_text(answer).split())


def _choices(rec: Record) -> tuple[str, ...] | None:
    return tuple(rec.choices) if rec.choices else None


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


class Vote(NamedTuple):
    live: list[int]  # the samples that voted
    keys: dict[int, object]  # each one's answer key
    top: object  # the majority's key
    share: float
    tied: bool
    agreed: bool


class Judgement:
    """One record being judged: its samples' reasons so far, and the vote once counted."""

    def __init__(self, rec: Record, opts):
        self.rec, self.opts = rec, opts
        self.reasons: list[Reason | None] = [None] * len(rec.samples)
        self._vote: Vote | None | bool = False  # False: not counted yet

    def alive(self) -> list[int]:
        return [i for i, r in enumerate(self.reasons) if r is None]

    def drop(self, i: int, rule: str, detail: str = "") -> None:
        self.reasons[i] = Reason(rule, detail or None)

    def vote(self) -> Vote | None:
        """Majority vote over the live samples of a record without gold; None when it does not apply."""
        if self._vote is False:
            self._vote = None
            live = self.alive()
            # Open-ended responses never agree word for word: no vote over them.
            if self.rec.gold is None and len(live) > 1 and self.rec.task != "instruction":
                rec, choices = self.rec, _choices(self.rec)
                keys = {i: _key(rec.samples[i].answer, rec.task, choices) for i in live}
                top = Counter(k for k in keys.values() if k is not None).most_common(2)
                share = top[0][1] / len(live) if top else 0.0
                tied = len(top) > 1 and top[0][1] == top[1][1]
                agreed = bool(top) and not tied and share >= self.opts.min_agreement
                self._vote = Vote(live, keys, top[0][0] if top else None, share, tied, agreed)
        return self._vote


def judge(rec: Record, opts) -> tuple[Reason | None, list[Reason | None]]:
    """The record-scope rules on one record: (the record's reason or None, each sample's reason or None).

    The first rule that rejects the record, or drops its last sample, is its reason.
    """
    rec.vote_share = None
    j = Judgement(rec, opts)
    for rule in rules_in("record", opts):
        detail = rule.apply(j)
        if detail is not None:
            return Reason(rule.name, detail or None), j.reasons
        if j.reasons and None not in j.reasons:
            return Reason(rule.name), j.reasons
    return None, j.reasons


# ------------------------------------------------------------------ what is written


def with_reason(obj: dict, reason: Reason) -> dict:
    """`obj` (a record or sample object) with `reason` set: the rule's bare name, its detail apart."""
    out = dict(obj, reason=reason.rule)
    if reason.detail:
        out["reason_detail"] = reason.detail
    else:
        out.pop("reason_detail", None)
    return out


def rejected_obj(obj: dict, reason: Reason, sample_reasons: list[Reason | None]) -> dict:
    out = with_reason(obj, reason)
    if sample_reasons:
        out["samples"] = [with_reason(s, r) if r else s for s, r in zip(obj["samples"], sample_reasons)]
    return out


def unchanged_when_kept(obj: dict, rec: Record, sample_reasons: list[Reason | None]) -> bool:
    """Whether the kept record is the input object itself (so its input line can be copied as is)."""
    return ("reason" not in obj and "reason_detail" not in obj and obj.get("vote_share") == rec.vote_share
            and all(r is None for r in sample_reasons))


def kept_obj(obj: dict, rec: Record, sample_reasons: list[Reason | None]) -> dict:
    out = dict(obj)
    out.pop("reason", None)
    out.pop("reason_detail", None)
    if sample_reasons:
        out["samples"] = [s for s, r in zip(obj["samples"], sample_reasons) if r is None]
    if rec.vote_share is not None:
        out["vote_share"] = rec.vote_share
    else:
        out.pop("vote_share", None)
    return out
