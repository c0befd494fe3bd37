import json
import random

import pytest

import kdpipe.filter as filter_mod
from kdpipe.errors import InputError
from kdpipe.filter import FilterOptions, judge, run_filter
from kdpipe.filter.rules import RULE_NAMES, Reason
from kdpipe.records import Record, Sample, load_records, meta_path
from support_filter import unwritable_outputs

RATIONALE = "Jack starts with some pens and buys more, adding both amounts gives the total."


def rec(id, question=None, gold=None, answers=(), task="numeric", choices=None, **kw):
    samples = [Sample(index=i, text=f"... The answer is {a}.", rationale=kw.get("rationale", RATIONALE),
                      answer=a, finish_reason="stop") for i, a in enumerate(answers)]
    question = question or distinct_question(id)
    return Record(id=id, question=question, task=task, choices=choices, gold=gold, samples=samples)


WORDS = ("pens apples kites boats coins shells stamps cards books lamps rings jars cups hats socks "
         "drums bells maps keys nails").split()


def distinct_question(seed):
    """A question of its own (no near-duplicate of another seed's)."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + str(rng.randint(0, 99)) for _ in range(12)) + "?"


def write(path, records):
    path.write_text("".join(json.dumps(r.to_dict() if isinstance(r, Record) else r) + "\n" for r in records))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def filter_cli(cli, tmp_path, records, *args):
    inp = write(tmp_path / "in.jsonl", records)
    code, out, err = cli("filter", inp, "-o", tmp_path / "out.jsonl", "--rejected", tmp_path / "rej.jsonl",
                         "--report", tmp_path / "report.json", *args)
    assert code == 0, err
    return (load_records(tmp_path / "out.jsonl"), read_jsonl(tmp_path / "rej.jsonl"),
            json.loads((tmp_path / "report.json").read_text()), err)


def assert_adds_up(report):
    assert report["input"] == report["kept"] + sum(r["records"] for r in report["rules"])
    assert report["samples_input"] == report["samples_kept"] + sum(r["samples"] for r in report["rules"])


def test_gold_agreement_numbers_in_any_form(tmp_path, cli):
    records = [rec("a", gold="42", answers=["42", "42.0", "$42", "(84 / 2)", "41"]),
               rec("b", gold="42", answers=["41"])]
    kept, rejected, report, err = filter_cli(cli, tmp_path, records)
    assert [r.id for r in kept] == ["a"]
    assert [s.answer for s in kept[0].samples] == ["42", "42.0", "$42", "(84 / 2)"]
    assert all(s.reason is None for s in kept[0].samples)
    [b] = rejected
    assert b["reason"] == "gold_mismatch"
    assert b["samples"][0]["reason"] == "gold_mismatch"
    assert b["samples"][0]["reason_detail"].startswith("answer '41'")
    rules = {r["rule"]: r for r in report["rules"]}
    assert rules["gold_mismatch"] == {"rule": "gold_mismatch", "records": 1, "samples": 2}
    assert_adds_up(report)
    assert "gold_mismatch" in err and "kept" in err


def test_choices_agree_by_letter_or_text(tmp_path, cli):
    choices = ["park", "coloring book", "math problem"]
    records = [rec("c", gold="math problem", task="choice", choices=choices,
                   answers=["(c)", "Math Problem", "(c) math problem", "(a) park"])]
    kept, rejected, report, _ = filter_cli(cli, tmp_path, records)
    assert [s.index for s in kept[0].samples] == [0, 1, 2]
    assert rejected == []


def test_teacher_errors_are_dropped_with_their_reason(tmp_path, cli):
    r = rec("e", gold="5", answers=["5", "5"])
    r.samples[0].error, r.samples[0].answer = "truncated", None
    all_bad = rec("f", gold="5", answers=["5"])
    all_bad.samples[0].error = "refusal"
    kept, rejected, report, _ = filter_cli(cli, tmp_path, [r, all_bad])
    assert [(k.id, [s.index for s in k.samples]) for k in kept] == [("e", [1])]
    assert rejected[0]["id"] == "f" and rejected[0]["reason"] == "teacher_error"
    assert (rejected[0]["samples"][0]["reason"], rejected[0]["samples"][0]["reason_detail"]) == (
        "teacher_error", "refusal")
    assert report["teacher_errors"] == {"truncated": 1, "refusal": 1}
    assert_adds_up(report)


def test_self_consistency_vote_without_gold(tmp_path, cli):
    records = [rec("v1", answers=["7", "7.0", "8"]),  # 2 of 3 agree
               rec("v2", answers=["1", "2", "3"]),  # no majority
               rec("v3", answers=["9"])]  # one sample: nothing to vote on
    kept, rejected, report, _ = filter_cli(cli, tmp_path, records)
    by_id = {r.id: r for r in kept}
    assert [s.index for s in by_id["v1"].samples] == [0, 1]
    assert by_id["v1"].vote_share == pytest.approx(2 / 3, abs=1e-3)
    assert by_id["v3"].vote_share is None
    assert rejected[0]["id"] == "v2" and rejected[0]["reason"] == "no_consensus"
    assert {r["rule"]: r["samples"] for r in report["rules"]}["minority_answer"] == 1
    kept, rejected, _, _ = filter_cli(cli, tmp_path, records, "--min-agreement", "0.9")
    assert [r.id for r in kept] == ["v3"]


def test_length_bounds_and_restated_rationale():
    opts = FilterOptions()
    short_q = rec("q", question="Why?", gold="1", answers=["1"])
    assert judge(short_q, opts)[0] == Reason("question_length", "1 words, bounds 2-1000")
    r = rec("r", gold="12", answers=["12", "12", "12"])
    r.samples[0].rationale = "So the answer is 12."
    r.samples[1].rationale = "12 apples"
    assert judge(r, opts) == (None, [Reason("rationale_restates_answer"),
                                     Reason("rationale_length", "2 words, bounds 3-1000"), None])
    assert judge(r, FilterOptions(length=False, restated=False)) == (None, [None, None, None])


def test_duplicates_keep_the_first_and_samples_are_not_duplicates(tmp_path, cli):
    base = "Maria has 12 red apples and 30 green pears in her basket today. How many fruits does she have?"
    records = [
        rec("first", question=base, gold="42", answers=["42", "42", "42"]),
        rec("exact", question=base.upper().replace(" ", "  "), gold="42", answers=["42"]),
        rec("near", question=base.replace("today", "this morning"), gold="42", answers=["42"]),
        rec("other", question="Tom reads 5 pages a day for 9 days. How many pages has he read?",
            gold="45", answers=["45"]),
    ]
    kept, rejected, report, _ = filter_cli(cli, tmp_path, records)
    assert [(r.id, len(r.samples)) for r in kept] == [("first", 3), ("other", 1)]
    reasons = {r["id"]: (r["reason"], r["reason_detail"]) for r in rejected}
    assert reasons == {"exact": ("duplicate", "same question as first"),
                       "near": ("near_duplicate", "near-copy of the question of first")}
    assert_adds_up(report)
    kept, _, _, _ = filter_cli(cli, tmp_path, records, "--no-dedup", "--no-near-dup")
    assert len(kept) == 4


def test_near_duplicate_chain_keeps_what_is_not_near_a_kept_question(tmp_path, cli):
    # a ~ b (Jaccard 0.77), b ~ c (0.77), a not ~ c (0.59): b goes as a near-copy of a; c stays,
    # since the only question it is near was dropped.
    s = [f"word{i}" for i in range(50)]
    records = [rec(id, question=" ".join(s[lo:lo + 40]), gold="1", answers=["1"])
               for id, lo in (("a", 0), ("b", 5), ("c", 10))]
    kept, rejected, report, _ = filter_cli(cli, tmp_path, records, "--near-threshold", "0.7")
    assert [r.id for r in kept] == ["a", "c"]
    assert [(r["reason"], r["reason_detail"]) for r in rejected] == [
        ("near_duplicate", "near-copy of the question of a")]
    kept, rejected, _, _ = filter_cli(cli, tmp_path, records, "--near-threshold", "0.55")
    assert [r.id for r in kept] == ["a"] and [r["id"] for r in rejected] == ["b", "c"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_file_whose_records_all_fail_the_record_rules(tmp_path, cli, workers):
    records = [rec("a", gold="4", answers=["5"]), rec("b", gold="1", answers=["2"])]
    inp = write(tmp_path / "in.jsonl", records)
    code, _, err = cli("filter", inp, "-o", tmp_path / "out.jsonl", "--rejected", tmp_path / "rej.jsonl",
                       "--workers", workers)
    assert code == 0, err
    assert (tmp_path / "out.jsonl").read_text() == ""
    assert [r["reason"] for r in read_jsonl(tmp_path / "rej.jsonl")] == ["gold_mismatch"] * 2
    assert "filter: 0 of 2 records kept" in err


def test_decontamination_against_eval(tmp_path, cli):
    eval_q = ("A baker made 144 cupcakes for the school fair and sold 89 of them in the morning before "
              "the rain started. How many cupcakes were left?")
    write(tmp_path / "eval.jsonl", [rec("ev1", question=eval_q, gold="55")])
    records = [
        rec("span", question="Lunch: a baker made 144 cupcakes for the school fair and sold 89 of them in the "
                             "morning before it got dark. How many did she sell?", gold="89", answers=["89"]),
        rec("clean", question="Tom reads 5 pages a day for 9 days. How many pages has he read?",
            gold="45", answers=["45"]),
    ]
    kept, rejected, report, _ = filter_cli(cli, tmp_path, records, "--against", tmp_path / "eval.jsonl")
    assert [r.id for r in kept] == ["clean"]
    assert rejected[0]["reason"] == "contaminated"
    assert rejected[0]["reason_detail"] == "shares a 13-word span with eval question ev1"
    assert_adds_up(report)


def test_gold_only_seeds_pass_question_rules(tmp_path, cli):
    seeds = [rec("s1", gold="3"), rec("s2", question="Hi", gold="1"), rec("s3", gold="4")]
    kept, rejected, report, _ = filter_cli(cli, tmp_path, seeds)
    assert [r.id for r in kept] == ["s1", "s3"]
    assert (rejected[0]["reason"], rejected[0]["reason_detail"]) == ("question_length", "1 words, bounds 2-1000")
    code, _, err = cli("format", tmp_path / "out.jsonl", "-o", tmp_path / "sft.jsonl", "--style", "gold")
    assert code == 0, err
    assert sorted(r["completion"][0]["content"] for r in read_jsonl(tmp_path / "sft.jsonl")) == ["3", "4"]


def test_report_adds_up_on_mixed_input_and_output_is_deterministic(tmp_path, monkeypatch):
    records = []
    for i in range(300):
        k = i % 6
        answers = [["10"], ["11"], ["10", "10", "9"], [], ["10"], ["10"]][k]
        q = f"Item {i % 250}: Olga has {i} stamps and buys 10 more; then she counts them all. How many?"
        r = rec(f"m{i}", question=q if k != 5 else "Short?", gold=None if k == 2 else "10", answers=answers)
        if k == 4:
            r.samples[0].error = "unparseable"
        records.append(r)
    inp = write(tmp_path / "in.jsonl", records)
    rep1 = run_filter(inp, tmp_path / "a.jsonl", rejected=tmp_path / "ra.jsonl", report=tmp_path / "r.json")
    # Several worker processes (small chunks, so each gets work) write the very same files.
    monkeypatch.setattr(filter_mod, "_CHUNK", 16)
    rep2 = run_filter(inp, tmp_path / "b.jsonl", FilterOptions(workers=2), rejected=tmp_path / "rb.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "ra.jsonl").read_bytes() == (tmp_path / "rb.jsonl").read_bytes()
    report = json.loads((tmp_path / "r.json").read_text())
    assert_adds_up(report)
    assert [r["rule"] for r in report["rules"]] == list(RULE_NAMES)
    kept_ids = {r.id for r in load_records(tmp_path / "a.jsonl")}
    rejected_ids = [r["id"] for r in read_jsonl(tmp_path / "ra.jsonl")]
    assert len(kept_ids) + len(rejected_ids) == 300 and not kept_ids & set(rejected_ids)
    assert all(r["reason"] for r in read_jsonl(tmp_path / "ra.jsonl"))
    meta = json.loads(meta_path(tmp_path / "a.jsonl").read_text())
    assert meta["stage"] == "filter" and meta["counts"]["kept"] == rep1.kept == rep2.kept


def test_bad_input_names_file_and_line_and_writes_nothing(tmp_path, cli):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps(rec("a", gold="1", answers=["1"]).to_dict()) + "\n{\"id\": \"b\"}\n")
    code, _, err = cli("filter", inp, "-o", tmp_path / "out.jsonl")
    assert code == 1
    assert err.strip() == f"kdpipe: error: {inp}:2: missing field 'question'"
    assert not (tmp_path / "out.jsonl").exists()
    assert list(tmp_path.iterdir()) == [inp]
    code, _, err = cli("filter", inp, "-o", tmp_path / "out.jsonl", "--workers", "2")
    assert code == 1 and err.strip() == f"kdpipe: error: {inp}:2: missing field 'question'"
    assert list(tmp_path.iterdir()) == [inp]


@pytest.mark.parametrize("sample, message", [
    ({"answer": 4}, "samples[0]: field 'answer' must be str or null, got int"),
    ({"answer": "4", "rationale": ["x"]}, "samples[0]: field 'rationale' must be str or null, got list"),
    ({"answer": "4", "usage": "x"}, "samples[0]: field 'usage' must be dict, got str"),
])
def test_badly_typed_sample_is_one_line_naming_file_and_line(tmp_path, cli, sample, message):
    good = rec("a", gold="4", answers=["4"]).to_dict()
    bad = dict(rec("b", gold="4").to_dict(), samples=[sample])
    inp = write(tmp_path / "in.jsonl", [good, bad])
    code, _, err = cli("filter", inp, "-o", tmp_path / "out.jsonl")
    assert code == 1
    assert err.strip() == f"kdpipe: error: {inp}:2: {message}"
    assert list(tmp_path.iterdir()) == [inp]


def test_unwritable_output_is_one_line_before_any_work(tmp_path, cli):
    inp = write(tmp_path / "in.jsonl", [rec("a", gold="1", answers=["1"])])
    for out, why in unwritable_outputs(tmp_path):
        for option in ("-o", "--rejected", "--report"):
            args = ["-o", tmp_path / "ok.jsonl"] if option != "-o" else []
            code, _, err = cli("filter", inp, *args, option, out)
            assert code == 1 and err.strip() == f"kdpipe: error: {out}: cannot write: {why}", err
            assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "notdir"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_id_used_twice_is_an_input_error(tmp_path, cli, workers):
    records = [rec("a", gold="1", answers=["1"]), rec("b", gold="2", answers=["2"]),
               rec("a", gold="3", answers=["3"]), rec("b", gold="4", answers=["4"])]
    inp = write(tmp_path / "in.jsonl", records)
    code, _, err = cli("filter", inp, "-o", tmp_path / "out.jsonl", "--workers", workers)
    assert code == 1
    assert err.strip() == f"kdpipe: error: {inp}:3: duplicate id 'a' (first on line 1)"
    assert list(tmp_path.iterdir()) == [inp]


def test_id_hashes_that_collide_are_not_taken_for_duplicates(tmp_path, monkeypatch):
    from kdpipe.filter import dedup

    monkeypatch.setattr(dedup, "id_key", lambda record_id: 7)  # every id hashes alike
    inp = write(tmp_path / "in.jsonl", [rec(i, gold="1", answers=["1"]) for i in "abc"])
    assert run_filter(inp, tmp_path / "out.jsonl", FilterOptions(workers=1)).kept == 3
    write(inp, [rec(i, gold="1", answers=["1"]) for i in "abcb"])
    with pytest.raises(InputError, match=r":4: duplicate id 'b' \(first on line 2\)"):
        run_filter(inp, tmp_path / "out.jsonl", FilterOptions(workers=1))


def test_bad_options_are_reported_together(tmp_path, cli):
    inp = write(tmp_path / "in.jsonl", [rec("a", gold="1", answers=["1"])])
    code, _, err = cli("filter", inp, "-o", tmp_path / "out.jsonl", "--min-agreement", "1.5",
                       "--near-threshold", "0", "--against", tmp_path / "missing.jsonl")
    assert code == 2
    assert "--min-agreement" in err and "--near-threshold" in err and "missing.jsonl: no such file" in err
    code, _, err = cli("filter", inp, "-o", inp)
    assert code == 1 and "would overwrite an input" in err


def test_switching_rules_off():
    r = rec("k", gold="5", answers=["5", "6"])
    r.samples[0].error, r.samples[0].answer = "unparseable", None
    # Errors kept: the sample without an answer still cannot agree with gold.
    reason, samples = judge(r, FilterOptions(drop_errors=False))
    assert reason == Reason("gold_mismatch") and [s.rule for s in samples] == ["gold_mismatch"] * 2
    reason, samples = judge(r, FilterOptions(drop_errors=False, gold=False))
    assert reason is None and samples == [None, None]
