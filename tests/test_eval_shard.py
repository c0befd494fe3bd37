"""`eval --shard I/N` and `kdpipe merge` of eval shards: the merged files are what one unsharded eval writes
(a trained tiny student, its untrained base as baseline, and the loopback teacher with prices)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import support_tiny as st  # noqa: E402

from kdpipe.loopback import ScriptLine, running  # noqa: E402

TIMING = ("seconds", "examples_per_s")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from kdpipe.train import TrainOptions, run_train

    d = tmp_path_factory.mktemp("evalshard")
    st.build_student(d / "student")
    sft = st.write_sft(d / "sft.jsonl", "label")
    run_train(sft, d / "run", TrainOptions(student=str(d / "student"), max_steps=20, batch_size=8, max_length=96,
                                           learning_rate=3e-3, log_every=10, eval_every=50))
    st.write_eval(d / "eval.jsonl")
    return d


def _script() -> list:
    return [ScriptLine(q, [f"It is the usual colour. So the answer is ({chr(97 + st.CHOICES.index(a))}) {a}."])
            for q, a in st.FACTS]


def _without_timing(report: dict) -> dict:
    return {**report, "models": [{k: v for k, v in m.items() if k not in TIMING} for m in report["models"]]}


def test_two_shards_merged_are_the_unsharded_eval(trained, cli, tmp_path):
    d = trained
    with running(_script()) as server:
        common = ("eval", d / "eval.jsonl", "--model", d / "run", "--baseline", d / "student", "--teacher",
                  "loopback-teacher", "--base-url", server.base_url, "--price-in", "1.0", "--price-out", "2.0", "-q")
        # Each machine has its own teacher cache; the unsharded run too (a cache answer counts apart).
        for i in (1, 2):
            code, _, err = cli(*common, "--shard", f"{i}/2", "-o", tmp_path / f"part{i}.json",
                               "--cache", tmp_path / f"cache{i}.sqlite")
            assert code == 0, err
        code, _, err = cli(*common, "-o", tmp_path / "whole.json", "--cache", tmp_path / "cache.sqlite")
        assert code == 0, err
    parts = [json.loads((tmp_path / f"part{i}.json").read_text()) for i in (1, 2)]
    assert sorted(p["n"] for p in parts) == [1, 5]  # q1 falls in shard 1, the rest in shard 2
    assert all(json.loads((tmp_path / f"part{i}.json.meta.json").read_text())["shard"]["index"] == i
               for i in (1, 2))
    code, _, err = cli("merge", tmp_path / "part2.json", tmp_path / "part1.json", "-o", tmp_path / "merged.json")
    assert code == 0, err
    assert ((tmp_path / "merged.predictions.jsonl").read_bytes()
            == (tmp_path / "whole.predictions.jsonl").read_bytes())
    merged, whole = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("merged", "whole"))
    teacher = [next(m for m in r["models"] if m["role"] == "teacher") for r in (merged, whole)]
    assert teacher[0]["cost_usd"] == pytest.approx(teacher[1]["cost_usd"]) and teacher[0]["cost_usd"] > 0
    teacher[0]["cost_usd"] = teacher[1]["cost_usd"]  # summed per shard: equal up to float rounding
    assert _without_timing(merged) == _without_timing(whole)
    assert [m["role"] for m in merged["models"]] == ["student", "baseline", "teacher"]
    md = lambda name: [line.split("|")[1:7] for line in (tmp_path / name).read_text().splitlines()  # noqa: E731
                       if line.startswith("| ")]
    assert md("merged.md") == md("whole.md")  # the table but the timing columns
    # The run's model card holds the whole scorecard (a shard does not write it).
    card = json.loads((d / "run" / "eval_results.json").read_text())
    assert card["n"] == len(st.FACTS)


def test_merge_refuses_a_missing_or_changed_eval_shard(trained, cli, tmp_path):
    d = trained
    base = ("eval", d / "eval.jsonl", "--model", d / "student", "--max-new-tokens", "4", "-q")
    for i in (1, 3):
        code, _, err = cli(*base, "--shard", f"{i}/3", "-o", tmp_path / f"part{i}.json")
        assert code == 0, err
    code, _, err = cli("merge", tmp_path / "part1.json", tmp_path / "part3.json", "-o", tmp_path / "m.json")
    assert code == 1 and err.strip() == "kdpipe: error: merge: shard 2 of 3 missing"
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "m.predictions.jsonl").exists()
    code, _, err = cli(*base, "--shard", "2/3", "-o", tmp_path / "part2.json")
    assert code == 0, err
    with open(tmp_path / "part2.json", "a") as fp:
        fp.write(" ")
    code, _, err = cli("merge", *(tmp_path / f"part{i}.json" for i in (1, 2, 3)), "-o", tmp_path / "m.json")
    assert code == 1 and "part2.json was changed after eval wrote it" in err and len(err.strip().splitlines()) == 1


def test_shards_merge_on_another_machine_with_the_eval_file_given_by_seeds(trained, cli, tmp_path):
    d = trained
    questions = tmp_path / "eval.jsonl"
    questions.write_bytes((d / "eval.jsonl").read_bytes())
    for i in (1, 2):
        code, _, err = cli("eval", questions, "--model", d / "student", "--max-new-tokens", "4", "-q",
                           "--shard", f"{i}/2", "-o", tmp_path / f"part{i}.json")
        assert code == 0, err
    moved = tmp_path / "elsewhere" / "eval.jsonl"
    moved.parent.mkdir()
    questions.rename(moved)  # the path the shards recorded is not there on the merging machine
    code, _, err = cli("merge", tmp_path / "part1.json", tmp_path / "part2.json", "-o", tmp_path / "m.json",
                       "--seeds", moved)
    assert code == 0, err
    merged = json.loads((tmp_path / "m.json").read_text())
    assert merged["eval"] == str(moved) and merged["n"] == len(st.FACTS)
    assert json.loads((tmp_path / "m.json.meta.json").read_text())["inputs"]


def test_eval_shard_refusals_are_one_line(trained, cli, tmp_path):
    from kdpipe.records import Record, write_records

    d = trained
    code, _, err = cli("eval", d / "eval.jsonl", "--model", d / "student", "--shard", "3/2", "-o", tmp_path / "e.json")
    assert code == 2 and "--shard must be I/N with 1 <= I <= N" in err
    code, _, err = cli("eval", d / "eval.jsonl", "--model", d / "student", "--shard", "1/2")
    assert code == 2 and err.strip() == "kdpipe: error: --shard needs -o FILE: `kdpipe merge` joins the shards' files"
    write_records(tmp_path / "instr.jsonl", [Record(id="i1", question="Write a haiku.", task="instruction")])
    code, _, err = cli("eval", tmp_path / "instr.jsonl", "--model", d / "student", "--shard", "1/2",
                       "-o", tmp_path / "e.json")
    assert code == 2 and "--shard does not apply to instruction records" in err
    assert not (tmp_path / "e.json").exists()


def test_a_shard_without_questions_is_an_empty_scorecard(trained, cli, tmp_path):
    """With more shards than questions some shares are empty: scored as nothing, not as instruction records."""
    d = trained
    code, _, err = cli("eval", d / "eval.jsonl", "--model", d / "student", "--shard", "1/16", "-o", tmp_path / "e.json")
    assert code == 0, err
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["n"] == 0 and [(m["role"], m["n"]) for m in report["models"]] == [("student", 0)]
    assert (tmp_path / "e.predictions.jsonl").read_text() == ""
