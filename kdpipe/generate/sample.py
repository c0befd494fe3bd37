"""A teacher completion read as a Sample: what label and rationalize mode keep of each answer."""

from __future__ import annotations

from kdpipe import answers
from kdpipe.records import SAMPLE_ERRORS, Record, Sample
from kdpipe.teacher.client import Completion


def to_sample(c: Completion, record: Record) -> Sample:
    """A teacher completion as a Sample: rationale and answer, or the reason there is none."""
    if c.error is not None:
        return Sample(index=c.index, error=c.error if c.error in SAMPLE_ERRORS else "transport", detail=c.detail,
                      usage=c.usage, cached=c.cached)
    p = answers.parse_completion(c.text, record.task, record.choices)
    s = Sample(index=c.index, text=c.text, rationale=p.rationale, answer=p.answer,
               finish_reason=c.finish_reason, error=p.error, detail=p.detail, usage=c.usage, cached=c.cached,
               logprobs=c.logprobs)
    if c.finish_reason == "length" and s.error != "empty" and (p.answer is None or not answers.runs_on(c.text)):
        # Cut off before (or inside) its answer: "The answer is 12" may have been "125".
        s.error, s.answer = "truncated", None
        s.detail = "stopped at --max-tokens (finish_reason length)" + (
            f"; the cut text reads {p.answer!r}" if p.answer else "")
    elif c.finish_reason == "content_filter" and s.answer is None:
        s.error, s.detail = "refusal", "the endpoint's content filter stopped the completion"
    return s
