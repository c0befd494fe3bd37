"""A local model's answers to records, read the way `filter` reads the teacher's (kdpipe/answers.py).

Shared by `eval` (scoring the student) and `probe` (finding the questions it gets wrong), so both ask
the model exactly as it was trained and read its answers by one rule.
"""

from __future__ import annotations

import time
from typing import Any

from kdpipe.answers import canonical_answer, parse_completion, student_text
from kdpipe.demos import DemoPool
from kdpipe.errors import KdpipeError
from kdpipe.numbers import is_number_only
from kdpipe.prompt_format import (PromptFormat, answer_in_sentence, answers_in_sentence, inference_task,
                                  load_prompt_format, render_prompt)
from kdpipe.records import Record
from kdpipe.socratic import parse_decomposition


def read_answer(text: str, asked_task: str, record: Record,
                fmt: PromptFormat | None = None) -> tuple[str | None, str | None]:
    """(canonical answer, error) of a completion: the student's first complete answer.

    A reasoning block (`<think>…</think>`), an echo of the prompt and anything after the
    start of an invented next example ("\\nQ: …") are set aside first. CoT completions
    end in the student's answer sentence (`fmt.answer_sentence`, as `format
    --answer-sentence` stored it): the first one holding an answer of the task counts;
    without one, the generic markers of answers.parse_completion ("The answer is X",
    "Answer: X", ...) are tried. Socratic completions are read by kdpipe/socratic.py: the final
    answer of a well-formed decomposition, else the decomposition's problem as the error.
    Answer-only completions must be the answer itself.
    """
    said = _drop_echo(student_text(text), record, asked_task, fmt)
    if asked_task == "socratic":  # a malformed decomposition is wrong, whatever answer it may state
        d = parse_decomposition(said, record.task, record.choices, fmt)
        return (d.answer, None) if d.problem is None else (None, d.problem)
    if asked_task == "cot":
        for raw in answers_in_sentence(fmt, said) if fmt is not None else ():
            answer = canonical_answer(raw, record.task, record.choices)
            if answer is not None:
                return answer, None
        parsed = parse_completion(said, record.task, record.choices)
        return parsed.answer, parsed.error
    if not said.strip():
        return None, "empty"
    answer = _whole_answer(said, record, fmt)
    return answer, None if answer is not None else "unparseable"


def _drop_echo(text: str, record: Record, asked_task: str, fmt: PromptFormat | None) -> str:
    """The completion without a leading copy of its prompt (or of the bare question)."""
    stripped = text.lstrip()
    echoes = [record.question.strip()]
    if fmt is not None:
        echoes.insert(0, render_prompt(fmt, record.question, record.choices, asked_task).strip())
    for echo in echoes:
        if echo and stripped.startswith(echo):
            return stripped[len(echo):]
    return text


_EDGE_PUNCTUATION = " \t\r\n.,;:!?\"'"


def _whole_answer(text: str, record: Record, fmt: PromptFormat | None) -> str | None:
    """The canonical answer when an answer-only completion is the answer itself (give or take
    surrounding whitespace and punctuation, or the student's answer sentence around it); else None.

    answers.canonical_answer alone would take the one number out of any text, so that a random
    model's "arore them Gus 26 frien" would count as the answer 26; and a bare expression
    ("56 - 18") is the question restated, not its answer.
    """
    core = text.strip()
    if record.task != "text":
        core = core.split("\n", 1)[0]  # an answer is one line; what follows is run-on
    in_sentence = answer_in_sentence(fmt, core) if fmt is not None else None
    if in_sentence is not None:
        core = in_sentence
    core = core.strip(_EDGE_PUNCTUATION)
    if not core:
        return None
    if record.task == "numeric" and not is_number_only(core):
        return None
    return canonical_answer(core, record.task, record.choices)


def answer_locally(spec: str, records: list[Record], batch_size: int, max_new_tokens: int | None,
                   fmt_override: dict[str, Any] | None = None
                    ) -> tuple[list[str], PromptFormat, float, dict[str, Any]]:
    """Greedy answers of a run directory or model (kdpipe/decoding.py's one setup), asked with the
    prompt format's in-context demonstrations when it has them (kdpipe/demos.py);
    returns (texts, prompt format, seconds, the decoding record for eval.json)."""
    from kdpipe.decoding import Decoding, generate, record, stop_tokens
    from kdpipe.libraries import quiet_libraries
    from kdpipe.student import encode_prompt, load_student, resolve_source

    quiet_libraries()
    src = resolve_source(spec)
    fmt = load_prompt_format(src.prompt_format if src.run_dir or fmt_override is None else fmt_override,
                             f"{spec}: prompt format")
    model, tokenizer = load_student(src)
    if fmt.chat and not tokenizer.chat_template:
        raise KdpipeError(f"{spec}: the tokenizer has no chat template, but the prompt format is chat")
    task = inference_task(fmt)
    pool = DemoPool(fmt)
    prompts = [encode_prompt(tokenizer, pool.prompt(r.id, r.question, r.choices, r.task, task)[0], fmt.chat)
               for r in records]
    long = task in ("cot", "socratic") or any(r.task == "instruction" for r in records)  # a rationale or a response comes first
    decoding = Decoding(max_new_tokens=max_new_tokens or (256 if long else 32))
    stops = stop_tokens(model, tokenizer)
    started = time.perf_counter()
    if fmt.socratic_roles == "two":  # the question generator and the solver in turn: kdpipe/socratic_roles.py
        from kdpipe.socratic_roles import ask_in_roles

        texts = ask_in_roles(fmt, records, lambda asked: generate(
            model, tokenizer, [encode_prompt(tokenizer, p, fmt.chat) for p in asked], decoding, batch_size, stops))
    else:
        texts = generate(model, tokenizer, prompts, decoding, batch_size, stops)
    return texts, fmt, time.perf_counter() - started, record(decoding, stops, model)
