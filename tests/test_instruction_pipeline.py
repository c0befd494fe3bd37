"""The Self-Instruct seed tasks through seed -> expand -> label -> filter --judge -> format -> train ->
eval on the user-oriented instructions, offline: the loopback is teacher and judge, the student tiny.

The user-oriented set is evaluation data only: it is seeded apart, decontaminated against, and never
formatted for training."""

import json

import pytest

from kdpipe.loopback import ScriptLine, running
from kdpipe.records import load_records

FAST = ["--max-steps", "6", "--batch-size", "4", "--max-length", "384", "--lr", "3e-3", "-q"]
NEW = ["Write a short thank-you note to a neighbour who watered your plants.",
       "List three ways to save water at home.",
       "Explain what a leap year is in one sentence."]


@pytest.mark.slow
def test_self_instruct_seeds_end_to_end(shared_data, tmp_path, cli):
    si, d = shared_data / "self-instruct", tmp_path

    def ok(*args):
        code, out, err = cli(*args)
        assert code == 0, err
        return out + err

    ok("seed", si / "seed_tasks.jsonl", "-o", d / "seeds.jsonl", "--limit", "8", "-q")
    ok("seed", si / "user_oriented_instructions.jsonl", "-o", d / "eval.jsonl", "--limit", "4", "-q")
    seeds, evals = load_records(d / "seeds.jsonl"), load_records(d / "eval.jsonl")
    # The teacher answers each instruction with a response of its own; the judge scores every response 8
    # but one, and prefers the teacher's response to any other, in either position.
    answers = {r.question: f"Here is a response: {r.gold}" for r in seeds}
    answers.update({q: f"A careful answer to: {q.lower()}" for q in NEW})
    answers.update({r.question: r.gold for r in evals})
    poor = answers[seeds[0].question]
    script = [ScriptLine(q, [a], expand=q in NEW) for q, a in answers.items()]
    script += [ScriptLine(a, ["Score: 3\nReason: pads the answer" if a == poor else "Score: 8\nReason: good"])
               for q, a in answers.items() if q not in {r.question for r in evals}]
    for r in evals:
        script += [ScriptLine(f"[Response A]\n{r.gold}", ["[[A]]"]), ScriptLine(f"[Response B]\n{r.gold}", ["[[B]]"])]
    with running(script) as srv:
        teacher = ["--model", "loopback", "--base-url", srv.base_url, "--cache", d / "cache.sqlite", "-q"]
        ok("generate", d / "seeds.jsonl", "-o", d / "new.jsonl", "--mode", "expand", "--num-new", "3", *teacher)
        new = load_records(d / "new.jsonl")
        assert {r.task for r in new} == {"instruction"} and {r.question for r in new} <= set(NEW)
        (d / "all.jsonl").write_text((d / "seeds.jsonl").read_text() + (d / "new.jsonl").read_text())
        ok("generate", d / "all.jsonl", "-o", d / "teacher.jsonl", *teacher)
        out = ok("filter", d / "teacher.jsonl", "-o", d / "kept.jsonl", "--rejected", d / "rejected.jsonl",
                 "--against", d / "eval.jsonl", "--judge", "loopback-judge", "--judge-base-url", srv.base_url,
                 "--cache", d / "cache.sqlite", "--min-score", "7", "--price-in", "1", "--price-out", "1")
        assert "judge: " in out
        rejected = [json.loads(x) for x in open(d / "rejected.jsonl")]
        assert [(r["id"], r["reason"]) for r in rejected] == [(seeds[0].id, "judge_score")]
        kept = load_records(d / "kept.jsonl")
        assert all(s.judge["score"] == 8 for r in kept for s in r.samples)
        ok("format", d / "kept.jsonl", "-o", d / "sft.jsonl", "--style", "response", "--val-frac", "0", "-q")
        corpus = d / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in [*answers, *answers.values()]))
        ok("tiny-student", d / "student", "--corpus", corpus, "--vocab-size", "400", "-q")
        ok("train", d / "sft.jsonl", "-o", d / "run", "--student", d / "student", "--merge", *FAST)
        card = ok("eval", d / "eval.jsonl", "--model", d / "run", "--baseline", d / "student", "--max-new-tokens",
                  "12", "--teacher", "loopback", "--base-url", srv.base_url, "--cache", d / "cache.sqlite",
                  "--judge", "loopback-judge", "--judge-base-url", srv.base_url, "--judge-cache", d / "cache.sqlite",
                  "--judge-price-in", "1", "--judge-price-out", "1", "-o", d / "eval.json")
    report = json.loads((d / "eval.json").read_text())
    vs_teacher = next(p for p in report["pairwise"] if (p["model"], p["against"]) == ("student", "teacher"))
    assert vs_teacher["loss"] == 4 and vs_teacher["loss_ci95"][0] > 0.3
    teacher = next(m for m in report["models"] if m["role"] == "teacher")
    assert teacher["rouge_l"] == 1.0 and report["judge"]["cost"]["usd"] > 0
    assert "| student | teacher |" in card and "Judge `loopback-judge`" in card
