"""In-context demonstrations (in-context distillation: Huang et al., 2022, arXiv:2212.10670).

`format --icl-shots K` fine-tunes the student with K demonstrations (a question and the teacher's answer,
written as the row's style writes it) before each training question, so that it learns to use examples;
`eval` then asks it with K demonstrations too. Both draw them by the one rule here, from one pool: training
records of `format`'s input, stored in the prompt format (`PromptFormat.demonstrations`). The prompt format
travels as a file already (`<sft>.meta.json`, copied by `train` into the run directory's
`prompt_format.json`), so a trained student carries its demonstrations and eval needs nothing else.

The draw for a question is the pool entries of its task (numeric, choice, ...) that have a completion for
the prompt's task, minus the question's own record and any record of the same question (a twin would hand
it its answer), ranked by a hash of the seed and both ids (`keys.split_rank`): the same on every run and
machine, whatever order the records come in. Eval questions are never in the pool: it holds only records
of `format`'s training split.
"""

from __future__ import annotations

from kdpipe.keys import question_key, split_rank
from kdpipe.prompt_format import PromptFormat, question_text, render_prompt

# Between demonstrations, and between the last one and the question asked.
SEPARATOR = "\n\n"


class DemoPool:
    """The demonstrations of a prompt format, grouped by task, ready to draw from."""

    def __init__(self, fmt: PromptFormat):
        self.fmt = fmt
        self._by_task: dict[str, list[tuple[dict, bytes]]] = {}
        for d in fmt.demonstrations if fmt.icl_shots else ():
            self._by_task.setdefault(d["task"], []).append((d, question_key(d["question"], d["choices"])))

    def draw(self, record_id: str, question: str, choices: list[str] | None, record_task: str,
             prompt_task: str) -> list[dict]:
        """The demonstrations a question is asked with (fewer than K only when the pool has fewer)."""
        if not self.fmt.icl_shots:
            return []
        key = question_key(question, choices)
        candidates = [d for d, k in self._by_task.get(record_task, ())
                      if d["id"] != record_id and k != key and prompt_task in d["completions"]]
        candidates.sort(key=lambda d: split_rank(f"{record_id}\0{d['id']}", self.fmt.icl_seed))
        return candidates[: self.fmt.icl_shots]

    def prompt(self, record_id: str, question: str, choices: list[str] | None, record_task: str,
               prompt_task: str) -> tuple[str, list[str]]:
        """(prompt text, ids of its demonstrations): `render_prompt`'s text after the drawn demonstrations."""
        demos = self.draw(record_id, question, choices, record_task, prompt_task)
        text = render_prompt(self.fmt, question, choices, prompt_task)
        return with_demos(self.fmt, demos, prompt_task, text), [d["id"] for d in demos]


def with_demos(fmt: PromptFormat, demos: list[dict], prompt_task: str, prompt_text: str) -> str:
    """Each demonstration as its question (as the task puts it) and its completion, then the prompt."""
    if not demos:
        return prompt_text
    blocks = [f"{question_text(fmt, d['question'], d['choices'], prompt_task)}\n{d['completions'][prompt_task]}"
              for d in demos]
    return SEPARATOR.join(blocks + [prompt_text])


def demonstration(record_id: str, record_task: str, question: str, choices: list[str] | None,
                  completions: dict[str, str]) -> dict:
    """One pool entry: a training record and the completion of each prompt task its rows have."""
    return {"id": record_id, "task": record_task, "question": question, "choices": choices,
            "completions": completions}
