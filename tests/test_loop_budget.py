"""One --max-usd for several generate runs: the spending ledger (generate --spend-ledger)."""

import json

from kdpipe.generate import GenerateOptions, run_generate
from kdpipe.loopback import running
from kdpipe.records import load_records, meta_path, write_records
from support_teacher import palm_script, svamp_seeds


def spent(path) -> float:
    return sum(json.loads(line)["usd"] for line in path.read_text().splitlines())


def test_a_ledger_caps_several_runs_together_and_a_higher_cap_pays_only_for_the_rest(shared_data, tmp_path, cli):
    seeds = svamp_seeds(shared_data, tmp_path, limit=120)
    records = load_records(seeds)
    write_records(tmp_path / "a.jsonl", records[:60])  # two stages of one loop, one ledger
    write_records(tmp_path / "b.jsonl", records[60:])
    ledger = tmp_path / "spend.jsonl"
    with running(palm_script(shared_data, seeds), latency=0.002) as srv:
        def run(src, out, cap):
            return run_generate(tmp_path / src, tmp_path / out, GenerateOptions(
                model="loopback", base_url=srv.base_url, timeout=2.0, cache=tmp_path / "cache.sqlite",
                concurrency=4, price_in=3.0, price_out=12.0, max_usd=cap, spend_ledger=ledger))
        first = run("a.jsonl", "a-out.jsonl", 1.0)
        assert first.exit_code == 0 and abs(spent(ledger) - first.cost_usd) < 1e-6
        # The cap is for both runs: the second may spend only what the first left, and stops there.
        cap = 1.5 * first.cost_usd
        second = run("b.jsonl", "b-out.jsonl", cap)
        assert second.exit_code == 3 and second.extra["budget"].stopped
        assert spent(ledger) <= cap + 1e-9 and second.cost_usd > 0
        assert "spent earlier (--spend-ledger)" in second.notice()
        usage = json.loads(meta_path(tmp_path / "b-out.jsonl").read_text())["usage"]
        assert abs(usage["max_usd_spent_earlier"] - first.cost_usd) < 1e-6
        not_sent = usage["not_sent_samples"]
        asked = srv.stats["requests"]
        # A higher cap: only the samples not sent are paid for; the ledger grows by their cost alone.
        before = spent(ledger)
        again = run("b.jsonl", "b-out.jsonl", 100.0)
        assert again.exit_code == 0 and srv.stats["requests"] - asked == not_sent
        assert abs(spent(ledger) - before - again.cost_usd) < 1e-6
        assert len(ledger.read_text().splitlines()) == 3
        # The whole cap already spent: a rerun of a finished stage still reads its answers from the cache.
        done = run("a.jsonl", "a-out2.jsonl", spent(ledger))
        assert done.exit_code == 0 and srv.stats["requests"] - asked == not_sent
    assert len(ledger.read_text().splitlines()) == 3  # a run that sent nothing adds no line
    # A broken ledger is refused in one line before anything is sent.
    ledger.write_text("not json\n")
    code, _, err = cli("generate", tmp_path / "a.jsonl", "-o", tmp_path / "c.jsonl", "--model", "loopback",
                       "--base-url", "http://127.0.0.1:9", "--cache", tmp_path / "cache.sqlite", "--price-in", "3",
                       "--price-out", "12", "--max-usd", "5", "--spend-ledger", ledger)
    assert code != 0 and "spend.jsonl, line 1: not a ledger line" in err and "Traceback" not in err
    assert not (tmp_path / "c.jsonl").exists()


def test_the_loop_scorecard_counts_from_the_ledger_what_a_rerun_stage_no_longer_shows(shared_data, tmp_path):
    from kdpipe.loop_report import scorecard

    seeds = svamp_seeds(shared_data, tmp_path, limit=40)
    work, ledger = tmp_path / "work", tmp_path / "work" / "spend.jsonl"
    (work / "round-1").mkdir(parents=True)
    with running(palm_script(shared_data, seeds), latency=0.002) as srv:
        def run(out, cap):
            return run_generate(seeds if out == "teacher.jsonl" else tmp_path / "b.jsonl", work / out,
                                GenerateOptions(model="loopback", base_url=srv.base_url, timeout=2.0,
                                                cache=tmp_path / "cache.sqlite", concurrency=2, price_in=3.0,
                                                price_out=12.0, max_usd=cap, spend_ledger=ledger))
        write_records(tmp_path / "b.jsonl", [replace_question(r) for r in load_records(seeds)])
        zero = run("teacher.jsonl", 10.0)
        stopped = run("round-1/teacher.jsonl", zero.cost_usd + 0.02)  # round 1 stops at the loop's cap
        assert stopped.exit_code == 3
        finished = run("round-1/teacher.jsonl", 10.0)  # its .meta.json now shows this run alone

    def dollars(card, n):
        row = next(line for line in card.splitlines() if line.startswith(f"| {n} |"))
        return float(row.rstrip(" |").rsplit("$", 1)[1])

    with_ledger, meta_only = scorecard(work, 1, ledger, 10.0), scorecard(work, 1)
    assert abs(dollars(with_ledger, 0) - zero.cost_usd) < 1e-4
    assert abs(dollars(with_ledger, 1) - (stopped.cost_usd + finished.cost_usd)) < 1e-4
    assert abs(dollars(meta_only, 1) - finished.cost_usd) < 1e-4 and stopped.cost_usd > 1e-3
    paid = zero.cost_usd + stopped.cost_usd + finished.cost_usd
    assert f"Paid in all ({ledger}, 3 runs): ${paid:.4f} of the budget of $10." in with_ledger


def replace_question(record):
    """The same question asked another way (round 1's new questions): new requests, not cache hits."""
    record.id, record.question = record.id + "-r1", record.question + " Explain briefly."
    return record
