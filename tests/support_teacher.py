"""Fixtures shared by the teacher and generate tests: SVAMP seeds and a loopback script of PaLM outputs."""

from __future__ import annotations

import json
from pathlib import Path

from kdpipe.records import load_records
from kdpipe.seed import SeedOptions, run_seed
from kdpipe.loopback import ScriptLine


def svamp_seeds(shared_data: Path, tmp: Path, limit: int | None = None) -> Path:
    """The SVAMP training questions as seed records (kdpipe seed), in file order."""
    out = tmp / "seeds.jsonl"
    run_seed(shared_data / "dss" / "svamp" / "svamp_train.json", out, SeedOptions(limit=limit))
    return out


def palm_script(shared_data: Path, seeds: Path) -> list[ScriptLine]:
    """Each seed question answered with its recorded PaLM completion (the run-on text included)."""
    root = shared_data / "dss" / "svamp" / "llm"
    palm = json.load(open(root / "train_CoT_0.json")) + json.load(open(root / "train_CoT_1.json"))
    rows = [json.loads(line) for line in open(shared_data / "dss" / "svamp" / "svamp_train.json")]
    by_input = {" ".join(r["input"].split()): text for r, text in zip(rows, palm)}
    return [ScriptLine(r.question, [by_input[" ".join(r.question.split())]]) for r in load_records(seeds)]


def write_script(lines: list[ScriptLine], path: Path) -> Path:
    with open(path, "w") as fp:
        for line in lines:
            fp.write(json.dumps({"question": line.question, "completions": line.completions,
                                 "expand": line.expand}) + "\n")
    return path
