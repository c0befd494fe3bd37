"""Reading the SFT examples written by `kdpipe format`, and checking them against a tokenizer.

One JSONL row per training example:

    {"id": ..., "sample": int|null, "task": "label"|"rationale"|"cot"|"answer",
     "split": "train"|"val", "prompt": [{"role": "user", "content": ...}],
     "completion": [{"role": "assistant", "content": ...}]}

(`format --no-chat` writes prompt and completion as plain strings.) Beside
the file, `<sft>.meta.json` holds the prompt format the student must be
asked with at eval time.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdpipe.errors import InputError, KdpipeError
from kdpipe.prompt_format import PROMPT_TASKS, PromptFormat, load_prompt_format
from kdpipe.records import iter_json_objects, meta_path
from kdpipe.token_logprobs import problem as logprobs_problem

SPLITS = ("train", "val")


@dataclass
class SftData:
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    chat: bool
    tasks: Counter = field(default_factory=Counter)
    prompt_format: dict[str, Any] = field(default_factory=dict)
    prompt_format_inferred: bool = False

    @property
    def has_rationale(self) -> bool:
        return self.tasks.get("rationale", 0) > 0

    @property
    def has_teacher(self) -> bool:
        return any("teacher" in row for row in self.train)


def _check_messages(value: Any, role: str) -> str | None:
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of {'role', 'content'} messages"
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or not isinstance(m.get("role"), str):
            return "every message needs a string 'role' and 'content'"
    if value[-1]["role"] != role:
        return f"the last message must have role '{role}'"
    return None


def read_sft(path: str | os.PathLike) -> SftData:
    """Read and check SFT rows; one file:line error for the first bad row."""
    path = Path(path)
    if not path.is_file():
        raise KdpipeError(f"{path}: no such file")
    train, val, tasks = [], [], Counter()
    chat: bool | None = None
    for line, obj in iter_json_objects(path):
        for key in ("prompt", "completion"):
            if key not in obj:
                raise InputError(path, f"missing field '{key}' (expected the SFT rows written by "
                                       f"`kdpipe format`)", line)
        row_chat = isinstance(obj["prompt"], list)
        if chat is None:
            chat = row_chat
        elif row_chat != chat:
            raise InputError(path, "mixes chat rows (message lists) and plain-text rows", line)
        if chat:
            for key, role in (("prompt", "user"), ("completion", "assistant")):
                problem = _check_messages(obj[key], role)
                if problem:
                    raise InputError(path, f"field '{key}' {problem}", line)
        elif not isinstance(obj["prompt"], str) or not isinstance(obj["completion"], str):
            raise InputError(path, "fields 'prompt' and 'completion' must both be strings or both "
                                   "message lists", line)
        task = obj.get("task", "answer")
        if task not in PROMPT_TASKS:
            raise InputError(path, f"field 'task' must be one of {', '.join(PROMPT_TASKS)}, got {task!r}", line)
        split = obj.get("split", "train")
        if split not in SPLITS:
            raise InputError(path, f"field 'split' must be 'train' or 'val', got {split!r}", line)
        completion_text = obj["completion"][-1]["content"] if chat else obj["completion"]
        if not completion_text.strip():
            raise InputError(path, "empty completion", line)
        row = {"prompt": obj["prompt"], "completion": obj["completion"], "task": task}
        if obj.get("teacher") is not None:  # the teacher's top-K of this completion (format --style kd)
            if logprobs_problem(obj["teacher"]):
                raise InputError(path, f"field 'teacher' {logprobs_problem(obj['teacher'])}", line)
            row.update(teacher=obj["teacher"], id=obj.get("id"))
        (val if split == "val" else train).append(row)
        tasks[task] += 1
    if not train:
        raise KdpipeError(f"{path}: no training rows (split 'train')")
    fmt, inferred = _prompt_format(path, tasks, bool(chat))
    return SftData(train=train, val=val, chat=bool(chat), tasks=tasks, prompt_format=fmt,
                   prompt_format_inferred=inferred)


def _prompt_format(path: Path, tasks: Counter, chat: bool) -> tuple[dict[str, Any], bool]:
    meta = meta_path(path)
    if meta.is_file():
        try:
            fmt = json.loads(meta.read_text(encoding="utf-8")).get("prompt_format")
        except json.JSONDecodeError as e:
            raise InputError(meta, f"not valid JSON: {e.msg}", e.lineno) from None
        if fmt is not None:
            stored = load_prompt_format(fmt, f"{meta}: prompt_format")
            if stored.chat != chat:
                raise InputError(meta, f"the prompt format says chat={stored.chat}, but the rows of {path} are "
                                       f"{'chat messages' if chat else 'plain strings'}")
            return stored.to_dict(), False
    # No metadata (hand-made data): infer what the rows show.
    style = ("dss" if tasks.get("rationale") else "cot" if tasks.get("cot")
             else "label" if tasks.get("label") else "gold")
    return PromptFormat(style=style, chat=chat).to_dict(), True


def prompt_lengths(rows: list[dict[str, Any]], tokenizer, chat: bool) -> list[tuple[int, int]]:
    """(prompt tokens, prompt + completion tokens) per row, tokenized as TRL does."""
    out = []
    for row in rows:
        if chat:
            p = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                              return_dict=True)["input_ids"]
            pc = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True,
                                               return_dict=True)["input_ids"]
        else:
            p = tokenizer(text=row["prompt"])["input_ids"]
            pc = tokenizer(text=row["prompt"] + row["completion"])["input_ids"]
        out.append((len(p), len(pc)))
    return out


def check_lengths(rows: list[dict[str, Any]], tokenizer, chat: bool,
                  max_length: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Drop rows whose prompt alone fills --max-length (nothing left to learn) and count
    truncated completions; fail when --max-length cuts every completion."""
    lengths = prompt_lengths(rows, tokenizer, chat)
    cut_whole = sum(1 for p, _ in lengths if p >= max_length)
    cut_part = sum(1 for p, pc in lengths if p < max_length < pc)
    if cut_whole == len(lengths):
        shortest = min(p for p, _ in lengths)
        raise KdpipeError(f"--max-length {max_length} cuts every completion (the shortest prompt is "
                          f"{shortest} tokens); raise --max-length above {max(pc for _, pc in lengths)}")
    kept = [row for row, (p, _) in zip(rows, lengths) if p < max_length]
    return kept, {"dropped_prompt_too_long": cut_whole, "completions_truncated": cut_part,
                  "longest_tokens": max(pc for _, pc in lengths)}
