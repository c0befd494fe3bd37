"""The Lion-style loop's generation step: expansion from the questions `probe` found hard.

A toy task of two kinds (numeric sums, text capitals) whose student fails the sums: the
probe file holds the failed sums and, for balance, one easy capital. Expansion over real
HTTP to the loopback teacher must then ask mostly for sums, with expand_hard.txt, and
record the round and the failed questions that inspired each new one. (The loopback
teacher lists questions from its script, whatever the examples; the kind of each new
question is the task its request asked for, which is what these counts measure.)
"""

from __future__ import annotations

from collections import Counter

from kdpipe.generate import GenerateOptions, run_generate
from kdpipe.loopback import ScriptLine, running
from kdpipe.records import Record, load_records, write_records

SUMS = [f"What is {a} plus {b}?" for a in range(11, 17) for b in range(3, 7)]
CAPITALS = [f"What is the capital of country number {k}?" for k in range(24)]


def probe_file(path, failed: str = "numeric"):
    """Seeds as `kdpipe probe` writes them: six failed questions of the `failed` kind, one easy of the other."""
    def probed(rec_id, q, task, gold, hard):
        return Record(id=rec_id, question=q, task=task, gold=gold, provenance={"probe": {
            "model": "run", "hard": hard, "answer": "7" if hard else gold, "reference": gold,
            "reason": "wrong" if hard else None, "round": 1}})
    sums = failed == "numeric"
    write_records(path, [probed(f"s{i}", SUMS[i], "numeric", "1", sums) for i in range(6 if sums else 1)]
                  + [probed(f"c{i}", CAPITALS[i], "text", "x", not sums) for i in range(1 if sums else 6)])
    return path


def expand(url, tmp_path, seeds, out, **kw):
    o = GenerateOptions(model="loopback", base_url=url, cache=tmp_path / "cache.sqlite", timeout=2, mode="expand",
                        num_new=40, seeds_per_prompt=2, seed=3, **kw)
    return run_generate(seeds, out, o)


def test_new_questions_concentrate_on_the_kind_the_student_failed(tmp_path):
    script = [ScriptLine(q, ["The answer is 1."], expand=True) for q in SUMS[6:] + CAPITALS[2:]]
    hard = probe_file(tmp_path / "hard.jsonl")
    other = probe_file(tmp_path / "hard-capitals.jsonl", failed="text")  # a student that fails the capitals
    with running(script) as srv:
        r = expand(srv.base_url, tmp_path, hard, tmp_path / "new.jsonl", round=2)
        expand(srv.base_url, tmp_path, other, tmp_path / "other-new.jsonl", round=2)
    new = load_records(tmp_path / "new.jsonl")
    assert len(new) == r.counts["written"] >= 30
    kinds = Counter(n.task for n in new)
    other_kinds = Counter(n.task for n in load_records(tmp_path / "other-new.jsonl"))
    # 6 of the 7 seeds are failed sums: most new questions are sums; fail the capitals instead, and
    # most are capitals.
    assert kinds["numeric"] >= 0.7 * len(new)
    assert other_kinds["text"] >= 0.7 * sum(other_kinds.values())
    hard_ids = {f"s{i}" for i in range(6)}
    for n in new:
        p = n.provenance
        assert p["round"] == 2 and p["teacher"]["prompt"] == "expand_hard.txt"
        assert set(p["inspired_by_hard"]) <= hard_ids and set(p["inspired_by_hard"]) <= set(p["inspired_by"])
        if n.task == "numeric":
            assert p["inspired_by_hard"]  # every new sum was inspired by a failed one



def test_plain_seeds_keep_the_plain_prompt_and_no_round(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    write_records(seeds, [Record(id=f"s{i}", question=q, task="numeric") for i, q in enumerate(SUMS[:6])])
    with running([ScriptLine(q, ["The answer is 1."], expand=True) for q in SUMS[6:]]) as srv:
        expand(srv.base_url, tmp_path, seeds, tmp_path / "new.jsonl")
    new = load_records(tmp_path / "new.jsonl")
    assert new and all(n.provenance["teacher"]["prompt"] == "expand.txt" for n in new)
    assert all("round" not in n.provenance and "inspired_by_hard" not in n.provenance for n in new)


def test_round_is_an_expand_option():
    url = "http://127.0.0.1:1/v1"
    assert "--round is a loop round (1, 2, ...) of expand mode" in GenerateOptions(
        model="m", base_url=url, round=2).problems()
    assert "--round is a loop round (1, 2, ...) of expand mode" in GenerateOptions(
        model="m", base_url=url, mode="expand", round=0).problems()


def test_no_eval_question_enters_a_rounds_training_data(tmp_path):
    """The teacher writes eval questions and near-copies of them among its new ones: probe never
    probes them, and the round's filter (against the eval file, as `make loop` runs it) drops them
    all, so that the training data of every round are free of them."""
    from kdpipe.filter import FilterOptions, run_filter
    from kdpipe.keys import question_key

    evals = SUMS[20:24]
    ev = tmp_path / "eval.jsonl"
    write_records(ev, [Record(id=f"e{i}", question=q, task="numeric", gold="1") for i, q in enumerate(evals)])
    near = ["Now, " + q.lower() for q in evals[:2]] + [q.upper().rstrip("?") + "!" for q in evals[2:]]
    said = "Adding the second number to the first one gives the total we want. The answer is 1."
    script = [ScriptLine(q, [said], expand=True) for q in SUMS[6:20] + evals + near]
    hard = probe_file(tmp_path / "hard.jsonl")
    with running(script) as srv:
        expand(srv.base_url, tmp_path, hard, tmp_path / "new.jsonl", round=1)
        labeled = GenerateOptions(model="loopback", base_url=srv.base_url, cache=tmp_path / "cache.sqlite", timeout=2)
        run_generate(tmp_path / "new.jsonl", tmp_path / "teacher.jsonl", labeled)
    written = {n.question for n in load_records(tmp_path / "new.jsonl")}
    assert written & set(evals + near)  # the teacher did write them
    run_filter(tmp_path / "teacher.jsonl", tmp_path / "filtered.jsonl", FilterOptions(against=[ev]))
    kept = load_records(tmp_path / "filtered.jsonl")
    eval_keys = {question_key(q) for q in evals}
    assert kept and not {k.question for k in kept} & set(evals + near)
    assert not {question_key(k.question) for k in kept} & eval_keys
