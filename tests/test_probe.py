"""`kdpipe probe`: the training questions the current student gets wrong, as seeds for expansion."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import support_tiny as st  # noqa: E402

from kdpipe.format import FormatOptions, run_format  # noqa: E402
from kdpipe.probe import ProbeOptions, run_probe  # noqa: E402
from kdpipe.records import Record, load_records, write_records  # noqa: E402

FAST = ["--max-steps", "40", "--batch-size", "8", "--max-length", "96", "--lr", "3e-3", "-q"]


def training_seeds(path: Path) -> Path:
    """The six colour facts as training seeds (gold answers), ids t0..t5."""
    write_records(path, [Record(id=f"t{i}", question=q, task="choice", choices=st.CHOICES, gold=a)
                         for i, (q, a) in enumerate(st.FACTS)])
    return path


def test_untrained_student_fails_everything_and_eval_questions_are_never_probed(tmp_path, cli):
    student = st.build_student(tmp_path / "student")
    seeds = training_seeds(tmp_path / "train.jsonl")
    ev = tmp_path / "eval.jsonl"
    write_records(ev, [Record(id="e1", question=st.FACTS[1][0], task="choice", choices=st.CHOICES,
                              gold=st.FACTS[1][1])])
    out = tmp_path / "hard.jsonl"
    code, _, err = cli("probe", seeds, "--model", student, "--against", ev, "-o", out, "--max", "3")
    assert code == 0, err
    hard = load_records(out)
    assert len(hard) == 3  # --max; a random model gets none right, so there is no easy share either
    assert all(r.question != st.FACTS[1][0] for r in hard)
    for r in hard:
        probe = r.provenance["probe"]
        assert probe["hard"] and probe["reason"] in ("wrong", "unparseable", "empty")
        assert probe["reference"] == r.gold and probe["answer"] != r.gold
    meta = json.loads(out.with_name("hard.jsonl.meta.json").read_text())
    assert meta["counts"]["in_eval"] == 1 and meta["counts"]["probed"] == 5 and meta["counts"]["hard"] == 3
    assert "1 also in --against" in err
    # Deterministic: the same pool, order and answers on a rerun.
    again = tmp_path / "again.jsonl"
    run_probe(seeds, again, ProbeOptions(model=str(student), against=[ev], max=3))
    assert again.read_text() == out.read_text()


def test_probe_refuses_bad_options_in_one_line(tmp_path, cli):
    seeds = training_seeds(tmp_path / "train.jsonl")
    code, _, err = cli("probe", seeds, "--model", tmp_path / "m", "-o", tmp_path / "h.jsonl", "--easy-share", "2",
                       "--against", tmp_path / "missing.jsonl")
    assert code == 2
    assert "--easy-share must be between 0 and 1" in err and "--against" in err and "Traceback" not in err
    assert not (tmp_path / "h.jsonl").exists()


@pytest.mark.slow
def test_trained_student_hard_questions_are_the_ones_it_never_learned(tmp_path):
    """Trained on four facts, the student is probed on all six: the two it never saw are hard;
    the easy share brings some of the learned ones along, marked easy."""
    from typer.testing import CliRunner

    from kdpipe.cli import app

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in st.corpus_texts()))
    learned = [r for r in st.teacher_records(4) if int(r.id[1]) < 4]
    write_records(tmp_path / "rec.jsonl", learned)
    run_format(tmp_path / "rec.jsonl", tmp_path / "sft.jsonl", FormatOptions(style="label", val_frac=1 / 4, seed=0))
    runner = CliRunner()
    for args in (["tiny-student", tmp_path / "student", "--corpus", corpus, "--vocab-size", "400", "-q"],
                 ["train", tmp_path / "sft.jsonl", "-o", tmp_path / "run", "--student", tmp_path / "student",
                  "--merge", *FAST]):
        r = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.stderr
    seeds = training_seeds(tmp_path / "train.jsonl")
    res = run_probe(seeds, tmp_path / "hard.jsonl", ProbeOptions(model=str(tmp_path / "run"), easy_share=0.5))
    written = load_records(tmp_path / "hard.jsonl")
    hard = {r.id for r in written if r.provenance["probe"]["hard"]}
    easy = {r.id for r in written if not r.provenance["probe"]["hard"]}
    assert {"t4", "t5"} <= hard
    assert res.wrong < 6 and easy and easy.isdisjoint(hard)
    assert len(easy) == min(6 - res.wrong, -(-len(hard) // 2))


def test_instruction_records_are_judged_beside_the_teachers_reference(tmp_path, cli):
    """Open-ended records: the loopback judge scores the student's response beside the teacher's; a low
    score is hard with the judge's reason, a high one easy, a reply with no score decides nothing."""
    from kdpipe.loopback import ScriptLine, running
    from kdpipe.records import Sample

    student = st.build_student(tmp_path / "student")
    refs = {"i0": "Call it Bubbles.", "i1": "Hello there, friend.", "i2": "Blue, on a clear day.",
            "i3": "Plant it in spring."}
    seeds = tmp_path / "train.jsonl"
    write_records(seeds, [Record(id=k, question=f"Instruction number {k}.", task="instruction",
                                 samples=[Sample(index=0, text=v, answer=v)]) for k, v in refs.items()]
                  + [Record(id="t0", question=st.FACTS[0][0], task="choice", choices=st.CHOICES, gold=st.FACTS[0][1])])
    # The judge's prompt holds the reference, so its scripted reply follows the reference.
    script = [ScriptLine(refs["i0"], ["Score: 3\nReason: misses the instruction entirely."]),
              ScriptLine(refs["i1"], ["Score: 9\nReason: as good as the reference."]),
              ScriptLine(refs["i2"], ["I cannot decide."]),
              ScriptLine(refs["i3"], ["Score: 2\nReason: unrelated text."])]
    out = tmp_path / "hard.jsonl"
    # Without a judge, the instruction records are left out and said so.
    code, _, err = cli("probe", seeds, "--model", student, "-o", out, "--max-new-tokens", "8")
    assert code == 0, err
    assert "4 instruction records left out: no --judge" in err and {r.id for r in load_records(out)} == {"t0"}
    with running(script) as srv:
        args = ["probe", seeds, "--model", student, "-o", out, "--judge", "judge-model", "--judge-base-url",
                srv.base_url, "--judge-cache", tmp_path / "judge.sqlite", "--judge-price-in", "1",
                "--judge-price-out", "2", "--min-score", "7", "--easy-share", "1", "--max-new-tokens", "8"]
        code, _, err = cli(*args)
        assert code == 0, err
        sent = srv.stats["requests"]
        assert sent == 4 and "judge judge-model: 4 scores (0 from the cache)" in err
        assert "1 the judge gave no score left out" in err
        first = out.read_text()
        assert cli(*args)[0] == 0 and srv.stats["requests"] == sent  # a rerun asks the judge nothing
        assert out.read_text() == first
    written = {r.id: r.provenance["probe"] for r in load_records(out)}
    assert {k for k, p in written.items() if p["hard"]} >= {"i0", "i3"} and "i2" not in written
    assert not written["i1"]["hard"] and written["i1"]["judge"]["score"] == 9  # easy, for balance
    for k in ("i0", "i3"):
        p = written[k]
        assert p["reason"] == "judge_score" and p["reference"] == refs[k] and p["judge"]["model"] == "judge-model"
    assert written["i0"]["judge"] == {"model": "judge-model", "score": 3,
                                      "reason": "misses the instruction entirely."}
    meta = json.loads(out.with_name("hard.jsonl.meta.json").read_text())
    assert meta["counts"]["unjudged"] == 1 and meta["judge_cost"]["replies"] == 4
    assert meta["params"]["judge"]["model"] == "judge-model" and meta["params"]["min_score"] == 7


def test_probe_judge_options_are_checked_before_the_student_loads(tmp_path, cli):
    seeds = training_seeds(tmp_path / "train.jsonl")
    code, _, err = cli("probe", seeds, "--model", tmp_path / "m", "-o", tmp_path / "h.jsonl", "--judge", "j",
                       "--judge-base-url", "ftp://x", "--min-score", "11")
    assert code == 2 and "--judge-base-url must be an http(s) URL" in err and "--min-score must be between" in err
    assert "Traceback" not in err and not (tmp_path / "h.jsonl").exists()


def test_the_judge_spends_under_the_loops_ledger_and_stops_at_its_cap(tmp_path, cli):
    """probe --judge-spend-ledger: the judge may spend only what the ledger's runs left of
    --judge-max-usd; stopped there, probe says so in one line, exits 3 and writes nothing; what
    the judge paid is appended, and a rerun with a higher cap asks only the rest."""
    from kdpipe.loopback import ScriptLine, running
    from kdpipe.records import Sample

    student = st.build_student(tmp_path / "student")
    seeds = tmp_path / "train.jsonl"
    refs = [f"Reference answer number {i}." for i in range(6)]
    write_records(seeds, [Record(id=f"i{i}", question=f"Instruction number {i}.", task="instruction",
                                 samples=[Sample(index=0, text=r, answer=r)]) for i, r in enumerate(refs)])
    script = [ScriptLine(r, ["Score: 3\nReason: misses it."]) for r in refs]
    ledger = tmp_path / "spend.jsonl"
    earlier = {"out": str(tmp_path / "teacher.jsonl"), "usd": 0.01, "prompt_tokens": 1, "completion_tokens": 1,
               "requests": 1}  # a generate run of the same loop
    ledger.write_text(json.dumps(earlier) + "\n")
    out = tmp_path / "hard.jsonl"

    def lines():
        return [json.loads(x) for x in ledger.read_text().splitlines()]

    with running(script) as srv:
        def probe(cap):
            # --judge-max-tokens 2000: a request's worst case near $0.0045, each costs far less.
            return cli("probe", seeds, "--model", student, "-o", out, "--judge", "judge-model", "--judge-base-url",
                       srv.base_url, "--judge-cache", tmp_path / "judge.sqlite", "--judge-price-in", "1",
                       "--judge-price-out", "2", "--judge-max-tokens", "2000", "--judge-concurrency", "1",
                       "--judge-max-usd", str(cap), "--judge-spend-ledger", ledger, "--max-new-tokens", "8")

        code, _, err = probe(0.015)
        assert code == 3 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert "stopped at --judge-max-usd 0.015: $0.0100 spent earlier (--judge-spend-ledger)" in err
        assert "instruction records not judged, so nothing is written" in err and not out.exists()
        sent = srv.stats["requests"]
        assert 0 < sent < len(refs) and len(lines()) == 2
        assert lines()[1]["out"] == str(out) and lines()[1]["requests"] == sent
        assert sum(e["usd"] for e in lines()) <= 0.015 + 1e-9
        code, _, err = probe(1.0)
        assert code == 0, err
        assert srv.stats["requests"] == len(refs) and len(lines()) == 3
    assert {r.id for r in load_records(out) if r.provenance["probe"]["hard"]} == {f"i{i}" for i in range(6)}
