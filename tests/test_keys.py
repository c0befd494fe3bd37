"""Seed, filter and format agree on what "the same question" is and on where a record falls in a split."""

import json

from kdpipe.filter import dedup
from kdpipe.keys import question_key, split_rank, words_of

VARIANTS = ["The apple costs 3 dollars. How much do 2 apples cost?",
            "the APPLE costs 3 dollars -- how much do 2 apples cost",
            "Apple costs 3 dollars; how much do 2 apples cost?!"]


def test_one_question_key_for_every_stage():
    assert len({question_key(q) for q in VARIANTS}) == 1
    assert question_key("A pear costs 3 dollars. How much do 2 pears cost?") != question_key(VARIANTS[0])
    assert question_key(VARIANTS[0], ["a", "b"]) != question_key(VARIANTS[0], ["a", "c"])
    assert question_key("?!") == b""
    # Operators between numbers are words: these are different questions, written alike or not.
    assert question_key("What is 7 + 3?") != question_key("What is 7 - 3?") != question_key("What is 7 * 3?")
    assert question_key("What is 7+3?") == question_key("what is 7 plus 3") == question_key("What is 7 + 3 ?")
    assert question_key("A well-known fact") == question_key("a well known fact")
    assert question_key("Lena bakes 4 cakes - how many?") == question_key("Lena bakes 4 cakes, how many?")
    assert question_key("What is -3 plus 5?") != question_key("What is 3 plus 5?")
    # filter's duplicate rule hashes this very key.
    assert len({dedup.exact_key(words_of(q)) for q in VARIANTS}) == 1


def test_seed_and_filter_drop_the_same_repeats(tmp_path, cli):
    src = tmp_path / "src.jsonl"
    src.write_text("".join(json.dumps({"question": q, "answer": "6"}) + "\n" for q in VARIANTS))
    code, _, err = cli("seed", src, "-o", tmp_path / "seeds.jsonl", "--task", "numeric")
    assert code == 0, err
    assert len((tmp_path / "seeds.jsonl").read_text().splitlines()) == 1
    # The same rows given distinct ids reach filter: its duplicate rule finds the same repeats.
    rows = [{"id": f"q{i}", "question": q, "task": "numeric", "gold": "6"} for i, q in enumerate(VARIANTS)]
    (tmp_path / "recs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = cli("filter", tmp_path / "recs.jsonl", "-o", tmp_path / "kept.jsonl",
                       "--rejected", tmp_path / "rej.jsonl")
    assert code == 0, err
    rejected = [json.loads(line) for line in (tmp_path / "rej.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"]) for r in rejected] == [("q1", "duplicate"), ("q2", "duplicate")]


def test_split_rank_depends_on_the_id_and_the_seed_only():
    ids = [f"q{i}" for i in range(50)]
    first = sorted(ids, key=lambda i: split_rank(i, 0))[:10]
    assert sorted(ids[::-1], key=lambda i: split_rank(i, 0))[:10] == first
    assert sorted(ids, key=lambda i: split_rank(i, 1))[:10] != first
