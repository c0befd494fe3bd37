"""The judge against the loopback teacher acting as one, over real HTTP: scripted scores and
preferences, malformed replies, and a judge that always prefers the first answer."""

import pytest

from kdpipe.judging import Judge, combine, parse_score, parse_verdict
from kdpipe.loopback import ScriptLine, running
from kdpipe.teacher.options import TeacherOptions

INSTRUCTION = "Suggest a name for a pet goldfish."


def judge_at(srv, tmp_path, **kw):
    return Judge(TeacherOptions(model="loopback-judge", base_url=srv.base_url, cache=tmp_path / "judge.sqlite",
                                price_in=1.0, price_out=2.0, **kw))


def test_scores_and_reasons_are_read_and_malformed_replies_get_a_reason(tmp_path):
    script = [ScriptLine("Call it Bubbles.", ["Score: 8\nReason: A fitting, friendly name."]),
              ScriptLine("Fish are animals.", ["The response does not name anything. Score: 2/10"]),
              ScriptLine("Goldie or Finn.", ["I think this is quite good overall."]),
              ScriptLine("Nemo.", ["Score: 42\nReason: great"]),
              ScriptLine("Sir Swims-a-lot.", ["Rating [[9]] because it is playful."])]
    with running(script) as srv:
        j = judge_at(srv, tmp_path)
        scores = j.score([(INSTRUCTION, r) for r in
                          ("Call it Bubbles.", "Fish are animals.", "Goldie or Finn.", "Nemo.", "Sir Swims-a-lot.")])
        sent = srv.stats["requests"]
        again = judge_at(srv, tmp_path).score([(INSTRUCTION, "Call it Bubbles.")])
        assert srv.stats["requests"] == sent  # the cache answers a rerun
    assert [s.score for s in scores] == [8, 2, None, None, 9]
    assert scores[0].reason == "A fitting, friendly name."
    assert "does not name anything" in scores[1].reason
    assert scores[2].reason.startswith("malformed judge reply: no score")
    assert "outside 1-10" in scores[3].reason
    assert again[0].score == 8
    assert j.cost.replies == 5 and j.cost.usd is not None and j.cost.usd > 0 and j.cost.spent_usd == j.cost.usd


def test_pairwise_counts_a_win_only_when_both_orders_agree(tmp_path):
    good, bad = "Bubbles, after the bubbles it blows.", "Fish."
    # A judge that prefers the good answer wherever it stands.
    script = [ScriptLine(f"[Response A]\n{good}", ["A names a fish well. [[A]]"]),
              ScriptLine(f"[Response B]\n{good}", ["B is better. [[B]]"])]
    with running(script) as srv:
        outcomes, rates = judge_at(srv, tmp_path).compare([(INSTRUCTION, good, bad), (INSTRUCTION, bad, good)])
    assert outcomes == ["win", "loss"]
    d = rates.to_dict()
    assert (d["win"], d["tie"], d["loss"], d["n"]) == (1, 0, 1, 2)
    assert d["win_rate"] == 0.5 and d["win_ci95"][0] < 0.5 < d["win_ci95"][1]


def test_a_judge_that_always_prefers_the_first_answer_yields_only_ties(tmp_path):
    script = [ScriptLine("[Response A]", ["The first one is clearly better. [[A]]"])]
    items = [(INSTRUCTION, f"answer {k}", f"other answer {k}") for k in range(6)]
    with running(script) as srv:
        outcomes, rates = judge_at(srv, tmp_path).compare(items)
        assert srv.stats["requests"] == 12  # each pair shown in both orders
    assert outcomes == ["tie"] * 6
    assert rates.inconsistent == 6 and rates.win == rates.loss == 0
    assert rates.to_dict()["tie_ci95"] == [pytest.approx(0.6097, abs=1e-3), 1.0]


def test_unreadable_verdicts_are_ties_and_counted(tmp_path):
    with running([ScriptLine("[Response A]", ["Both have merit."])]) as srv:
        outcomes, rates = judge_at(srv, tmp_path).compare([(INSTRUCTION, "x y", "y z")])
    assert outcomes == ["tie"] and rates.unreadable == 2 and rates.inconsistent == 0


def test_reply_reading():
    assert parse_score("**Score:** 7\nReason: fine").score == 7
    assert parse_score("Score: 7.6").score == 8
    assert parse_score("").score is None and parse_score(None).reason == "malformed judge reply: empty"
    assert parse_score("Score: 0").score is None
    assert parse_verdict("A is fine but [[B]]") == "B" and parse_verdict("[[C]]") == "tie"
    assert parse_verdict("[[A]] at first, then [[B]]") == "B" and parse_verdict("A") is None
    assert combine("A", "B") == "win" and combine("B", "A") == "loss"
    assert combine("A", "A") == combine("B", "B") == combine(None, "B") == combine("tie", "B") == "tie"


def test_filter_judge_drops_low_scores_and_keeps_the_score_on_every_sample(tmp_path, cli):
    import json

    def rec(rid, question, *texts):
        return {"id": rid, "question": question, "task": "instruction",
                "samples": [{"index": i, "text": t, "answer": t} for i, t in enumerate(texts)]}

    inp = tmp_path / "teacher.jsonl"
    inp.write_text("\n".join(json.dumps(r) for r in [
        rec("a", INSTRUCTION, "Call it Bubbles.", "Fish are animals."),
        rec("b", "Write a two-word greeting.", "Hello there."),
        rec("c", "Name a color of the sky.", "Blue, on a clear day."),
    ]) + "\n")
    script = [ScriptLine("Call it Bubbles.", ["Score: 8\nReason: fitting"]),
              ScriptLine("Fish are animals.", ["Score: 2\nReason: names nothing"]),
              ScriptLine("Hello there.", ["Score: 3\nReason: stiff"]),
              ScriptLine("Blue, on a clear day.", ["It is a fine answer."])]
    with running(script) as srv:
        code, out, err = cli("filter", inp, "-o", tmp_path / "kept.jsonl", "--rejected", tmp_path / "rej.jsonl",
                             "--report", tmp_path / "report.json", "--judge", "judge-model",
                             "--judge-base-url", srv.base_url, "--cache", tmp_path / "c.sqlite",
                             "--min-score", "7", "--price-in", "1", "--price-out", "1")
    assert code == 0, err
    assert "judge: 4 scores (0 from the cache)" in out + err
    kept = [json.loads(line) for line in open(tmp_path / "kept.jsonl")]
    assert [r["id"] for r in kept] == ["a"]
    assert kept[0]["samples"] == [{**kept[0]["samples"][0], "judge": {"model": "judge-model", "score": 8,
                                                                     "reason": "fitting"}}]
    assert len(kept[0]["samples"]) == 1
    rejected = {r["id"]: r for r in map(json.loads, open(tmp_path / "rej.jsonl"))}
    (b,), (c,) = rejected["b"]["samples"], rejected["c"]["samples"]
    assert rejected["b"]["reason"] == rejected["c"]["reason"] == b["reason"] == c["reason"] == "judge_score"
    assert b["reason_detail"] == "score 3 below 7: stiff" and b["judge"]["score"] == 3
    assert c["reason_detail"].startswith("malformed judge reply") and c["judge"]["score"] is None
    report = json.loads((tmp_path / "report.json").read_text())
    assert {r["rule"]: r["samples"] for r in report["rules"]}["judge_score"] == 3
    assert report["judge_cost"]["replies"] == 4 and report["judge_cost"]["usd"] > 0
    assert report["judge_cost"]["prompt"] == "judge_score.txt" and report["judge_cost"]["model"] == "judge-model"


def test_filter_judge_options_are_checked_before_anything_is_sent(tmp_path, cli):
    inp = tmp_path / "t.jsonl"
    inp.write_text('{"id": "a", "question": "Say hi.", "task": "instruction"}\n')
    code, out, err = cli("filter", inp, "-o", tmp_path / "o.jsonl", "--judge", "m",
                         "--judge-base-url", "ftp://x", "--min-score", "11")
    assert code == 2 and "--judge-base-url must be an http(s) URL" in err and "--min-score must be between" in err
    assert not (tmp_path / "o.jsonl").exists()
