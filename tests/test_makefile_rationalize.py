"""RATIONALIZE=1 and COUNTERFACTUAL=N in the Makefile: each a teacher step in the pipeline."""

import json

import pytest
from test_makefile import make, meta, work  # noqa: F401  (work: the fixture)

from kdpipe.generate.rationalize import needs_rationale
from kdpipe.records import load_records


@pytest.mark.slow
def test_rationalize_and_counterfactual_steps_run_between_label_and_filter(work):  # noqa: F811
    run = make(work, "filter", "RATIONALIZE=1", "COUNTERFACTUAL=1", "NUM_NEW=0")
    assert "--mode counterfactual --samples 1" in run.stdout and "--mode rationalize" in run.stdout
    seeds = load_records(work / "seeds.jsonl")
    # The demo's script has no counterfactual replies: every request is counted, none becomes an edit.
    assert meta(work, "counterfactual.jsonl")["counts"]["no_edit"] == len(seeds)
    assert str(work / "rationalized.jsonl") in meta(work, "filtered.jsonl")["inputs"]
    asked = [r.id for r in load_records(work / "teacher.jsonl") if needs_rationale(r)]
    marked = [r.id for r in load_records(work / "rationalized.jsonl") if any(s.rationalized for s in r.samples)]
    assert marked == asked
    report = json.loads((work / "filter-report.json").read_text())
    assert report.get("rationalized", {"samples": 0})["samples"] == len(asked)
    # Without the variables the pipeline is as before: filter reads the label step's output.
    make(work, "filter")
    assert str(work / "teacher.jsonl") in meta(work, "filtered.jsonl")["inputs"]
