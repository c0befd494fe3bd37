"""`generate --mode rationalize` against the loopback teacher over real HTTP, then `filter` and the
teacher's evaluation: only what filter rejects as gold_mismatch is asked again, with the gold answer
as a hint; the new samples are marked, counted apart, droppable, and never the teacher's accuracy."""

import json

from kdpipe.evaluate.teacher import ask_teacher, prepare_teacher
from kdpipe.filter import FilterOptions, run_filter
from kdpipe.generate import GenerateOptions, run_generate
from kdpipe.generate.rationalize import needs_rationale
from kdpipe.loopback import ScriptLine, running
from kdpipe.records import Record, load_records, write_records
from kdpipe.teacher.options import TeacherOptions

QUESTIONS = {
    "right": ("Maria picks 12 apples in the morning and 30 in the afternoon. How many apples does she pick?", "42"),
    "wrong": ("A baker fills 6 trays with 7 rolls each. How many rolls are on the trays?", "42"),
    "stubborn": ("Ken rides his bike 5 miles each day for 9 days. How many miles does he ride?", "45"),
    "unparsed": ("There are 40 chairs and 8 tables in the hall. How many chairs are there per table?", "5"),
    "no_gold": ("Sam owns 3 dogs, and each dog eats 2 bowls a day. How many bowls do the dogs eat daily?", None),
}
LABELS = {"right": "12 + 30 = 42. The answer is 42.", "wrong": "6 + 7 = 13. The answer is 13.",
          "stubborn": "5 + 9 = 14. The answer is 14.", "unparsed": "I would rather not say.",
          "no_gold": "3 + 2 = 5. The answer is 5."}
RATIONALES = {"wrong": "Each of the 6 trays holds 7 rolls, so there are 6 * 7 = 42 rolls. The answer is 42.",
              # a teacher that ignores the hint: its rationale still misses gold
              "stubborn": "Adding the numbers of miles and days gives 5 + 9 = 14. The answer is 14."}


def records():
    return [Record(id=k, question=q, task="numeric", gold=g) for k, (q, g) in QUESTIONS.items()]


def script():
    return [ScriptLine(QUESTIONS[k][0], [LABELS[k]], rationalize=[RATIONALES[k]] if k in RATIONALES else None)
            for k in QUESTIONS]


def gen(url, tmp_path, **kw):
    return GenerateOptions(model="loopback", base_url=url, cache=tmp_path / "cache.sqlite", timeout=5, **kw)


def test_rationalize_asks_only_for_gold_mismatches_and_filter_counts_them_apart(tmp_path, cli):
    write_records(tmp_path / "seeds.jsonl", records())
    with running(script()) as srv:
        run_generate(tmp_path / "seeds.jsonl", tmp_path / "teacher.jsonl", gen(srv.base_url, tmp_path))
        labelled = srv.stats["requests"]
        dry = run_generate(tmp_path / "teacher.jsonl", tmp_path / "r.jsonl", gen(srv.base_url, tmp_path,
                                                                                   mode="rationalize", dry_run=True))
        assert dry.extra["estimate"].requests == 2 and not (tmp_path / "r.jsonl").exists()
        code, out, err = cli("generate", tmp_path / "teacher.jsonl", "-o", tmp_path / "r.jsonl", "--mode",
                             "rationalize", "--model", "loopback", "--base-url", srv.base_url, "--cache",
                             tmp_path / "cache.sqlite")
        assert code == 0, err
        assert srv.stats["requests"] == labelled + 2  # "wrong" and "stubborn"; not unparsed, right or no gold
        assert "2 with every answer off gold asked again" in err and "1 reach it" in err
        # A rerun is answered by the cache; rationalizing the output again asks nothing.
        run_generate(tmp_path / "teacher.jsonl", tmp_path / "r2.jsonl", gen(srv.base_url, tmp_path,
                                                                             mode="rationalize"))
        again = run_generate(tmp_path / "r.jsonl", tmp_path / "r3.jsonl", gen(srv.base_url, tmp_path,
                                                                               mode="rationalize"))
        assert srv.stats["requests"] == labelled + 2 and again.counts["already_rationalized"] == 2
        # filter's --rejected file works as input too: the same questions are asked (here: the cache answers).
        run_filter(tmp_path / "teacher.jsonl", tmp_path / "k0.jsonl", rejected=tmp_path / "rej0.jsonl")
        from_rejected = run_generate(tmp_path / "rej0.jsonl", tmp_path / "r4.jsonl", gen(srv.base_url, tmp_path,
                                                                                          mode="rationalize"))
        assert from_rejected.counts["asked"] == 2 and srv.stats["requests"] == labelled + 2

        # The teacher's accuracy: eval --teacher asks with the label prompt, so the cache gives it the
        # teacher's own answers, never the ones written with the gold answer in sight.
        setup = prepare_teacher(TeacherOptions(model="loopback", base_url=srv.base_url,
                                               cache=tmp_path / "cache.sqlite"))
        texts, _, _, _ = ask_teacher(setup, load_records(tmp_path / "r.jsonl"))
        assert srv.stats["requests"] == labelled + 2
    assert texts == [LABELS[k] for k in QUESTIONS]

    out = {r.id: r for r in load_records(tmp_path / "r.jsonl")}
    before = {r.id: r for r in load_records(tmp_path / "teacher.jsonl")}
    for k in ("right", "unparsed", "no_gold"):
        assert out[k] == before[k]
    for k in ("wrong", "stubborn"):
        own, new = out[k].samples
        assert own == before[k].samples[0] and not own.rationalized
        assert new.rationalized and new.index == 1 and new.text == RATIONALES[k]
        assert out[k].provenance["rationalized"]["prompt"] == "rationalize.txt"
        assert out[k].provenance["teacher"] == before[k].provenance["teacher"]
    assert out["wrong"].samples[1].answer == "42" and out["stubborn"].samples[1].answer == "14"
    assert json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])["samples"][0].get("rationalized") is None

    # filter: the rationalized sample that reaches gold keeps its record; the one that misses goes
    # under gold_mismatch like any other; the report counts them apart.
    code, _, err = cli("filter", tmp_path / "r.jsonl", "-o", tmp_path / "kept.jsonl", "--rejected",
                       tmp_path / "rej.jsonl", "--report", tmp_path / "report.json")
    assert code == 0, err
    kept = {r.id: r for r in load_records(tmp_path / "kept.jsonl")}
    assert set(kept) == {"right", "wrong", "no_gold"}
    assert [s.rationalized for s in kept["wrong"].samples] == [True]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["rationalized"] == {"samples": 2, "kept": 1, "records_kept": 1, "dropped": {"gold_mismatch": 1}}
    assert "rationalized samples (asked with the gold answer): 2 in, 1 kept in 1 records" in err
    rejected = {r["id"]: r for r in map(json.loads, (tmp_path / "rej.jsonl").read_text().splitlines())}
    assert rejected["stubborn"]["reason"] == "gold_mismatch"

    # --drop-rationalized: training data from the teacher's own answers only.
    rep = run_filter(tmp_path / "r.jsonl", tmp_path / "own.jsonl", FilterOptions(drop_rationalized=True),
                     rejected=tmp_path / "own-rej.jsonl")
    assert {r.id for r in load_records(tmp_path / "own.jsonl")} == {"right", "no_gold"}
    assert rep.rationalized() == {"samples": 2, "kept": 0, "records_kept": 0,
                                  "dropped": {"gold_mismatch": 1, "rationalized": 1}}
    assert {r.id: r.reason for r in load_records(tmp_path / "own-rej.jsonl")}["wrong"] == "rationalized"


def test_the_teacher_sees_the_gold_answer_as_a_hint(tmp_path):
    from kdpipe.generate.rationalize import rationalize_requests
    from kdpipe.label_prompts import PROMPTS_DIR, read_prompt

    _, _, template = read_prompt(PROMPTS_DIR / "rationalize.txt")
    choice = Record(id="c", question="Where do you keep milk cold?", task="choice",
                    choices=["oven", "fridge", "shelf"], gold="fridge")
    (num, ch) = rationalize_requests([records()[1], choice], template, 1)
    assert num.messages[0]["content"].rstrip().endswith(f"Q: {QUESTIONS['wrong'][0]}\nHint: the correct answer is 42.\nA:")
    assert "(c) shelf\nHint: the correct answer is (b) fridge.\nA:" in ch.messages[0]["content"]


def test_needs_rationale_is_filters_gold_mismatch(tmp_path):
    """Exactly the records filter rejects as gold_mismatch are asked again."""
    from kdpipe.records import Sample

    def rec(id, gold, *answers, task="numeric", error=None):
        return Record(id=id, question=f"question {id} with enough words to pass", task=task, gold=gold, samples=[
            Sample(index=i, text=f"The answer is {a}.", rationale="because of some steps", answer=a, error=error)
            for i, a in enumerate(answers)])

    rs = [rec("a", "42", "42.0"), rec("b", "42", "41"), rec("c", "42", "41", "42"), rec("d", "42", "41", "40"),
          rec("e", None, "41"), rec("f", "42", None, error="unparseable"), rec("g", "a reference", "other",
                                                                              task="instruction"),
          rec("h", "42")]
    write_records(tmp_path / "in.jsonl", rs)
    run_filter(tmp_path / "in.jsonl", tmp_path / "out.jsonl", FilterOptions(dedup=False, near_dup=False),
               rejected=tmp_path / "rej.jsonl")
    mismatched = {r.id for r in load_records(tmp_path / "rej.jsonl") if r.reason == "gold_mismatch"}
    assert mismatched == {"b", "d"} == {r.id for r in rs if needs_rationale(r)}


def test_bad_options_of_rationalize_are_refused_before_anything_is_sent(cli, tmp_path):
    write_records(tmp_path / "t.jsonl", records())
    (tmp_path / "p.txt").write_text("Q: {question}\nA:")
    code, _, err = cli("generate", tmp_path / "t.jsonl", "-o", tmp_path / "o.jsonl", "--mode", "rationalize",
                       "--model", "m", "--base-url", "http://127.0.0.1:9", "--prompt", tmp_path / "p.txt",
                       "--num-new", "5")
    assert code == 2
    assert "needs a {answer} placeholder" in err and "--num-new is for expand mode, not rationalize mode" in err


def test_svamp_questions_palm_got_wrong_recover_rationales(shared_data, tmp_path, cli):
    """The done-when of rationalization on real data: the SVAMP training questions with PaLM-540B's
    recorded answers; the loopback teacher, asked with the gold answer as a hint, answers with SVAMP's
    own equation for the question. Every question filter rejects as gold_mismatch is asked again, no
    other; filter reports the recovered ones apart."""
    from support_filter import palm_teacher_records

    teacher = palm_teacher_records(shared_data, "svamp", tmp_path)
    inputs = load_records(teacher)
    before = run_filter(teacher, tmp_path / "before.jsonl", rejected=tmp_path / "before-rej.jsonl")
    mismatched = [r.id for r in load_records(tmp_path / "before-rej.jsonl") if r.reason == "gold_mismatch"]
    lines = [ScriptLine(r.question, [r.samples[0].text], rationalize=[
        f"Putting the numbers of the problem together: {r.meta['answer_raw']} = {r.gold}. The answer is {r.gold}."])
        for r in inputs]
    with running(lines) as srv:
        code, _, err = cli("generate", teacher, "-o", tmp_path / "r.jsonl", "--mode", "rationalize", "--model",
                           "loopback", "--base-url", srv.base_url, "--cache", tmp_path / "cache.sqlite")
        assert code == 0, err
        assert srv.stats["requests"] == len(mismatched)
    out = load_records(tmp_path / "r.jsonl")
    assert sorted(r.id for r in out if any(s.rationalized for s in r.samples)) == sorted(mismatched)

    after = run_filter(tmp_path / "r.jsonl", tmp_path / "after.jsonl", rejected=tmp_path / "after-rej.jsonl")
    r = after.rationalized()
    assert r["samples"] == len(mismatched) and r["kept"] == r["records_kept"]
    assert after.records_dropped["gold_mismatch"] == 0  # each one either recovered or dropped by another rule
    kept_before = {x.id for x in load_records(tmp_path / "before.jsonl")}
    kept_after = {x.id for x in load_records(tmp_path / "after.jsonl")}
    assert kept_after - kept_before <= set(mismatched) and len(kept_after - kept_before) == r["records_kept"]
    # A recovered question can be the earlier of a near-duplicate pair: the later one, kept before, goes.
    lost = {x.id: x.reason for x in load_records(tmp_path / "after-rej.jsonl") if x.id in kept_before}
    assert set(lost.values()) <= {"duplicate", "near_duplicate"} and set(lost) == kept_before - kept_after
    print(f"svamp: {len(inputs)} questions, {len(mismatched)} gold_mismatch, {r}, {len(lost)} kept before lost")
    # Recorded in the README: PaLM missed gold on 189 of the 800; 159 are recovered, 30 dropped as
    # near-copies of questions kept.
    assert (len(mismatched), r["records_kept"], r["dropped"]) == (189, 159, {"near_duplicate": 30})
    assert after.kept == before.kept + r["records_kept"] - len(lost) and (before.kept, after.kept) == (536, 690)
