"""Socratic decompositions (Socratic CoT: Shridhar et al., 2023, arXiv:2212.00193): a problem broken into
numbered sub-questions, each with its answer, then the final answer.

    Q1: How many trees were there at first?
    A1: There were 15 trees.
    Q2: How many trees did the workers plant?
    A2: 21 - 15 = 6.
    The answer is 6.

The teacher writes them when labelled with a Socratic prompt (prompts/socratic.txt, or any prompt file
whose name starts with "socratic"); `filter` drops samples whose decomposition is malformed (rule
malformed_decomposition, with the code below as its detail); `format --style socratic` writes the
decomposition as the completion, so one student learns to ask and answer its own sub-questions (or, with
--socratic-roles two, rows of a question generator and a solver: socratic_roles.py); `eval` reads a
Socratic student's completion with the same parser and scores its final answer (a malformed one counts
as wrong, with its code as the error).

Read as leniently as answers.py reads answers: "Q1:", "Q 1:", "**Q1:**", "Question 1:", "Sub-question 1:"
(and A/Answer/Sub-answer alike), steps on one line or several, a reasoning block and text after an
invented next problem set aside. The first sub-answer holding a final answer ("The answer is X", or the
student's own answer sentence) ends the decomposition; what follows it is run-on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kdpipe.answers import answers_agree, canonical_answer, parse_completion, student_text
from kdpipe.prompt_format import PromptFormat, answers_in_sentence, render_answer
from kdpipe.records import Record, Sample

# Why a decomposition is malformed: filter's reason detail, eval's error.
PROBLEMS = {
    "empty": "no text",
    "no_subquestions": "no numbered sub-question (Q1: ...)",
    "misnumbered": "sub-questions out of order",
    "answer_without_subquestion": "an answer with no sub-question before it",
    "unanswered_subquestion": "a sub-question without its answer",
    "empty_step": "a sub-question or answer with no text",
    "no_final_answer": "no final answer after the last sub-answer",
    "final_answer_differs": "the decomposition's final answer is not the answer read from the whole text",
}
_STEP = re.compile(r"(?:^|(?<=\s))[*_]*(?:(?P<q>Q|Question|Sub-?question)|(?P<a>A|Answer|Sub-?answer))"
                   r"\s*(?P<n>\d+)\s*[*_]*\s*:[*_]*", re.I)


@dataclass
class Decomposition:
    steps: list[tuple[str, str]] = field(default_factory=list)  # (sub-question, its answer), in order
    answer: str | None = None  # the canonical final answer
    problem: str | None = None  # a key of PROBLEMS, None when well formed
    detail: str | None = None

    @property
    def reason(self) -> str | None:
        """The problem and what it was about, as filter records it ("unanswered_subquestion: Q2 ...")."""
        return None if self.problem is None else f"{self.problem}: {self.detail or PROBLEMS[self.problem]}"


def _bad(problem: str, detail: str | None = None) -> Decomposition:
    return Decomposition(problem=problem, detail=detail or PROBLEMS[problem])


def has_steps(text: str) -> bool:
    """Whether a text holds at least one numbered sub-question or sub-answer."""
    return _STEP.search(text) is not None


def parse_decomposition(text: str | None, task: str, choices: list[str] | None = None,
                        fmt: PromptFormat | None = None) -> Decomposition:
    """The steps and final answer of a decomposition, or the first thing wrong with it."""
    if text is None or not text.strip():
        return _bad("empty")
    body = student_text(text)
    marks = list(_STEP.finditer(body))
    if not any(m.group("q") for m in marks):
        return _bad("no_subquestions")
    steps: list[list[str]] = []  # [question, answer or None]
    for i, m in enumerate(marks):
        n = int(m.group("n"))
        raw = body[m.end(): marks[i + 1].start() if i + 1 < len(marks) else len(body)]
        content = " ".join(raw.split())
        if m.group("q"):
            if steps and steps[-1][1] is None:
                return _bad("unanswered_subquestion", f"Q{len(steps)} has no answer before Q{n}")
            if n != len(steps) + 1:
                return _bad("misnumbered", f"Q{n} where Q{len(steps) + 1} was due")
            if not content:
                return _bad("empty_step", f"Q{n} is empty")
            steps.append([content, None])
            continue
        if not steps or steps[-1][1] is not None:
            return _bad("answer_without_subquestion", f"A{n} follows no open sub-question")
        if n != len(steps):
            return _bad("misnumbered", f"A{n} answers Q{len(steps)}")
        final = _final_answer(raw, task, choices, fmt)  # line breaks kept: "...\nAnswer: 4" is a marker
        if final is not None:
            said, answer = " ".join(final[0].split()), final[1]
            steps[-1][1] = said or render_answer(fmt or PromptFormat(), answer, choices)
            return Decomposition([(q, a) for q, a in steps], answer)
        if not content:
            return _bad("empty_step", f"A{n} is empty")
        steps[-1][1] = content
    if steps[-1][1] is None:
        return _bad("unanswered_subquestion", f"Q{len(steps)} has no answer")
    return _bad("no_final_answer")


def _final_answer(content: str, task: str, choices: list[str] | None,
                  fmt: PromptFormat | None) -> tuple[str, str] | None:
    """(what the sub-answer says before it, canonical final answer) when a sub-answer ends the problem."""
    if fmt is not None:  # the student's own answer sentence first, as eval reads a cot student
        lead = fmt.answer_sentence.partition("{answer}")[0].replace("{{", "{").replace("}}", "}").strip()
        at = content.find(lead) if lead else -1
        if at >= 0:
            for raw in answers_in_sentence(fmt, content[at:]):
                answer = canonical_answer(raw, task, choices)
                if answer is not None:
                    return content[:at].strip(), answer
    parsed = parse_completion(content, task, choices)
    if parsed.answer is None:
        return None
    return (parsed.rationale or "").strip(), parsed.answer


def render_decomposition(fmt: PromptFormat, steps: list[tuple[str, str]], answer: str,
                         choices: list[str] | None) -> str:
    """A decomposition as a Socratic student writes it: one line per sub-question and per answer, then the
    answer sentence; `parse_decomposition` reads it back to the same steps and answer."""
    lines = []
    for i, (q, a) in enumerate(steps, 1):
        lines += [f"Q{i}: {q}", f"A{i}: {a}"]
    lines.append(fmt.answer_sentence.format(answer=render_answer(fmt, answer, choices)))
    return "\n".join(lines)


def is_socratic(rec: Record) -> bool:
    """Whether a record was labelled with a Socratic prompt (its file name starts with "socratic")."""
    teacher = rec.provenance.get("teacher")
    return isinstance(teacher, dict) and str(teacher.get("prompt") or "").lower().startswith("socratic")


def sample_decomposition(rec: Record, s: Sample) -> Decomposition:
    """A teacher sample's decomposition, checked against the answer `generate` read from its whole text."""
    text = s.text if s.text is not None else f"{s.rationale or ''}\nThe answer is {s.answer}."
    d = parse_decomposition(text, rec.task, rec.choices)
    if d.problem is None and s.answer is not None and not answers_agree(d.answer, s.answer, rec.task, rec.choices):
        return _bad("final_answer_differs", f"the decomposition ends in {d.answer!r}, the text reads {s.answer!r}")
    return d
