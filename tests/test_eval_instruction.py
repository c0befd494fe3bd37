"""`kdpipe eval` on instruction records: a tiny student against the loopback teacher, judged
pairwise by the loopback acting as a judge that prefers the teacher's answers wherever they stand."""

import json

import pytest
import support_tiny as st

from kdpipe.loopback import ScriptLine, running
from kdpipe.records import Record, write_records

TASKS = [("Describe the sky on a clear day.", "The sky is a bright, clear blue.",
          "A clear sky is blue, with no clouds."),
         ("Say something about grass.", "Grass is green and grows almost everywhere.", None),
         ("Name the colour of snow.", "Snow is white.", "Snow is white.")]


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return st.build_student(tmp_path_factory.mktemp("tiny") / "student")


def test_student_judged_against_teacher_and_baseline_with_rouge_and_judge_cost(student, tmp_path, cli):
    ev = tmp_path / "eval.jsonl"
    write_records(ev, [Record(id=f"i{k}", question=q, task="instruction", gold=ref) for k, (q, _, ref) in
                       enumerate(TASKS)])
    script = [ScriptLine(q, [answer]) for q, answer, _ in TASKS]
    # A judge that prefers the teacher's response in either position; anything else it cannot read.
    for _, answer, _ in TASKS:
        script += [ScriptLine(f"[Response A]\n{answer}", ["Response A is better. [[A]]"]),
                   ScriptLine(f"[Response B]\n{answer}", ["Response B is better. [[B]]"])]
    with running(script) as srv:
        args = ("eval", ev, "--model", student, "--baseline", student, "--max-new-tokens", "8",
                "--teacher", "loopback-teacher", "--base-url", srv.base_url, "--cache", tmp_path / "t.sqlite",
                "--judge", "loopback-judge", "--judge-base-url", srv.base_url, "--judge-cache", tmp_path / "j.sqlite",
                "--judge-price-in", "1", "--judge-price-out", "2", "-o", tmp_path / "eval.json", "-q")
        code, out, err = cli(*args)
        assert code == 0, err
        requests = srv.stats["requests"]
        code, _, err = cli(*args)
        assert code == 0, err
        assert srv.stats["requests"] == requests  # teacher and judge answered from their caches
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["task"] == "instruction" and report["n"] == 3
    pairs = {(p["model"], p["against"]): p for p in report["pairwise"]}
    assert set(pairs) == {("student", "teacher"), ("student", "baseline"), ("baseline", "teacher")}
    vs_teacher = pairs[("student", "teacher")]
    assert (vs_teacher["loss"], vs_teacher["win"], vs_teacher["tie"]) == (3, 0, 0)
    assert vs_teacher["loss_ci95"][0] > 0.4 and vs_teacher["loss_ci95"][1] == 1.0
    # The same model twice: the judge reads no verdict, so every pair is a tie, counted as unreadable.
    assert pairs[("student", "baseline")]["tie"] == 3 and pairs[("student", "baseline")]["unreadable"] == 6
    models = {m["role"]: m for m in report["models"]}
    assert models["teacher"]["rouge_l"] == pytest.approx((0.5 + 1.0) / 2, abs=0.2)
    assert models["teacher"]["with_reference"] == 2
    cost = report["judge"]["cost"]
    assert cost["replies"] == 18 and cost["usd"] > 0 and report["judge"]["prompt"] == "judge_pair.txt"
    assert "| student | teacher | 0.0% (0.0–56.1) | 0.0% (0.0–56.1) | 100.0% (43.9–100.0) | 3 |" in out
    assert "Judge `loopback-judge`" in out and "at list price" in out
    preds = [json.loads(x) for x in open(tmp_path / "eval.predictions.jsonl")]
    teacher_pred = next(p for p in preds if p["model"] == "teacher" and p["id"] == "i2")
    assert teacher_pred["text"] == "Snow is white." and teacher_pred["rouge_l"] == 1.0
    assert next(p for p in preds if p["model"] == "student" and p["id"] == "i0")["vs_teacher"] == "loss"


def test_judge_needs_someone_to_compare_with(cli, tmp_path, student):
    ev = tmp_path / "eval.jsonl"
    write_records(ev, [Record(id="i0", question="Say hi.", task="instruction")])
    code, _, err = cli("eval", ev, "--model", student, "--judge", "m", "--judge-base-url", "http://127.0.0.1:9")
    assert code == 2 and "--judge compares the student with --teacher or --baseline" in err
