"""What a `kdpipe generate` run reports: its counts, cost, summary lines and exit status.

The command line prints `summary()` and `notice()` and exits with
`exit_code`; tests and scripts read the same object from run_generate.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from kdpipe.records import SAMPLE_ERRORS
from kdpipe.teacher.budget import NOT_SENT
from kdpipe.teacher.client import Stats
from kdpipe.teacher.pricing import Price

INCOMPLETE_EXIT = 3  # the output is written, but some samples failed or were not sent: rerun to finish


def watching_failures(send: Callable, causes: Counter) -> Callable:
    """`send` (a teacher sender) that also counts the detail of every transport failure it
    returns, in the order first seen, for the line that says why samples failed."""

    def send_and_watch(*args, **kwargs):
        results = send(*args, **kwargs)
        for completions in results:
            for c in completions:
                if c.error is not None and c.error != NOT_SENT:
                    causes[c.detail or c.error] += 1
        return results

    return send_and_watch


def describe_causes(causes: Counter) -> str:
    """"connection error: ... refused (9)", and how many other distinct errors there were."""
    if not causes:
        return ""
    first, count = next(iter(causes.items()))
    others = sum(causes.values()) - count
    more = f"; {others} more with {len(causes) - 1} other error{'s' if len(causes) > 2 else ''} " \
           f"(see the records' detail)" if others else ""
    return f": {first} ({count}){more}"


@dataclass
class GenerateResult:
    counts: dict[str, Any]
    stats: Stats
    price: Price | None
    cost_usd: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # "estimate" (dry run), "budget" (--max-usd)
    mode: str = "label"
    dry_run: bool = False
    out: Path | None = None
    max_tokens: int | None = None
    causes: Counter = field(default_factory=Counter)  # transport failure detail -> samples

    def unfinished(self) -> tuple[int, int]:
        """(failed with a transport error, not sent under --max-usd): samples in label mode,
        requests in expand mode. A rerun of the same command sends only these."""
        if self.dry_run:
            return 0, 0
        return self.counts.get("transport", 0), self.counts.get(NOT_SENT, 0)

    @property
    def exit_code(self) -> int:
        return INCOMPLETE_EXIT if any(self.unfinished()) else 0

    def unfinished_line(self) -> str | None:
        """One line saying what did not finish and how to finish it; None when all did."""
        failed, not_sent = self.unfinished()
        if not failed and not not_sent:
            return None
        unit = {"expand": "expansion requests", "counterfactual": "counterfactual replies"}.get(self.mode, "samples")
        parts = ([f"{failed} {unit} failed (transport){describe_causes(self.causes)}"] if failed else []) + (
            [f"{not_sent} {unit} were not sent (not_sent)"] if not_sent else [])
        return (f"{' and '.join(parts)}; the output is written with them marked; rerun the same command "
                f"to retry only those (the rest comes from the cache)")

    def summary(self) -> list[str]:
        """The lines a finished run reports: what was written and what the teacher cost; for a
        dry run, the estimate."""
        from kdpipe.teacher.estimate import describe_estimate
        from kdpipe.teacher.progress import describe

        if "exported" in self.extra:
            lines, samples, path = self.extra["exported"]
            return [f"generate: wrote {lines} requests ({samples} samples the cache lacks) to {path} as OpenAI "
                    "batch JSONL; nothing sent, no records written"]
        if self.dry_run:
            new = self.extra.get("expect_new")
            scope = "" if self.mode == "label" else \
                " (expand: the first round of requests only; duplicates add rounds)"
            if new:
                scope = (f" (labelling these questions, expanding by {new} new questions and labelling "
                         f"them; expansion's duplicates add rounds)")
            return [f"dry run, nothing sent{scope}:"] + [
                f"  {line}" for line in describe_estimate(self.extra["estimate"], self.max_tokens)]
        c = self.counts
        if self.mode == "rationalize":
            errors = ", ".join(f"{k} {c[k]}" for k in SAMPLE_ERRORS if c.get(k))
            first = (f"generate: {c['records']} records, {c['asked']} with every answer off gold asked again with "
                     f"the gold answer as a hint: {c['samples']} samples, {c['reach_gold']} reach it "
                     f"({c['records_recovered']} records recovered)" + (f", {errors}" if errors else "")
                     + f"; written to {self.out}")
        elif self.mode == "counterfactual":
            from kdpipe.generate.counterfactual import REASONS

            unusable = ", ".join(f"{k} {c[k]}" for k in (*REASONS, *SAMPLE_ERRORS) if c.get(k))
            first = (f"generate: {c['written']} counterfactual questions from {c['replies']} replies on "
                     f"{c['asked']} questions" + (f" (unusable: {unusable}; see .meta.json)" if unusable else "")
                     + (f", {c['no_source_answer']} questions without an answer to change skipped"
                        if c["no_source_answer"] else "") + f"; written to {self.out}")
        elif self.mode == "label":
            errors = ", ".join(f"{k} {c[k]}" for k in SAMPLE_ERRORS if c.get(k))
            first = (f"generate: {c['records']} records, {c['samples']} samples: {c['ok']} answered"
                     + (f", {errors}" if errors else "") + f"; written to {self.out}")
        else:
            first = (f"generate: {c['written']} new questions from {c.get('requests', 0)} requests "
                     f"({c.get('duplicates', 0)} duplicates dropped"
                     + (f", {c.get('truncated')} cut off by --max-tokens" if c.get("truncated") else "")
                     + (f", {c['short_of_target']} short of --num-new" if c["short_of_target"] else "")
                     + f"); written to {self.out}")
        return [first, f"teacher: {describe(self.stats, self.price)}"]

    def notice(self) -> str | None:
        """What a user must know even with --quiet: the run stopped at its cap, or some samples
        did not finish (and how to finish them)."""
        from kdpipe.generate.cost import continue_hint

        budget = self.extra.get("budget")
        if budget is not None and budget.stopped:
            return continue_hint(budget)
        return self.unfinished_line()
