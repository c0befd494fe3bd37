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
