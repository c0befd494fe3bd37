"""`generate --mode counterfactual`: the teacher edits each question minimally so that its answer
changes, and says the answer it intends (DISCO, Chen et al. 2023).

Each source record with an answer (gold, else the teacher's first usable one) is shown with
that answer (prompts/counterfactual.txt); a reply names the edited question and its new answer
("Edited question: ..." / "New answer: ..."). Each edit becomes a new record, without samples
or gold, whose provenance["counterfactual"] links it to its source and holds the intended and
the source answer. Label those records like any (`generate --mode label`: the teacher's own
label of the edit); `filter` keeps an edit only where that label is the intended answer
(rules counterfactual_unchanged, counterfactual_disagrees).

A reply that cannot be used is counted under its reason and listed, with its source, in the
output's .meta.json: no_edit, no_intended_answer (missing or unreadable), identical_to_source
(the same question after normalization), answer_unchanged (the intended answer is the source's),
duplicate (an edit already written), truncated, and the teacher's failures (transport, ...).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

from kdpipe import answers
from kdpipe.keys import question_key
from kdpipe.label_prompts import render_label_prompt
from kdpipe.probe import reference
from kdpipe.records import SAMPLE_ERRORS, Record
from kdpipe.teacher.client import ChatRequest, TeacherConfig, complete

PROMPT = "counterfactual.txt"
REASONS = ("no_edit", "no_intended_answer", "identical_to_source", "answer_unchanged", "duplicate", "truncated")
_MARK = r"^[\s*#>_-]*{}\s*[*_]*\s*:\s*[*_]*[ \t]*"
_EDIT = re.compile(_MARK.format(r"(?:edited|new|counterfactual)\s+question"), re.I | re.M)
_OPTIONS = re.compile(r"^\s*answer choices\s*:", re.I | re.M)
_ANSWER = re.compile(_MARK.format(r"(?:new|intended)\s+answer"), re.I | re.M)


def parse_counterfactual(text: str | None, task: str, choices: list[str] | None) -> tuple[str | None, str | None,
                                                                                            str | None]:
    """(edited question, intended answer in canonical form, None), or (None, None, reason code)."""
    s = answers.unfenced(text or "")
    edit = _EDIT.search(s)
    if edit is None:
        return None, None, "no_edit"
    mark = _ANSWER.search(s, edit.end())
    question = s[edit.end(): mark.start() if mark else len(s)]
    question = _OPTIONS.split(question, 1)[0].strip().strip("*_").strip()  # the record keeps its options apart
    if not question:
        return None, None, "no_edit"
    if mark is None:
        return None, None, "no_intended_answer"
    said = s[mark.end():].split("\n", 1)[0].strip()
    # The intended answer is read as a label's final answer is, so that filter compares like with like.
    intended = answers.parse_completion(f"The answer is {said}", task, choices).answer if said else None
    if intended is None:
        return None, None, "no_intended_answer"
    return question, intended, None


def counterfactual_requests(records: list[Record], template: str, samples: int) -> list[ChatRequest]:
    return [ChatRequest([{"role": "user", "content": render_label_prompt(template, r).replace(
        "{answer}", _shown(r))}], samples, id=r.id) for r in records]


def _shown(rec: Record) -> str:
    ref = reference(rec)
    i = answers.match_choice(ref, rec.choices) if rec.task == "choice" and rec.choices else None
    return ref if i is None else f"({answers.LETTERS[i]}) {rec.choices[i]}"


def counterfactual(records, prompt, config: TeacherConfig, samples: int, cache, stats, on_progress,
                   send=complete):
    """New records, one per usable edit, from the sources' replies; returns (records, counts, the
    unusable replies as [{"of", "sample", "reason", "detail"}])."""
    name, digest, text = prompt
    sources = [r for r in records if r.task != "instruction" and reference(r) is not None]
    counts: Counter = Counter(sources=len(records), asked=len(sources))
    counts["no_source_answer"] = len(records) - len(sources)
    results = send(config, counterfactual_requests(sources, text, samples), cache, stats, on_progress)
    teacher = {**config.provenance(), "samples": samples, "prompt": name, "prompt_digest": digest}
    seen = {question_key(r.question, r.choices) for r in records}
    new, unusable = [], []
    for src, completions in zip(sources, results):
        ref = reference(src)
        for c in completions:
            counts["replies"] += 1
            question, intended, reason = None, None, None
            if c.error is not None:
                reason = c.error if c.error in SAMPLE_ERRORS else "transport"
            elif c.finish_reason == "length":
                reason = "truncated"
            else:
                question, intended, reason = parse_counterfactual(c.text, src.task, src.choices)
            if reason is None and question_key(question, src.choices) == question_key(src.question, src.choices):
                reason = "identical_to_source"
            elif reason is None and answers.answers_agree(intended, ref, src.task, src.choices):
                reason = "answer_unchanged"
            elif reason is None and question_key(question, src.choices) in seen:
                reason = "duplicate"
            if reason is not None:
                counts[reason] += 1
                unusable.append({"of": src.id, "sample": c.index, "reason": reason,
                                 **({"detail": c.detail} if c.detail else {}),
                                 **({"reply": c.text[:200]} if c.text and reason in REASONS else {})})
                continue
            seen.add(question_key(question, src.choices))
            rid = "cf-" + hashlib.sha256(f"{src.id}\0{question}".encode("utf-8")).hexdigest()[:16]
            new.append(Record(id=rid, question=question, task=src.task, choices=src.choices, provenance={
                "source": "counterfactual", "counterfactual": {
                    "of": src.id, "intended_answer": intended, "source_answer": ref, "sample": c.index,
                    "teacher": teacher}}))
    counts["written"] = len(new)
    counts["cached"] = stats.cached
    keys = ("sources", "asked", "no_source_answer", "replies", "written", *REASONS, *SAMPLE_ERRORS, "cached")
    return new, {k: counts[k] for k in keys}, unusable
