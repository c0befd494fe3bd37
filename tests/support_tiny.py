"""Fixtures for train/eval tests: a learnable toy task, SFT rows in `format`'s shape, a tiny student.

The toy task is memorisation: a few questions, each seen many times, whose
answers a random 2-layer model can learn in a few dozen LoRA steps. Eval
asks the same questions, so a trained student beats its untrained self.
"""

from __future__ import annotations

import json
from pathlib import Path

from kdpipe.records import Record, write_records
from kdpipe.student import render_prompt

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


def _row(i: int, rep: int, task: str, prompt: str, completion: str, chat: bool, split: str) -> dict:
    return {"id": f"q{i}", "sample": rep, "task": task, "split": split,
            "prompt": [{"role": "user", "content": prompt}] if chat else prompt,
            "completion": [{"role": "assistant", "content": completion}] if chat else completion}


def prompt_format(style: str, chat: bool = True) -> dict:
    fmt = {"style": style, "chat": chat}
    if style == "dss":
        fmt.update(label_prefix="[label] ", rationale_prefix="[rationale] ")
    return fmt


def write_sft(path: Path, style: str = "label", chat: bool = True, repeats: int = 8) -> Path:
    """SFT rows in the `format` contract, plus `<sft>.meta.json` with the prompt format."""
    fmt = prompt_format(style, chat)
    rows = []
    for rep in range(repeats):
        split = "val" if rep == repeats - 1 else "train"
        for i, (q, a) in enumerate(FACTS):
            if style == "cot":
                rows.append(_row(i, rep, "cot", render_prompt(fmt, q, CHOICES, "cot"),
                                 f"{RATIONALE.format(a=a)} The answer is {a}.", chat, split))
                continue
            rows.append(_row(i, rep, "label", render_prompt(fmt, q, CHOICES, "label"), a, chat, split))
            if style == "dss":
                rationale_prompt = fmt["rationale_prefix"] + q + "\nAnswer Choices:" + "".join(
                    f"\n({chr(97 + k)}) {c}" for k, c in enumerate(CHOICES))
                rows.append(_row(i, rep, "rationale", rationale_prompt, RATIONALE.format(a=a), chat, split))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    Path(str(path) + ".meta.json").write_text(json.dumps({"stage": "format", "prompt_format": fmt}),
                                              encoding="utf-8")
    return path


def corpus_texts() -> list[str]:
    texts = []
    for q, a in FACTS:
        for style in ("label", "dss", "cot"):
            fmt = prompt_format(style)
            texts.append(render_prompt(fmt, q, CHOICES, "label"))
        texts.append(f"{RATIONALE.format(a=a)} The answer is {a}.")
    return texts * 4


def build_student(out_dir: Path) -> Path:
    from kdpipe.tiny import TinyOptions, build_tiny_student

    return build_tiny_student(out_dir, corpus_texts(), TinyOptions(vocab_size=400, seed=0))
