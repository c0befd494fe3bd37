"""Fixtures for train/eval tests: a learnable toy task, SFT rows written by `kdpipe format`, a tiny student.

The toy task is memorisation: six colour questions, each seen many times, whose
answers a random 2-layer model learns in a few dozen LoRA steps. Each question
is held by two records (ids `qNa`, `qNb`) carrying teacher samples with a
rationale, so `format` holds one record out for validation while its twin
trains. Eval asks the six questions, so a trained student beats its untrained
self.
"""

from __future__ import annotations

from pathlib import Path

from kdpipe.format import FormatOptions, run_format
from kdpipe.prompt_format import PromptFormat, render_completion, render_prompt
from kdpipe.records import Record, Sample, write_records

FACTS = [
    ("What colour is the sky?", "blue"),
    ("What colour is grass?", "green"),
    ("What colour is snow?", "white"),
    ("What colour is coal?", "black"),
    ("What colour is a ruby?", "red"),
    ("What colour is a banana?", "yellow"),
]
CHOICES = ["blue", "green", "white", "black", "red", "yellow"]
RATIONALE = "Everyone has seen it: it is {a}."


def eval_records() -> list[Record]:
    return [Record(id=f"q{i}", question=q, task="choice", choices=CHOICES, gold=a)
            for i, (q, a) in enumerate(FACTS)]


def write_eval(path: Path) -> Path:
    write_records(path, eval_records())
    return path


def teacher_records(samples: int) -> list[Record]:
    """Records as `filter` leaves them: gold, and `samples` correct teacher samples with rationales."""
    out = []
    for i, (q, a) in enumerate(FACTS):
        for twin in "ab":
            out.append(Record(id=f"q{i}{twin}", question=q, task="choice", choices=CHOICES, gold=a, samples=[
                Sample(index=k, text=f"{RATIONALE.format(a=a)} The answer is {a}.", rationale=RATIONALE.format(a=a),
                       answer=a) for k in range(samples)]))
    return out


def prompt_format(style: str, chat: bool = True) -> dict:
    return PromptFormat(style=style, chat=chat).to_dict()


def write_sft(path: Path, style: str = "label", chat: bool = True, repeats: int = 4) -> Path:
    """SFT rows and `<sft>.meta.json` written by the real `format` stage."""
    records = path.with_name(path.stem + ".records.jsonl")
    write_records(records, teacher_records(repeats))
    run_format(records, path, FormatOptions(style=style, chat=chat, val_frac=1 / 6, seed=0))
    return path


def corpus_texts() -> list[str]:
    """Tokenizer training text: every prompt and completion the tests use."""
    texts = []
    for q, a in FACTS:
        for style in ("label", "dss", "cot"):
            fmt = PromptFormat(style=style)
            for task in ("label", "rationale", "cot", "answer"):
                texts.append(render_prompt(fmt, q, CHOICES, task))
            texts.append(render_completion(fmt, "cot", a, CHOICES, RATIONALE.format(a=a)))
    return texts * 4


def build_student(out_dir: Path) -> Path:
    from kdpipe.tiny_student import TinyOptions, build_tiny_student

    return build_tiny_student(out_dir, corpus_texts(), TinyOptions(vocab_size=400, seed=0))
