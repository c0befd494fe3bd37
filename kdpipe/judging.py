"""A judge model: scores open-ended responses (pointwise) and compares two (pairwise).

The judge is any OpenAI-compatible model, reached like the teacher: the same
TeacherOptions (endpoint, key variable, prices, --max-usd cap), the same backend
factory (online, Batch API) and the same response cache, so a rerun pays nothing.
It asks greedily, with the prompts in prompts/judge_score.txt and judge_pair.txt.

Pointwise: "Score: N" (1-10) and a short reason. A reply with no score in range is
no score, with the reason saying why (a judge that rambles is recorded, never a crash).

Pairwise: each pair is shown in both orders, since judges favour a position (most
often the first). A win counts only when both orders name the same response; any
disagreement, explicit tie or unreadable verdict is a tie. Win, tie and loss rates
carry 95 % Wilson intervals.

Beside a reference: prompts/judge_reference.txt shows a reference response (the teacher's)
with the one graded, for the same "Score: N" reply.

Used by `filter --judge` (a score on every sample), `eval --judge` (student vs teacher,
vs baseline) and `probe --judge` (the student beside the teacher's reference); it knows
nothing about those stages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdpipe.intervals import wilson_interval
from kdpipe.label_prompts import PROMPTS_DIR, read_prompt

SCORE_PROMPT = "judge_score.txt"
PAIR_PROMPT = "judge_pair.txt"
REFERENCE_PROMPT = "judge_reference.txt"
MIN_SCORE, MAX_SCORE = 1, 10

_SCORE = re.compile(r"\bscore\s*(?:\(1-10\))?\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?", re.I)
_BRACKETED = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_OUT_OF_TEN = re.compile(r"\b(\d+(?:\.\d+)?)\s*/\s*10\b")
_REASON = re.compile(r"\breason\s*:\s*(.+)", re.I | re.S)
_VERDICT = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.I)
_REASON_CHARS = 200


@dataclass
class Score:
    score: int | None  # None: no usable score (see reason)
    reason: str

    def to_dict(self, model: str) -> dict[str, Any]:
        return {"model": model, "score": self.score, "reason": self.reason}


def parse_score(text: str | None) -> Score:
    """The judge's 1-10 score and reason; a malformed reply is Score(None, why)."""
    if text is None or not text.strip():
        return Score(None, "malformed judge reply: empty")
    found = _SCORE.search(text) or _BRACKETED.search(text) or _OUT_OF_TEN.search(text)
    if found is None:
        return Score(None, f"malformed judge reply: no score in {_short(text)!r}")
    value = float(found.group(1))
    if not (MIN_SCORE <= value <= MAX_SCORE):
        return Score(None, f"malformed judge reply: score {found.group(1)} is outside {MIN_SCORE}-{MAX_SCORE}")
    reason = _REASON.search(text)
    said = reason.group(1) if reason else (text[: found.start()] + text[found.end():])
    return Score(round(value), _short(" ".join(said.split())) or "no reason given")


def parse_verdict(text: str | None) -> str | None:
    """"A", "B" or "tie" from a pairwise reply (its last [[..]] verdict); None when it has none."""
    found = _VERDICT.findall(text or "")
    if not found:
        return None
    v = found[-1].upper()
    return "tie" if v in ("C", "TIE") else v


def combine(first: str | None, swapped: str | None) -> str:
    """The outcome for response X from its two showings: `first` with X as A, `swapped` with X as B.
    "win" or "loss" only when both orders agree; anything else is a "tie"."""
    if first == "A" and swapped == "B":
        return "win"
    if first == "B" and swapped == "A":
        return "loss"
    return "tie"


@dataclass
class Rates:
    """Win / tie / loss counts of one side against another, with rates and 95 % intervals."""

    win: int = 0
    tie: int = 0
    loss: int = 0
    inconsistent: int = 0  # ties that came from the two orders disagreeing (position bias)
    unreadable: int = 0  # showings whose verdict could not be read (counted as ties)

    @property
    def n(self) -> int:
        return self.win + self.tie + self.loss

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "inconsistent": self.inconsistent, "unreadable": self.unreadable}
        for name in ("win", "tie", "loss"):
            k = getattr(self, name)
            out[name] = k
            out[f"{name}_rate"] = k / self.n if self.n else 0.0
            out[f"{name}_ci95"] = list(wilson_interval(k, self.n))
        return out


@dataclass
class JudgeCost:
    """What the judge's replies cost at list price (cached replies included) and what this run spent."""

    replies: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    spent_prompt_tokens: int = 0
    spent_completion_tokens: int = 0
    usd: float | None = None  # None: the model's price is unknown
    spent_usd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Judge:
    """A judge model behind TeacherOptions (`options.model` names it)."""

    options: Any  # kdpipe.teacher.options.TeacherOptions
    score_prompt: Path | None = None
    pair_prompt: Path | None = None
    reference_prompt: Path | None = None
    cost: JudgeCost = field(default_factory=JudgeCost)
    # --spend-ledger (options.spend_ledger): the output its lines name, and the flags a problem is worded with.
    ledger_out: Path | None = None
    flag: Any = None  # kdpipe.options.FlagNamer of the stage's judge flags
    stopped: Any = None  # the Budget of a call that stopped at --max-usd (its replies: error not_sent)

    def prompts(self) -> dict[str, tuple[str, str, str]]:
        """(file name, digest, text) of the pointwise and pairwise prompts, for provenance."""
        return {"score": read_prompt(self.score_prompt or PROMPTS_DIR / SCORE_PROMPT),
                "pair": read_prompt(self.pair_prompt or PROMPTS_DIR / PAIR_PROMPT)}

    def score(self, items: list[tuple[str, str]]) -> list[Score]:
        """Score each (instruction, response)."""
        template = self.prompts()["score"][2]
        return self._scores([_fill(template, instruction=i, response=r) for i, r in items])

    def score_beside(self, items: list[tuple[str, str, str]]) -> list[Score]:
        """Score each (instruction, reference, response): the response graded beside the reference."""
        template = read_prompt(self.reference_prompt or PROMPTS_DIR / REFERENCE_PROMPT)[2]
        return self._scores([_fill(template, instruction=i, reference=ref, response=r) for i, ref, r in items])

    def _scores(self, prompts: list[str]) -> list[Score]:
        return [parse_score(t) if err is None else Score(None, f"no judge reply: {err}") for t, err in self._ask(prompts)]

    def compare(self, items: list[tuple[str, str, str]]) -> tuple[list[str], Rates]:
        """For each (instruction, x, y): "win", "tie" or "loss" of x against y, from both orders."""
        template = self.prompts()["pair"][2]
        prompts = []
        for instruction, x, y in items:
            prompts.append(_fill(template, instruction=instruction, response_a=x, response_b=y))
            prompts.append(_fill(template, instruction=instruction, response_a=y, response_b=x))
        replies = self._ask(prompts)
        outcomes, rates = [], Rates()
        for k in range(len(items)):
            first, swapped = (parse_verdict(t) if err is None else None for t, err in replies[2 * k: 2 * k + 2])
            rates.unreadable += (first is None) + (swapped is None)
            outcome = combine(first, swapped)
            if outcome == "tie" and first in ("A", "B") and swapped in ("A", "B"):
                rates.inconsistent += 1
            setattr(rates, outcome, getattr(rates, outcome) + 1)
            outcomes.append(outcome)
        return outcomes, rates

    def _ask(self, prompts: list[str]) -> list[tuple[str | None, str | None]]:
        """(text, error) of each prompt's one greedy reply, through the cache and the backend factory."""
        from kdpipe.teacher.backend import make_backend
        from kdpipe.teacher.cache import ResponseCache
        from kdpipe.teacher.client import ChatRequest, Stats
        from kdpipe.teacher.spend_ledger import spending_recorded

        opts = self.options
        price = opts.price()
        requests = [ChatRequest([{"role": "user", "content": p}], 1, id=f"judge-{i}") for i, p in enumerate(prompts)]
        stats = Stats()
        budget = opts.budget(price, self.flag)
        with ResponseCache(opts.cache_path()) as cache, \
                spending_recorded(opts.spend_ledger, self.ledger_out, stats, budget, price):
            results = make_backend(opts, budget).complete(opts.teacher_config(), requests, cache, stats)
        if budget is not None and budget.stopped:
            self.stopped = budget
        out = []
        c = self.cost
        for completions in results:
            done = completions[0] if completions else None
            if done is None or done.error is not None:
                out.append((None, (done.error if done else "no reply")))
                continue
            out.append((done.text, None))
            c.replies += 1
            c.prompt_tokens += int(done.usage.get("prompt_tokens", 0))
            c.completion_tokens += int(done.usage.get("completion_tokens", 0))
        c.cached += stats.cached
        c.spent_prompt_tokens += stats.prompt_tokens
        c.spent_completion_tokens += stats.completion_tokens
        if price is not None:
            c.usd = price.cost(c.prompt_tokens, c.completion_tokens)
            c.spent_usd = price.cost(c.spent_prompt_tokens, c.spent_completion_tokens)
        return out


def _fill(template: str, **fields: str) -> str:
    # One pass, so a response that itself contains "{response_b}" is never filled in again.
    return re.sub(r"\{(" + "|".join(fields) + r")\}", lambda m: fields[m.group(1)], template)


def _short(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"
