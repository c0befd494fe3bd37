"""The recorded PaLM outputs of Distilling step-by-step, paired with their gold answers."""

from __future__ import annotations

import json
from pathlib import Path

from kdpipe import answers


def palm_rows(data: Path, dataset: str, split: str):
    """Yield (completion, task, choices, gold) for every recorded PaLM output of a split."""
    root = data / "dss" / dataset
    gold_rows = [json.loads(line) for line in open(root / f"{dataset}_{split}.json") if line.strip()]
    outputs = []
    for i in range(100):
        f = root / "llm" / f"{split}_CoT_{i}.json"
        if not f.exists():
            break
        outputs += json.load(open(f))
    assert len(outputs) == len(gold_rows)
    for text, row in zip(outputs, gold_rows):
        if dataset == "svamp":
            yield text, "numeric", None, answers.canonical_answer(row["label"], "numeric")
        else:
            yield text, "choice", row["choices"], row["answer"]


def palm_scores(data: Path, dataset: str, split: str) -> dict:
    """How often the parser finds an answer, and how often it equals gold."""
    n = parsed = correct = 0
    for text, task, choices, gold in palm_rows(data, dataset, split):
        p = answers.parse_completion(text, task, choices)
        n += 1
        parsed += p.answer is not None
        correct += answers.answers_agree(p.answer, gold, task, choices)
    return {"n": n, "parsed": parsed, "correct": correct}
