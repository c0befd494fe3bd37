"""seed -> recorded PaLM teacher outputs -> filter -> format, on the real SVAMP and CQA train sets."""

import json

import pytest
from support_filter import palm_teacher_records

from kdpipe import answers
from kdpipe.records import load_records
from kdpipe.seed import SeedOptions, run_seed


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("ds", ["svamp", "cqa"])
def test_filter_keeps_only_teacher_answers_matching_gold(shared_data, tmp_path, cli, ds):
    teacher = palm_teacher_records(shared_data, ds, tmp_path)
    inputs = load_records(teacher)
    code, _, err = cli("filter", teacher, "-o", tmp_path / "kept.jsonl", "--rejected", tmp_path / "rej.jsonl",
                       "--report", tmp_path / "report.json")
    assert code == 0, err
    kept = load_records(tmp_path / "kept.jsonl")
    rejected = read_jsonl(tmp_path / "rej.jsonl")
    report = json.loads((tmp_path / "report.json").read_text())

    assert report["input"] == len(inputs) == report["kept"] + sum(r["records"] for r in report["rules"])
    assert report["kept"] == len(kept) and len(rejected) == len(inputs) - len(kept)
    assert sorted([r.id for r in kept] + [r["id"] for r in rejected]) == sorted(r.id for r in inputs)
    assert 0.6 <= len(kept) / len(inputs) <= 0.85
    for rec in kept:
        assert rec.samples and all(answers.answers_agree(s.answer, rec.gold, rec.task, rec.choices)
                                   for s in rec.samples)
    # Every record whose (single) teacher answer disagrees with gold is among the rejected, for that reason.
    by_id = {r["id"]: r for r in rejected}
    for rec in inputs:
        s = rec.samples[0]
        if s.error is None and not answers.answers_agree(s.answer, rec.gold, rec.task, rec.choices):
            assert by_id[rec.id]["reason"] == "gold_mismatch"
    assert all(r["reason"] for r in rejected)

    # -> format: Distilling step-by-step rows and CoT rows trace back to their seeds.
    code, _, err = cli("format", tmp_path / "kept.jsonl", "-o", tmp_path / "dss.jsonl", "--style", "dss")
    assert code == 0, err
    rows = read_jsonl(tmp_path / "dss.jsonl")
    assert len(rows) == 2 * len(kept)
    kept_by_id = {r.id: r for r in kept}
    val = {r["id"] for r in rows if r["split"] == "val"}
    assert abs(len(val) - round(0.1 * len(kept))) <= 1
    for row in rows[:200]:
        rec = kept_by_id[row["id"]]
        content = row["completion"][0]["content"]
        if row["task"] == "label":
            assert answers.answers_agree(content, rec.gold, rec.task, rec.choices)
        else:
            assert content == rec.samples[0].rationale.strip()
    code, _, err = cli("format", tmp_path / "kept.jsonl", "-o", tmp_path / "cot.jsonl", "--style", "cot",
                       "--no-chat")
    assert code == 0, err
    for row in read_jsonl(tmp_path / "cot.jsonl")[:200]:
        rec = kept_by_id[row["id"]]
        parsed = answers.parse_completion(row["completion"], rec.task, rec.choices)
        assert answers.answers_agree(parsed.answer, rec.gold, rec.task, rec.choices), row["completion"]


def test_svamp_decontaminated_against_its_test_split(shared_data, tmp_path, cli):
    teacher = palm_teacher_records(shared_data, "svamp", tmp_path)
    run_seed(shared_data / "dss" / "svamp" / "svamp_test.json", tmp_path / "eval.jsonl", SeedOptions())
    eval_ids = {r.id for r in load_records(tmp_path / "eval.jsonl")}
    code, _, err = cli("filter", teacher, "-o", tmp_path / "kept.jsonl", "--rejected", tmp_path / "rej.jsonl",
                       "--report", tmp_path / "report.json", "--against", tmp_path / "eval.jsonl")
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    contaminated = [r for r in read_jsonl(tmp_path / "rej.jsonl") if r["reason"] == "contaminated"]
    # SVAMP varies one body into several problems, so train and test share questions' bodies.
    assert len(contaminated) == {r["rule"]: r["records"] for r in report["rules"]}["contaminated"] > 0
    for r in contaminated:
        assert r["reason_detail"].split()[-1] in eval_ids or r["reason_detail"].split()[-3] in eval_ids
    assert report["input"] == report["kept"] + sum(r["records"] for r in report["rules"])
