"""generate --logprobs: the teacher's per-token logprobs asked for, stored compactly, cached and checked."""

import json

from kdpipe.generate import GenerateOptions, run_generate
from kdpipe.loopback import ScriptLine, running
from kdpipe.loopback.replies import fake_logprobs
from kdpipe.records import Record, load_records
from kdpipe.token_logprobs import from_api, problem

QUESTIONS = [f"What is {i} plus {i}?" for i in range(6)]
SCRIPT = [ScriptLine(q, [f"{i} plus {i} makes {2 * i}. The answer is {2 * i}."]) for i, q in enumerate(QUESTIONS)]


def seeds(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "task": "numeric"}) + "\n"
                            for i, q in enumerate(QUESTIONS)))
    return path


def opts(url, tmp_path, **kw):
    return GenerateOptions(model="loopback", base_url=url, cache=tmp_path / "cache.sqlite", timeout=2.0, **kw)


def test_generate_stores_each_tokens_logprob_and_top_k_and_a_rerun_pays_nothing(tmp_path):
    out = tmp_path / "out.jsonl"
    with running(SCRIPT) as srv:
        r = run_generate(seeds(tmp_path), out, opts(srv.base_url, tmp_path, logprobs=5, samples=2))
        first = out.read_text()
        sent = srv.stats["requests"]
        again = run_generate(seeds(tmp_path), tmp_path / "again.jsonl",
                             opts(srv.base_url, tmp_path, logprobs=5, samples=2))
        assert srv.stats["requests"] == sent  # every answer, logprobs included, from the cache
    assert r.exit_code == 0 and again.stats.cached == 12
    records = load_records(out)
    for rec, line in zip(records, SCRIPT):
        for s in rec.samples:
            lp = s.logprobs
            assert problem(lp) is None and "".join(lp["tokens"]) == s.text == line.completions[0]
            assert all(len(t) == 5 for t in lp["top_tokens"])
            assert lp == from_api(fake_logprobs(s.text, 5))  # what the server sent, rounded
            assert all(a == b[0] for a, b in zip(lp["tokens"], lp["top_tokens"]))
    cached_rows = [json.loads(x) for x in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert [[s["logprobs"] for s in row["samples"]] for row in cached_rows] == \
        [[s.logprobs for s in rec.samples] for rec in records]
    assert Record.from_dict(json.loads(first.splitlines()[0])).samples[0].logprobs == records[0].samples[0].logprobs


def test_answers_cached_without_logprobs_are_asked_again_with_them(tmp_path):
    with running(SCRIPT) as srv:
        run_generate(seeds(tmp_path), tmp_path / "plain.jsonl", opts(srv.base_url, tmp_path))
        plain = srv.stats["requests"]
        run_generate(seeds(tmp_path), tmp_path / "lp.jsonl", opts(srv.base_url, tmp_path, logprobs=2))
        assert srv.stats["requests"] == 2 * plain
    assert all(s.logprobs is None for rec in load_records(tmp_path / "plain.jsonl") for s in rec.samples)
    assert all(s.logprobs for rec in load_records(tmp_path / "lp.jsonl") for s in rec.samples)
    assert "logprobs" not in (tmp_path / "plain.jsonl").read_text()


def test_a_server_that_ignores_logprobs_stops_the_run_with_one_line(cli, tmp_path):
    out = tmp_path / "out.jsonl"
    with running(SCRIPT, logprobs=False) as srv:
        code, _, err = cli("generate", seeds(tmp_path), "-o", out, "--model", "loopback", "--base-url",
                           srv.base_url, "--cache", tmp_path / "c.sqlite", "--logprobs", "3")
    assert code == 1 and err.count("\n") == 1 and "returned no logprobs" in err
    assert not out.exists()


def test_bad_logprobs_options_are_refused_before_anything_is_sent(cli, tmp_path):
    code, _, err = cli("generate", seeds(tmp_path), "-o", tmp_path / "o.jsonl", "--model", "m", "--base-url",
                       "http://127.0.0.1:9/v1", "--logprobs", "21")
    assert code == 2 and "--logprobs must be between 1 and 20" in err
    code, _, err = cli("generate", seeds(tmp_path), "-o", tmp_path / "o.jsonl", "--model", "m", "--base-url",
                       "http://127.0.0.1:9/v1", "--mode", "expand", "--logprobs", "5")
    assert code == 2 and "--logprobs is for label mode" in err


def test_dry_run_and_batch_with_logprobs(cli, tmp_path):
    with running(SCRIPT) as srv:
        code, out, _ = cli("generate", seeds(tmp_path), "-o", tmp_path / "o.jsonl", "--model", "loopback",
                           "--base-url", srv.base_url, "--cache", tmp_path / "c.sqlite", "--logprobs", "4",
                           "--dry-run", "--price-in", "1", "--price-out", "2")
        assert code == 0 and srv.stats["requests"] == 0 and "6" in out
        r = run_generate(seeds(tmp_path), tmp_path / "b.jsonl",
                         opts(srv.base_url, tmp_path, logprobs=4, batch=True, poll_interval=0.02))
    assert r.exit_code == 0
    for rec in load_records(tmp_path / "b.jsonl"):
        assert rec.samples[0].logprobs == from_api(fake_logprobs(rec.samples[0].text, 4))


def test_a_token_that_splits_a_character_keeps_its_bytes():
    raw = {"content": [{"token": "\\xe2\\x82", "logprob": -0.5, "bytes": [226, 130], "top_logprobs": []},
                       {"token": "ok", "logprob": -0.1, "bytes": [111, 107], "top_logprobs": []}]}
    assert from_api(raw)["bytes"] == [[226, 130], None]
    assert "bytes" not in from_api({"content": raw["content"][1:]})


def test_filter_keeps_the_logprobs_and_format_kd_writes_them_beside_the_teachers_text(cli, tmp_path):
    from kdpipe.filter import FilterOptions, run_filter
    from kdpipe.format import FormatOptions, run_format

    with running(SCRIPT) as srv:
        run_generate(seeds(tmp_path), tmp_path / "gen.jsonl", opts(srv.base_url, tmp_path, logprobs=3))
    # one question without logprobs: format says why it has no kd row
    rows = [json.loads(x) for x in (tmp_path / "gen.jsonl").read_text().splitlines()]
    del rows[0]["samples"][0]["logprobs"]
    (tmp_path / "gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_filter(tmp_path / "gen.jsonl", tmp_path / "kept.jsonl",
               FilterOptions(gold=False, min_question_words=1, near_dup=False, dedup=False))
    kept = load_records(tmp_path / "kept.jsonl")
    assert [s.logprobs for r in kept for s in r.samples] == \
        [s.logprobs for r in load_records(tmp_path / "gen.jsonl") if r.id in {k.id for k in kept} for s in r.samples]
    result = run_format(tmp_path / "kept.jsonl", tmp_path / "kd.jsonl", FormatOptions(style="kd", val_frac=0))
    assert result.skipped["sample without teacher logprobs (generate --logprobs)"] == 1
    out = [json.loads(x) for x in (tmp_path / "kd.jsonl").read_text().splitlines()]
    by_id = {r.id: r.samples[0] for r in kept}
    assert len(out) == len(kept) - 1
    for row in out:
        s = by_id[row["id"]]
        assert row["task"] == "cot" and row["completion"][0]["content"] == s.text
        assert row["teacher"] == s.logprobs and "".join(row["teacher"]["tokens"]) == s.text
    meta = json.loads((tmp_path / "kd.jsonl.meta.json").read_text())
    assert meta["counts"]["rows_with_teacher_logprobs"] == len(out)
    code, _, err = cli("format", tmp_path / "kept.jsonl", "-o", tmp_path / "cot.jsonl", "--style", "cot")
    assert code == 0
    for row in map(json.loads, (tmp_path / "cot.jsonl").read_text().splitlines()):
        s = by_id[row["id"]]  # a cot row keeps the logprobs only where it is the teacher's text exactly
        assert ("teacher" in row) == (row["completion"][0]["content"] == s.text and s.logprobs is not None)
    code, _, _ = cli("format", tmp_path / "kept.jsonl", "-o", tmp_path / "dss.jsonl", "--style", "dss")
    assert code == 0 and "teacher" not in (tmp_path / "dss.jsonl").read_text()  # dss splits the text in two


def test_kill_9_then_rerun_pays_only_what_never_completed_and_keeps_the_logprobs(tmp_path):
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    many = [f"How many legs do {i} spiders have?" for i in range(120)]
    script = [ScriptLine(q, [f"Each has 8 legs, so {8 * i}. The answer is {8 * i}."]) for i, q in enumerate(many)]
    src = tmp_path / "seeds.jsonl"
    src.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "task": "numeric"}) + "\n"
                           for i, q in enumerate(many)))
    cache = tmp_path / "cache.sqlite"
    with running(script, latency=0.02) as srv:
        def command(out, cache_file):
            return [sys.executable, "-m", "kdpipe", "generate", str(src), "-o", str(out), "--model", "loopback",
                    "--base-url", srv.base_url, "--cache", str(cache_file), "--concurrency", "2",
                    "--logprobs", "4", "--quiet"]

        proc = subprocess.Popen(command(tmp_path / "out.jsonl", cache), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        kept = 0
        while time.monotonic() < deadline and kept < 30:
            time.sleep(0.02)
            if cache.exists():
                try:
                    kept = sqlite3.connect(cache).execute("SELECT COUNT(*) FROM responses").fetchone()[0]
                except sqlite3.OperationalError:
                    pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kept = sqlite3.connect(cache).execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        assert 30 <= kept < 120 and not (tmp_path / "out.jsonl").exists()
        before = srv.stats["requests"]
        subprocess.run(command(tmp_path / "out.jsonl", cache), check=True, timeout=120)
        assert srv.stats["requests"] - before == 120 - kept
        subprocess.run(command(tmp_path / "whole.jsonl", tmp_path / "fresh.sqlite"), check=True, timeout=120)
    resumed, whole = load_records(tmp_path / "out.jsonl"), load_records(tmp_path / "whole.jsonl")
    assert [s.logprobs for r in resumed for s in r.samples] == [s.logprobs for r in whole for s in r.samples]
    assert all(s.logprobs for r in resumed for s in r.samples)


def test_eval_teacher_after_generate_logprobs_sends_nothing_and_plain_generate_gets_no_logprobs(cli, tmp_path):
    """An answer cached with logprobs also answers the same request without them (teacher/cache.py)."""
    from support_tiny import build_student

    from kdpipe.records import write_records

    ev = tmp_path / "eval.jsonl"
    write_records(ev, [Record(id=f"q{i}", question=q, task="numeric", gold=str(2 * i)) for i, q in enumerate(QUESTIONS)])
    student = build_student(tmp_path / "student")
    cache = tmp_path / "cache.sqlite"
    with running(SCRIPT) as srv:
        code, _, err = cli("generate", ev, "-o", tmp_path / "lp.jsonl", "--model", "loopback", "--base-url",
                           srv.base_url, "--cache", cache, "--logprobs", "5", "-q")
        assert code == 0, err
        sent = srv.stats["requests"]
        assert sent == len(QUESTIONS)
        code, _, err = cli("eval", ev, "--model", student, "--teacher", "loopback", "--base-url", srv.base_url,
                           "--cache", cache, "--max-new-tokens", "2", "-o", tmp_path / "eval.json", "-q")
        assert code == 0, err
        code, _, err = cli("generate", ev, "-o", tmp_path / "plain.jsonl", "--model", "loopback", "--base-url",
                           srv.base_url, "--cache", cache, "-q")
        assert code == 0, err
        assert srv.stats["requests"] == sent  # neither eval --teacher nor plain generate asked again
        code, _, err = cli("generate", ev, "-o", tmp_path / "lp3.jsonl", "--model", "loopback", "--base-url",
                           srv.base_url, "--cache", cache, "--logprobs", "3", "-q")
        assert code == 0, err
        assert srv.stats["requests"] == 2 * sent  # another K is another request: never the other way round
    teacher = next(m for m in json.loads((tmp_path / "eval.json").read_text())["models"] if m["role"] == "teacher")
    assert teacher["correct"] == len(QUESTIONS) and teacher["tokens"]["cached_answers"] == len(QUESTIONS)
    plain = load_records(tmp_path / "plain.jsonl")
    assert [s.text for r in plain for s in r.samples] == [s.text for r in load_records(tmp_path / "lp.jsonl")
                                                          for s in r.samples]
    assert "logprobs" not in (tmp_path / "plain.jsonl").read_text()


def test_answers_the_batch_api_returned_with_logprobs_also_answer_plain_requests(tmp_path):
    with running(SCRIPT) as srv:
        r = run_generate(seeds(tmp_path), tmp_path / "b.jsonl",
                         opts(srv.base_url, tmp_path, logprobs=4, batch=True, poll_interval=0.02))
        asked = srv.stats["requests"]
        plain = run_generate(seeds(tmp_path), tmp_path / "plain.jsonl", opts(srv.base_url, tmp_path))
        assert srv.stats["requests"] == asked
    assert r.exit_code == 0 and plain.exit_code == 0 and plain.stats.cached == len(QUESTIONS)
    assert [s.text for rec in load_records(tmp_path / "plain.jsonl") for s in rec.samples] == \
        [s.text for rec in load_records(tmp_path / "b.jsonl") for s in rec.samples]
