"""What the filter tells people, from its list of rules: the counts per rule, `--help`'s rule list and
the README's rule table."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

import kdpipe.filter.rules as rules
from kdpipe.filter.rules import Rule


@dataclass
class FilterReport:
    input: int = 0
    kept: int = 0
    samples_input: int = 0
    samples_kept: int = 0
    records_dropped: Counter = field(default_factory=Counter)
    samples_dropped: Counter = field(default_factory=Counter)
    teacher_errors: Counter = field(default_factory=Counter)
    voted: int = 0
    seconds: float = 0.0
    judge_cost: dict | None = None  # filter --judge: what the judge's replies cost (kdpipe/judging.py)
    # Samples of `generate --mode rationalize` (asked with the gold answer given), counted apart:
    # how many came in, which rule dropped how many, and the records kept with one standing.
    rationalized_input: int = 0
    rationalized_dropped: Counter = field(default_factory=Counter)
    rationalized_records: int = 0

    def merge(self, other: "FilterReport") -> None:
        for name in ("input", "kept", "samples_input", "samples_kept", "voted", "rationalized_input",
                     "rationalized_records"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.records_dropped.update(other.records_dropped)
        self.samples_dropped.update(other.samples_dropped)
        self.teacher_errors.update(other.teacher_errors)
        self.rationalized_dropped.update(other.rationalized_dropped)

    def note_rationalized(self, samples, reasons) -> None:
        """A record's samples after the record rules' sample checks (`reasons`: each one's Reason or None)."""
        standing = 0
        for s, r in zip(samples, reasons):
            if s.rationalized:
                self.rationalized_input += 1
                if r is None:
                    standing += 1
                else:
                    self.rationalized_dropped[r.rule] += 1
        self.rationalized_records += standing > 0

    def rationalized_gone(self, obj: dict, rule: str, reasons) -> None:
        """A record (object) `rule` rejected after note_rationalized: its standing rationalized samples go too."""
        gone = sum(1 for s, r in zip(obj.get("samples") or (), reasons) if r is None and s.get("rationalized"))
        if gone:
            self.rationalized_dropped[rule] += gone
            self.rationalized_records -= 1

    def rationalized(self) -> dict:
        dropped = {r: self.rationalized_dropped[r] for r in _names() if self.rationalized_dropped[r]}
        return {"samples": self.rationalized_input, "kept": self.rationalized_input - sum(dropped.values()),
                "records_kept": self.rationalized_records, "dropped": dropped}

    def to_dict(self) -> dict:
        return {
            "input": self.input, "kept": self.kept, "dropped": self.input - self.kept,
            "samples_input": self.samples_input, "samples_kept": self.samples_kept,
            "rules": [{"rule": r, "records": self.records_dropped[r], "samples": self.samples_dropped[r]}
                      for r in _names()],
            "teacher_errors": dict(self.teacher_errors), "voted_records": self.voted,
            "seconds": round(self.seconds, 3),
        } | ({"judge_cost": self.judge_cost} if self.judge_cost is not None else {}) | (
            {"rationalized": self.rationalized()} if self.rationalized_input else {})

    def table(self) -> str:
        lines = [f"{'rule':<27} {'records':>9} {'samples':>9}", f"{'input':<27} {self.input:>9} "
                 f"{self.samples_input:>9}"]
        for r in _names():
            if self.records_dropped[r] or self.samples_dropped[r]:
                lines.append(f"  - {r:<23} {self.records_dropped[r]:>9} {self.samples_dropped[r]:>9}")
        lines.append(f"{'kept':<27} {self.kept:>9} {self.samples_kept:>9}")
        if self.rationalized_input:
            r = self.rationalized()
            dropped = ", ".join(f"{k} {v}" for k, v in r["dropped"].items()) or "none"
            lines.append(f"rationalized samples (asked with the gold answer): {r['samples']} in, {r['kept']} kept "
                         f"in {r['records_kept']} records; dropped: {dropped}")
        return "\n".join(lines)


def _names() -> list[str]:
    return [r.name for r in rules.RULES]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def rule_flags(rule: Rule, options_cls) -> list[str]:
    """The flags of a rule's options, with their defaults: ['--gold/--no-gold', '--rel-tol 0.0001']."""
    defaults = {f.name: f.default for f in dataclasses.fields(options_cls)}
    flags = []
    if rule.switch:
        flags.append(f"{_flag(rule.switch)}/{rule.off_flag or _flag('no_' + rule.switch)}")
    for name in rule.options:
        default = defaults.get(name, dataclasses.MISSING)
        flags.append(_flag(name) + (f" {default:g}" if isinstance(default, (int, float)) else ""))
    return flags


def rules_help(options_cls) -> str:
    """The rule list of `kdpipe filter --help` (options_cls: FilterOptions, for the defaults)."""
    lines = ["Rules, in this order; the first that drops a record (or its last sample) is its `reason` "
             "in --rejected, what it found its `reason_detail`:", ""]
    for n, rule in enumerate(rules.RULES, 1):
        flags = ", ".join(rule_flags(rule, options_cls))
        lines.append(f"{n}. {rule.name} ({rule.unit}): {rule.summary}" + (f" [{flags}]" if flags else ""))
    return "\n\n".join(lines[:1] + lines[2:])


def rules_markdown(options_cls) -> str:
    """The README's rule table."""
    rows = ["| # | reason | unit | rule | flags |", "|---|---|---|---|---|"]
    for n, rule in enumerate(rules.RULES, 1):
        flags = ", ".join(f"`{f}`" for f in rule_flags(rule, options_cls))
        rows.append(f"| {n} | `{rule.name}` | {rule.unit} | {rule.summary} | {flags} |")
    return "\n".join(rows)
