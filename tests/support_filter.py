"""Test support for filter/format: teacher records built from the recorded PaLM outputs.

The Distilling step-by-step release ships PaLM-540B few-shot CoT outputs for
the SVAMP and CQA train sets (../shared/data/dss): element j of
`llm/train_CoT_i.json` answers row i*B+j of the train file. Here the train
file goes through the real `seed` stage, and each seed record gets the PaLM
output of its source row as a teacher sample, parsed with
answers.parse_completion exactly as `generate` parses a live teacher.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kdpipe.answers import parse_completion
from kdpipe.records import Sample, load_records, write_records
from kdpipe.seed import SeedOptions, run_seed

BLOCK = {"svamp": 500, "cqa": 1000}


def palm_outputs(shared_data: Path, ds: str) -> list[str]:
    llm = shared_data / "dss" / ds / "llm"
    files = sorted(llm.glob("train_CoT_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    outputs = []
    for i, f in enumerate(files):
        part = json.loads(f.read_text())
        assert len(outputs) == i * BLOCK[ds]
        outputs.extend(part)
    return outputs


def palm_teacher_records(shared_data: Path, ds: str, workdir: Path) -> Path:
    """seed the train file, attach each row's PaLM output as sample 0; return the records file."""
    seeds = workdir / f"{ds}_seeds.jsonl"
    run_seed(shared_data / "dss" / ds / f"{ds}_train.json", seeds, SeedOptions())
    outputs = palm_outputs(shared_data, ds)
    records = load_records(seeds)
    for rec in records:
        text = outputs[rec.provenance["line"] - 1]  # JSONL line n is train row n-1
        parsed = parse_completion(text, rec.task, rec.choices)
        rec.samples = [Sample(index=0, text=text, rationale=parsed.rationale, answer=parsed.answer,
                              finish_reason="stop", error=parsed.error, detail=parsed.detail)]
        rec.provenance["teacher"] = {"model": "PaLM-540B (recorded, Distilling step-by-step release)"}
    out = workdir / f"{ds}_teacher.jsonl"
    write_records(out, records)
    return out


def unwritable_outputs(tmp_path):
    """Output paths the file system refuses, with the one line each should give."""
    (tmp_path / "notdir").write_text("a file\n")
    cases = [(tmp_path / "notdir" / "s.jsonl", f"{tmp_path / 'notdir'} is a file, not a folder"),
             (tmp_path / "notdir" / "deeper" / "s.jsonl", f"{tmp_path / 'notdir'} is a file, not a folder")]
    if sys.platform.startswith("linux"):  # /proc takes no new files, even from root
        cases.append((Path("/proc/kdpipe-test.jsonl"), "No such file or directory"))
    return cases
