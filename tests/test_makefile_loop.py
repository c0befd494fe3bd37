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


def _ledger(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "teacher-cache.sqlite.spend.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_loop_budget_settings_and_continuing_from_the_last_round(work):  # noqa: F811
    """MAX_USD caps every round together: a budget that runs out in round 2 stops the loop there
    within it, a larger one finishes paying only for what is new; LOOP_FROM=last continues each
    round from the one before; a changed loop setting reruns what it shapes."""
    from kdpipe.loopback import running
    from kdpipe.teacher.cache import ResponseCache
    from test_makefile import SCRIPT

    priced = [*TINY, "GENERATE_FLAGS=--price-in 3 --price-out 12"]
    with running(SCRIPT, identify=False) as srv:
        url = srv.base_url

        def loop(*args, check=True):
            return make(work, "loop", f"BASE_URL={srv.base_url}", *priced, *args, check=check)

        loop("ROUNDS=1")
        one_round = sum(e["usd"] for e in _ledger(work))
        assert one_round > 0 and {e["out"].split("/")[-2] for e in _ledger(work)} == {"work", "round-1"}
        budget = one_round + 0.02  # round 2 gets a few requests' worth
        stopped = loop("ROUNDS=2", f"MAX_USD={budget:.6f}", check=False)
        assert stopped.returncode != 0 and "stopped at --max-usd" in stopped.stderr
        assert "spent earlier (--spend-ledger)" in stopped.stderr
        assert f"-o {work}/round-1/" not in stopped.stdout and not (work / "round-2" / "eval.json").exists()
        assert sum(e["usd"] for e in _ledger(work)) <= budget
        assert any("round-2" in e["out"] for e in _ledger(work))  # it paid for part of round 2
        done = loop("ROUNDS=2", "MAX_USD=10")
        assert (work / "round-2" / "eval.json").exists() and f"-o {work}/round-1/" not in done.stdout
        assert f"Paid in all ({work}/teacher-cache.sqlite.spend.jsonl" in done.stdout and "of the budget of $10" in done.stdout
        # Nothing was paid twice: every answer the teacher billed is one entry of the cache.
        with ResponseCache(work / "teacher-cache.sqlite", write=False) as cache:
            assert sum(srv.teacher.paid.values()) == len(cache)
        paid = sum(srv.teacher.paid.values())
        # LOOP_FROM=last: each round continues from the one before, on its own new data; the teacher is not asked.
        loop("ROUNDS=2", "MAX_USD=10", "LOOP_FROM=last")
        assert sum(srv.teacher.paid.values()) == paid
    for n, before in ((1, work / "student"), (2, work / "round-1" / "student")):
        config = json.loads((work / f"round-{n}" / "student" / "train_config.json").read_text())
        assert config["resumed_from"]["run"] == str(before.resolve())
        trained = {r.id for r in load_records(work / f"round-{n}" / "filtered.jsonl")}
        assert meta(work, f"round-{n}/sft.jsonl")["counts"]["records"] == len(trained)
    # Changed loop settings rerun what they shape (make -n: shown, not run); unchanged, nothing reruns.
    priced.append(f"BASE_URL={url}")  # as the stamps recorded it (nothing is sent under -n)
    same = make(work, "-n", "loop", "ROUNDS=2", *priced, "LOOP_FROM=last")
    assert "kdpipe probe" not in same.stdout and "kdpipe train" not in same.stdout
    more = make(work, "-n", "loop", "ROUNDS=2", *priced, "LOOP_FROM=last", "LOOP_NEW=9")
    assert f"-o {work}/round-1/expanded.jsonl" in more.stdout and f"-o {work}/expanded.jsonl" not in more.stdout
    easy = make(work, "-n", "loop", "ROUNDS=2", *priced, "LOOP_FROM=last", "PROBE_EASY=0.5")
    assert f"-o {work}/round-1/hard.jsonl" in easy.stdout and "--easy-share 0.5" in easy.stdout
