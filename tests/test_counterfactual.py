"""`generate --mode counterfactual` against the loopback teacher over real HTTP, the edits labelled
by the normal label mode, and `filter` keeping only the edits the teacher labels as intended."""

import json

import pytest

from kdpipe.generate import GenerateOptions, run_generate
from kdpipe.generate.counterfactual import parse_counterfactual
from kdpipe.loopback import ScriptLine, running
from kdpipe.records import Record, Sample, load_records, write_records

# source id -> (question, gold, the teacher's counterfactual reply)
SOURCES = {
    "kept": ("Maria picks 12 apples in the morning and 30 in the afternoon. How many apples does she pick?", "42",
             "Edited question: Maria picks 12 apples in the morning and 20 in the afternoon. How many apples "
             "does she pick?\nNew answer: 32"),
    "disagrees": ("A baker fills 6 trays with 7 rolls each. How many rolls are on the trays?", "42",
                  "**Edited question:** A baker fills 5 trays with 7 rolls each. How many rolls are on the "
                  "trays?\n**New answer:** 35 rolls"),
    "unchanged": ("Ken rides his bike 5 miles each day for 9 days. How many miles does he ride?", "45",
                  "Edited question: Ken rides his bike 5 miles each day for 9 days. How many miles does he "
                  "ride in total over the days?\nNew answer: 40"),
    "no_edit": ("There are 40 chairs and 8 tables in the hall. How many chairs are there per table?", "5",
                "I would change the number of chairs."),
    "no_answer": ("Sam owns 3 dogs, and each dog eats 2 bowls a day. How many bowls do the dogs eat daily?", "6",
                  "Edited question: Sam owns 4 dogs, and each dog eats 2 bowls a day. How many bowls do the "
                  "dogs eat daily?"),
    "unreadable": ("A shelf holds 9 books and another holds 11. How many books are on both shelves?", "20",
                   "Edited question: A shelf holds 9 books and another holds 12. How many books are on both "
                   "shelves?\nNew answer: many more books"),
    "identical": ("Lena bakes 4 cakes and cuts each into 8 slices. How many slices are there?", "32",
                  "Edited question: lena bakes 4 cakes, and cuts each into 8 slices - how many slices are "
                  "there\nNew answer: 30"),
    "same_answer": ("A farmer has 15 cows and sells 5 of them. How many cows are left?", "10",
                    "Edited question: A farmer has 16 cows and sells 6 of them. How many cows are left?\n"
                    "New answer: 10"),
    "unscripted": ("Omar reads 25 pages a day for 4 days. How many pages does he read?", "100", None),
}
# The teacher's own label of each well-formed edit.
EDIT_LABELS = {"kept": "12 + 20 = 32. The answer is 32.", "disagrees": "5 * 7 = 36. The answer is 36.",
               "unchanged": "5 miles for 9 days is 5 * 9 = 45. The answer is 45."}


def edit_of(key):
    return parse_counterfactual(SOURCES[key][2], "numeric", None)[0]


def script():
    lines = [ScriptLine(q, [f"Working it out step by step gives {g}. The answer is {g}."],
                        counterfactual=[reply] if reply else None) for q, g, reply in SOURCES.values()]
    return lines + [ScriptLine(edit_of(k), [label]) for k, label in EDIT_LABELS.items()]


def test_counterfactuals_written_labelled_and_checked_by_filter(tmp_path, cli):
    write_records(tmp_path / "seeds.jsonl", [Record(id=k, question=q, task="numeric", gold=g)
                                             for k, (q, g, _) in SOURCES.items()])
    cache = tmp_path / "cache.sqlite"
    with running(script()) as srv:
        code, _, err = cli("generate", tmp_path / "seeds.jsonl", "-o", tmp_path / "cf.jsonl", "--mode",
                           "counterfactual", "--model", "loopback", "--base-url", srv.base_url, "--cache", cache)
        assert code == 0, err
        assert ("3 counterfactual questions from 9 replies on 9 questions (unusable: no_edit 2, "
                "no_intended_answer 2, identical_to_source 1, answer_unchanged 1; see .meta.json)") in err
        # The normal label mode labels the edits.
        code, _, err = cli("generate", tmp_path / "cf.jsonl", "-o", tmp_path / "cf-teacher.jsonl", "--model",
                           "loopback", "--base-url", srv.base_url, "--cache", cache)
        assert code == 0, err

    edits = {r.provenance["counterfactual"]["of"]: r for r in load_records(tmp_path / "cf.jsonl")}
    assert set(edits) == {"kept", "disagrees", "unchanged"}
    for k, r in edits.items():
        assert r.question == edit_of(k) and r.gold is None and not r.samples and r.id.startswith("cf-")
        cf = r.provenance["counterfactual"]
        assert cf["source_answer"] == SOURCES[k][1] and cf["teacher"]["prompt"] == "counterfactual.txt"
    assert {k: r.provenance["counterfactual"]["intended_answer"] for k, r in edits.items()} == {
        "kept": "32", "disagrees": "35", "unchanged": "40"}
    meta = json.loads((tmp_path / "cf.jsonl.meta.json").read_text())
    assert {u["of"]: u["reason"] for u in meta["unusable"]} == {
        "no_edit": "no_edit", "unscripted": "no_edit", "no_answer": "no_intended_answer",
        "unreadable": "no_intended_answer", "identical": "identical_to_source", "same_answer": "answer_unchanged"}
    assert meta["counts"]["written"] == 3

    labelled = load_records(tmp_path / "cf-teacher.jsonl")
    # The provenance of the edit survives its labelling.
    assert all(r.provenance["counterfactual"] == edits[r.provenance["counterfactual"]["of"]]
               .provenance["counterfactual"] for r in labelled)
    code, _, err = cli("filter", tmp_path / "cf-teacher.jsonl", "-o", tmp_path / "kept.jsonl", "--rejected",
                       tmp_path / "rej.jsonl", "--report", tmp_path / "report.json")
    assert code == 0, err
    assert [r.provenance["counterfactual"]["of"] for r in load_records(tmp_path / "kept.jsonl")] == ["kept"]
    rejected = {r.provenance["counterfactual"]["of"]: r for r in load_records(tmp_path / "rej.jsonl")}
    assert {k: (r.reason, r.samples[0].reason_detail) for k, r in rejected.items()} == {
        "disagrees": ("counterfactual_disagrees", "answer '36', intended '35'"),
        "unchanged": ("counterfactual_unchanged", "answer '45', as the source unchanged")}
    rules = {r["rule"]: r["records"] for r in json.loads((tmp_path / "report.json").read_text())["rules"]}
    assert rules["counterfactual_disagrees"] == rules["counterfactual_unchanged"] == 1

    # With the questions they were edited from: an edit is a near-copy of its source by design, and
    # the near-duplicate rule leaves it be.
    with running(script()) as srv:
        code, _, err = cli("generate", tmp_path / "seeds.jsonl", "-o", tmp_path / "teacher.jsonl", "--model",
                           "loopback", "--base-url", srv.base_url, "--cache", cache)
        assert code == 0, err
    (tmp_path / "all.jsonl").write_text((tmp_path / "teacher.jsonl").read_text()
                                        + (tmp_path / "cf-teacher.jsonl").read_text())
    code, _, err = cli("filter", tmp_path / "all.jsonl", "-o", tmp_path / "all-kept.jsonl", "--report",
                       tmp_path / "all-report.json")
    assert code == 0, err
    kept = {r.id: r for r in load_records(tmp_path / "all-kept.jsonl")}
    assert set(SOURCES) <= set(kept) and edits["kept"].id in kept
    assert len(kept) == len(SOURCES) + 1

    # --no-check-counterfactual keeps them all (they are then plain questions with the teacher's answer).
    code, _, err = cli("filter", tmp_path / "cf-teacher.jsonl", "-o", tmp_path / "unchecked.jsonl",
                       "--no-check-counterfactual")
    assert code == 0, err
    assert len(load_records(tmp_path / "unchecked.jsonl")) == 3


def test_counterfactual_needs_an_answer_to_change_and_survives_teacher_failures(tmp_path):
    records = [Record(id="gold", question=SOURCES["kept"][0], task="numeric", gold="42"),
               Record(id="teacher", question=SOURCES["disagrees"][0], task="numeric", samples=[
                   Sample(text="The answer is 42.", rationale="x", answer="42")]),
               Record(id="none", question=SOURCES["unchanged"][0], task="numeric")]
    write_records(tmp_path / "in.jsonl", records)
    with running(script(), faults={"empty": 1.0}) as srv:
        r = run_generate(tmp_path / "in.jsonl", tmp_path / "cf.jsonl", GenerateOptions(
            model="loopback", base_url=srv.base_url, cache=tmp_path / "c.sqlite", timeout=5, mode="counterfactual"))
        assert srv.stats["requests"] == 2
    assert r.counts["asked"] == 2 and r.counts["no_source_answer"] == 1 and r.counts["no_edit"] == 2
    assert r.exit_code == 0 and not load_records_or_empty(tmp_path / "cf.jsonl")
    with running(script()) as srv:  # the teacher's own answer is the answer to change when there is no gold
        run_generate(tmp_path / "in.jsonl", tmp_path / "cf2.jsonl", GenerateOptions(
            model="loopback", base_url=srv.base_url, cache=tmp_path / "c2.sqlite", timeout=5,
            mode="counterfactual"))
    assert [r.provenance["counterfactual"]["source_answer"] for r in load_records(tmp_path / "cf2.jsonl")] == [
        "42", "42"]


def load_records_or_empty(path):
    return [line for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("reply, expected", [
    ("Edited question: How many legs do 3 cats have?\nNew answer: 12", ("How many legs do 3 cats have?", "12", None)),
    ("```\nEdited question: How many legs\ndo 3 cats have?\nIntended answer: $12.\n```",
     ("How many legs\ndo 3 cats have?", "12", None)),
    ("Edited question: Which is coldest?\nAnswer Choices:\n(a) fire\n(b) ice\nNew answer: (b)",
     ("Which is coldest?", "ice", None)),
    ("", (None, None, "no_edit")),
    ("Edited question:\nNew answer: 3", (None, None, "no_edit")),
    ("New answer: 3", (None, None, "no_edit")),
    ("Edited question: How many?", (None, None, "no_intended_answer")),
    ("Edited question: How many?\nNew answer:", (None, None, "no_intended_answer")),
])
def test_parse_counterfactual(reply, expected):
    task, choices = ("choice", ["fire", "ice"]) if "(b)" in reply else ("numeric", None)
    assert parse_counterfactual(reply, task, choices) == expected


def test_counterfactual_runs_under_the_cost_controls_of_every_mode(tmp_path, cli):
    write_records(tmp_path / "seeds.jsonl", [Record(id=k, question=q, task="numeric", gold=g)
                                             for k, (q, g, _) in SOURCES.items()])
    with running(script()) as srv:
        base = ["generate", tmp_path / "seeds.jsonl", "-o", tmp_path / "cf.jsonl", "--mode", "counterfactual",
                "--model", "loopback", "--base-url", srv.base_url, "--cache", tmp_path / "c.sqlite",
                "--price-in", "3", "--price-out", "12"]
        code, out, err = cli(*base, "--dry-run")
        assert code == 0 and "requests to send: 9 (9 samples)" in out and srv.stats["requests"] == 0
        code, _, err = cli(*base, "--max-usd", "0.000001")
        assert code == 3 and "stopped at --max-usd" in err and srv.stats["requests"] == 0
        meta = json.loads((tmp_path / "cf.jsonl.meta.json").read_text())
        assert meta["counts"]["not_sent"] == 9 and meta["counts"]["written"] == 0
        code, _, err = cli(*base, "--max-usd", "100")
        assert code == 0, err
        assert srv.stats["requests"] == 9 and set(srv.teacher.paid.values()) == {1}
        code, out, _ = cli(*base, "--dry-run")
        assert "requests to send: 0" in out
    assert len(load_records(tmp_path / "cf.jsonl")) == 3


def test_a_script_line_with_a_bad_counterfactual_field_is_refused(tmp_path, cli):
    (tmp_path / "s.jsonl").write_text(json.dumps({"question": "q?", "completions": ["a"], "counterfactual": "x"}))
    code, _, err = cli("teacher", "serve", "--script", tmp_path / "s.jsonl", "--port", "0")
    assert code != 0 and "s.jsonl:1: field 'counterfactual' must be a non-empty list of strings" in err
