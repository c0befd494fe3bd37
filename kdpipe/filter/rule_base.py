"""The base classes of filter's rules (filter/rules.py holds the rules themselves, in their order):
a rule drops samples (SampleRule), rejects records (RecordRule), or looks at a record's samples
together (Rule.apply); a Reason says which rule and what it found."""

from __future__ import annotations

from typing import ClassVar, NamedTuple

from kdpipe.records import Record, Sample


class Reason(NamedTuple):
    """Why a rule dropped a sample or a record: the rule's name and, when it says more, what it found."""

    rule: str
    detail: str | None = None

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}" if self.detail else self.rule


class Rule:
    name: ClassVar[str]
    unit: ClassVar[str]  # "sample" (it drops samples; the record goes with its last one) or "record"
    scope: ClassVar[str] = "record"  # record | chunk | set (see the module's docstring)
    switch: ClassVar[str | None] = None  # the bool FilterOptions field that turns it on and off
    off_flag: ClassVar[str | None] = None  # the flag turning it off, when not --no-<switch>
    options: ClassVar[tuple[str, ...]] = ()  # the other FilterOptions fields it reads
    summary: ClassVar[str]  # one line for --help, the README and the report's readers

    def enabled(self, opts) -> bool:
        return bool(getattr(opts, self.switch)) if self.switch else True

    def apply(self, j) -> str | None:
        """Judge one record (scope "record"; `j`: a rules.Judgement): drop samples through `j.drop`;
        return a detail ("" for none) when the rule rejects the record itself, else None."""
        raise NotImplementedError


class SampleRule(Rule):
    unit = "sample"

    def check(self, rec: Record, s: Sample, opts) -> str | None:
        """None keeps the sample; a string (its detail, "" for none) drops it."""
        raise NotImplementedError

    def apply(self, j) -> None:
        for i in j.alive():
            detail = self.check(j.rec, j.rec.samples[i], j.opts)
            if detail is not None:
                j.drop(i, self.name, detail)
        return None


class RecordRule(Rule):
    unit = "record"

    def check(self, rec: Record, opts) -> str | None:
        """None keeps the record; a string (its detail, "" for none) rejects it."""
        raise NotImplementedError

    def apply(self, j) -> str | None:
        return self.check(j.rec, j.opts)
