"""Socratic CoT with two roles (Shridhar et al., 2023): a question generator and a solver, asked in turn.

`format --style socratic --socratic-roles two` turns each decomposition of n steps into 2n rows:

    subquestion  "ask: <problem>" + the steps so far        -> "Qi: <next sub-question>"
    subanswer    "solve: <problem>" + the steps so far + Qi  -> "Ai: <its answer>"
                 (the last one also ends with the answer sentence: "The answer is X.")

and `eval` runs the same turns at inference: the generator writes the next sub-question, the solver answers
it, until the solver states a final answer, the transcript stops being a well-formed decomposition, or
`MAX_STEPS` turns have passed. The transcript is then read like a one-model student's completion
(kdpipe/socratic.py). Both roles are tasks of one student model, told apart by their prefixes.
"""

from __future__ import annotations

import re
from typing import Callable

from kdpipe.prompt_format import PromptFormat, question_text, render_answer
from kdpipe.records import Record
from kdpipe.socratic import parse_decomposition

MAX_STEPS = 8
# Where a solver running on starts writing the next sub-question itself.
_NEXT_QUESTION = re.compile(r"\n\s*[*_]*(?:Q|Question|Sub-?question)\s*\d+\s*[*_]*\s*:", re.I)


def role_prompt(fmt: PromptFormat, question: str, choices: list[str] | None, task: str, done: list[str]) -> str:
    """The prompt of a role: its prefix and the problem, then the transcript so far, one step a line."""
    text = "\n".join([question_text(fmt, question, choices, task), *done])
    return text if fmt.chat else text + fmt.plain_prompt_end


def role_examples(fmt: PromptFormat, question: str, choices: list[str] | None, steps: list[tuple[str, str]],
                  answer: str) -> list[tuple[str, str, str]]:
    """(task, prompt, completion) of both roles for every step of a decomposition."""
    rows, done = [], []
    for i, (q, a) in enumerate(steps, 1):
        rows.append(("subquestion", role_prompt(fmt, question, choices, "subquestion", done), f"Q{i}: {q}"))
        done.append(f"Q{i}: {q}")
        said = f"A{i}: {a}"
        if i == len(steps):
            said += "\n" + fmt.answer_sentence.format(answer=render_answer(fmt, answer, choices))
        rows.append(("subanswer", role_prompt(fmt, question, choices, "subanswer", done), said))
        done.append(f"A{i}: {a}")
    return rows


def ask_in_roles(fmt: PromptFormat, records: list[Record], complete: Callable[[list[str]], list[str]],
                 max_steps: int = MAX_STEPS) -> list[str]:
    """Each record's transcript of the two roles' turns; `complete` answers a batch of prompt texts (a
    local model, greedily)."""
    def prompts(task: str, which: list[int]) -> list[str]:
        return [role_prompt(fmt, records[i].question, records[i].choices, task, transcripts[i]) for i in which]

    transcripts: list[list[str]] = [[] for _ in records]
    active = list(range(len(records)))
    for _ in range(max_steps):
        if not active:
            break
        for i, text in zip(active, complete(prompts("subquestion", active))):
            transcripts[i].append(next((line.strip() for line in text.splitlines() if line.strip()), ""))
        for i, text in zip(active, complete(prompts("subanswer", active))):
            transcripts[i].append(_NEXT_QUESTION.split(text, 1)[0].strip())
        # Well formed but unfinished: another turn; finished or malformed: done.
        active = [i for i in active if parse_decomposition("\n".join(transcripts[i]), records[i].task,
                                                           records[i].choices, fmt).problem == "no_final_answer"]
    return ["\n".join(t) for t in transcripts]
