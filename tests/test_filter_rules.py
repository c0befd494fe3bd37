"""The filter's list of rules: what the README and --help say comes from it, and a new rule is one class."""

import dataclasses
import re
from pathlib import Path

import kdpipe.filter.rules as rules
from kdpipe.filter import FilterOptions
from kdpipe.filter.report import rules_markdown
from kdpipe.records import load_records
from test_filter import filter_cli, read_jsonl, rec

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_rule_table_is_the_list_of_rules():
    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- filter rules:[^\n]*-->\n(.*?)\n<!-- end filter rules -->", text, re.S)
    assert m, "README has lost the markers around the filter's rule table"
    expected = rules_markdown(FilterOptions)
    assert m.group(1) == expected, f"README's rule table is stale; replace it with:\n{expected}"


def test_every_rule_names_real_options_and_every_option_has_its_rule():
    fields = {f.name: f for f in dataclasses.fields(FilterOptions)}
    used = set()
    for r in rules.RULES:
        assert r.unit in ("record", "sample") and r.scope in ("record", "chunk", "set") and r.summary
        if r.switch:
            assert fields[r.switch].type in (bool, "bool"), r.name
        used.update(([r.switch] if r.switch else []) + list(r.options))
    assert used <= set(fields)
    # workers says how to run, not what to drop.
    assert set(fields) - used == {"workers"}
    assert len({r.name for r in rules.RULES}) == len(rules.RULES)


def test_help_lists_the_rules_in_their_order(cli):
    code, out, err = cli("filter", "--help")
    assert code == 0, err
    text = " ".join(out.split())
    positions = [text.find(f"{n}. {r.name} ({r.unit})") for n, r in enumerate(rules.RULES, 1)]
    assert -1 not in positions and positions == sorted(positions)
    unwrapped = text.replace("- ", "-")  # help wraps lines after a hyphen
    assert "--drop-errors/--keep-errors" in unwrapped and "--near-threshold 0.6" in unwrapped


class ShortAnswer(rules.SampleRule):
    """A rule a user might add: one class, switched by one option."""

    name, switch = "short_answer", "restated"  # a test cannot add a FilterOptions field; it borrows a switch
    summary = "answer of one character"

    def check(self, rec, s, opts):
        return f"answer {s.answer!r}" if len(s.answer) == 1 else None


def test_a_new_rule_is_one_class_in_the_list(tmp_path, cli, monkeypatch):
    monkeypatch.setattr(rules, "RULES", rules.RULES[:2] + (ShortAnswer(),) + rules.RULES[2:])
    records = [rec("one", gold="7", answers=["7"]), rec("two", gold="42", answers=["42", "42"])]
    kept, rejected, report, err = filter_cli(cli, tmp_path, records, "--workers", "1")
    assert [r.id for r in kept] == ["two"]
    assert [(r["reason"], r["samples"][0]["reason"], r["samples"][0]["reason_detail"]) for r in rejected] == [
        ("short_answer", "short_answer", "answer '7'")]
    assert {r["rule"]: r["records"] for r in report["rules"]}["short_answer"] == 1
    assert "short_answer" in err  # the printed table
    kept, rejected, _, _ = filter_cli(cli, tmp_path, records, "--workers", "1", "--no-restated")
    assert len(kept) == 2 and not rejected


def test_rejected_records_read_back_with_bare_reasons(tmp_path, cli):
    base = "Maria has 12 red apples and 30 green pears in her basket today. How many fruits does she have?"
    records = [rec("a", question=base, gold="42", answers=["42"]),
               rec("b", question=base.replace("today", "this morning"), gold="42", answers=["42"]),
               rec("c", gold="5", answers=["6"])]
    _, rejected, _, _ = filter_cli(cli, tmp_path, records)
    # `jq 'select(.reason == "near_duplicate")'` finds it: the detail has its own field.
    assert [r["id"] for r in rejected if r["reason"] == "near_duplicate"] == ["b"]
    assert {r["id"]: r.get("reason_detail") for r in rejected} == {
        "b": "near-copy of the question of a", "c": None}
    assert rejected[0]["samples"][0] == dict(rejected[0]["samples"][0], reason="gold_mismatch",
                                             reason_detail="answer '6', gold '5'")
    # The rejected file is records like any other: it reads back, and filtering it again keeps none.
    back = load_records(tmp_path / "rej.jsonl")
    assert [(r.reason, r.reason_detail) for r in back] == [("gold_mismatch", None),
                                                           ("near_duplicate", "near-copy of the question of a")]
    (tmp_path / "again").mkdir()
    kept, rejected, _, _ = filter_cli(cli, tmp_path / "again", back)
    assert [r.id for r in kept] == ["b"] and "reason" not in read_jsonl(tmp_path / "again" / "out.jsonl")[0]
