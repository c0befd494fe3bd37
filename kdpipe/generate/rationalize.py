"""`generate --mode rationalize`: ask again, with the gold answer given, for the questions the
teacher got wrong (rationalization: STaR, Zelikman et al. 2022; Li et al. 2022).

The input is teacher records (generate's output, or filter's --rejected file). A record is
asked again when filter would reject it as gold_mismatch: it has a gold answer and usable
samples, and none of them agrees with gold (the same rule: answers.disagrees_with_gold). The
teacher sees the question and the gold answer as a hint (prompts/rationalize.txt) and writes
a rationale that reaches it. The new samples are appended to the record marked `rationalized`
(the teacher's own samples stay: they are its accuracy), with the call that wrote them under
provenance["rationalized"]; every other record is written unchanged. `filter` then drops a
rationalized sample that still misses gold, like any other, and counts them apart.
"""

from __future__ import annotations

from collections import Counter

from kdpipe import answers
from kdpipe.generate.sample import to_sample
from kdpipe.label_prompts import render_label_prompt
from kdpipe.records import SAMPLE_ERRORS, Record
from kdpipe.teacher.client import ChatRequest, TeacherConfig, complete

PROMPT = "rationalize.txt"


def needs_rationale(rec: Record) -> bool:
    """Whether filter would reject `rec` as gold_mismatch (and no rationalization was asked yet)."""
    usable = [s for s in rec.samples if s.ok]
    return (bool(usable) and not any(s.rationalized for s in rec.samples)
            and all(answers.disagrees_with_gold(s.answer, rec.gold, rec.task, rec.choices) for s in usable))


def hint(rec: Record) -> str:
    """The gold answer as the teacher is shown it: a choice as "(b) its text"."""
    if rec.task == "choice" and rec.choices:
        i = answers.match_choice(rec.gold, rec.choices)
        if i is not None:
            return f"({answers.LETTERS[i]}) {rec.choices[i]}"
    return rec.gold


def rationalize_requests(records: list[Record], template: str, samples: int) -> list[ChatRequest]:
    return [ChatRequest([{"role": "user", "content": render_label_prompt(template, r).replace("{answer}", hint(r))}],
                        samples, id=r.id) for r in records]


def rationalize(records, prompt, config: TeacherConfig, samples: int, cache, stats, on_progress, send=complete):
    """Append rationalized samples to the records filter would reject as gold_mismatch; returns
    (all records, counts). `prompt`: (file name, digest, text) of the rationalization template."""
    name, digest, text = prompt
    asked = [r for r in records if needs_rationale(r)]
    results = send(config, rationalize_requests(asked, text, samples), cache, stats, on_progress)
    counts: Counter = Counter(records=len(records), asked=len(asked))
    counts["already_rationalized"] = sum(1 for r in records if any(s.rationalized for s in r.samples))
    for record, completions in zip(asked, results):
        first = max((s.index for s in record.samples), default=-1) + 1  # sample indices stay unique in a record
        new = [to_sample(c, record) for c in completions]
        for s in new:
            s.index += first
            s.rationalized = True
            counts["samples"] += 1
            counts["ok" if s.ok else s.error] += 1
            counts["reach_gold"] += s.ok and not answers.disagrees_with_gold(s.answer, record.gold, record.task,
                                                                             record.choices)
        record.samples = record.samples + new
        record.provenance = {**record.provenance, "rationalized": {
            **config.provenance(), "samples": samples, "prompt": name, "prompt_digest": digest}}
    counts["records_recovered"] = sum(
        1 for r in asked if any(s.rationalized and s.ok and not answers.disagrees_with_gold(
            s.answer, r.gold, r.task, r.choices) for s in r.samples))
    counts["cached"] = stats.cached
    return records, {k: counts[k] for k in ("records", "asked", "already_rationalized", "samples", "ok",
                                            *SAMPLE_ERRORS, "reach_gold", "records_recovered", "cached")}
