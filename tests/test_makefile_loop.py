"""`make loop`: rounds that rerun only what is missing, pay nothing twice, and never train on eval questions."""

import json

import pytest

from kdpipe.keys import question_key
from kdpipe.records import load_records
from test_makefile import make, meta, work  # noqa: F401 (the fixture)

TINY = ["MAX_STEPS=2", "TRAIN_FLAGS=--batch-size 8 --max-length 128 --eval-every 2 --save-every 2",
        "EVAL_FLAGS=--max-new-tokens 8 --limit 6", "SCORE_TEACHER=0", "LOOP_NEW=8"]


@pytest.mark.slow
def test_loop_rounds_stop_and_rerun_paying_nothing_twice(work):  # noqa: F811
    first = make(work, "loop", "ROUNDS=2", *TINY)
    card = first.stdout[first.stdout.index("| round |"):]
    assert [line.split("|")[1].strip() for line in card.splitlines()[2:5]] == ["0", "1", "2"]
    for n in (1, 2):
        r = work / f"round-{n}"
        hard = load_records(r / "hard.jsonl")
        assert hard and all(h.provenance["probe"]["round"] == n for h in hard)
        assert all(x.provenance["round"] == n for x in load_records(r / "expanded.jsonl"))
        assert json.loads((r / "eval.json").read_text())["models"][0]["role"] == "student"
    # No eval question is probed or trained on, in any round.
    eval_keys = {question_key(e.question, e.choices) for e in load_records(work / "eval.jsonl")}
    for n in (1, 2):
        for name in ("hard.jsonl", "all.jsonl"):
            assert not eval_keys & {question_key(x.question, x.choices)
                                    for x in load_records(work / f"round-{n}" / name)}, (n, name)
    # Stopped in round 2 after labelling: the rerun redoes round 2 from its filter on, asks the teacher nothing.
    for name in ("filtered.jsonl", "sft.jsonl", "eval.json"):
        (work / "round-2" / name).unlink()
    (work / "round-2" / "teacher.jsonl").unlink()
    again = make(work, "loop", "ROUNDS=2", *TINY)
    assert f"-o {work}/round-1/" not in again.stdout and f"-o {work}/round-2/expanded" not in again.stdout
    assert meta(work, "round-2/teacher.jsonl")["usage"]["requests"] == 0
    assert (work / "round-2" / "eval.json").exists()
