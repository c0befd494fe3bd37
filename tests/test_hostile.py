"""The ledger's promises against a hostile server (loopback hostile mode), over real HTTP:
never pay twice, never overspend, never leak the key, never crash on what a server sends."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from kdpipe.errors import KdpipeError
from kdpipe.generate import GenerateOptions, run_generate
from kdpipe.loopback import ScriptLine, running, subprocess_server
from kdpipe.records import load_records, meta_path
from kdpipe.teacher import ChatRequest, ResponseCache, TeacherConfig, TeacherFatalError, complete

SCRIPT = [ScriptLine(f"What is {i} plus {i}?", [f"{i} + {i} = {2 * i}. The answer is {2 * i}.",
                                                 f"Twice {i} is {2 * i}. The answer is {2 * i}."])
          for i in range(40)]
KEY = "sk-hostiletestkey0123456789"


def ask(i: int, n: int = 1) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": f"Q: What is {i} plus {i}?\nA:"}], n)


def config(url, **kw) -> TeacherConfig:
    kw.setdefault("timeout", 2.0)
    kw.setdefault("backoff", 0.01)
    return TeacherConfig(model="loopback", base_url=url, **kw)


def rows(path) -> int:
    return sqlite3.connect(path).execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def seeds_file(tmp_path, count: int):
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": SCRIPT[i].question, "task": "numeric"}) + "\n"
                            for i in range(count)))
    return path


def gen_opts(url, tmp_path, **kw):
    kw.setdefault("cache", tmp_path / "cache.sqlite")
    kw.setdefault("timeout", 1.0)
    kw.setdefault("retries", 1)
    return GenerateOptions(model="loopback", base_url=url, **kw)


def test_a_server_that_ignores_n_then_refuses_the_key_loses_no_answer(tmp_path):
    cache_path = tmp_path / "c.sqlite"
    with running(SCRIPT, hostile=["ignore_n"], unauthorized_after=1) as srv, ResponseCache(cache_path) as cache:
        with pytest.raises(TeacherFatalError):
            complete(config(srv.base_url, concurrency=1), [ask(1, n=3)], cache)
    assert rows(cache_path) == 1  # sample 0 was stored the moment it came, before the 401
    with running(SCRIPT) as srv, ResponseCache(cache_path) as cache:
        results = complete(config(srv.base_url), [ask(1, n=3)], cache)
        assert srv.stats["requests"] == 1  # only samples 1 and 2, in one request with n=2
    assert [c.cached for c in results[0]] == [True, False, False]


def test_a_401_mid_run_stores_every_answer_the_server_gave(tmp_path):
    cache_path = tmp_path / "c.sqlite"
    with running(SCRIPT, latency=0.05, unauthorized_after=10) as srv, ResponseCache(cache_path) as cache:
        with pytest.raises(TeacherFatalError):
            complete(config(srv.base_url, concurrency=6), [ask(i) for i in range(30)], cache)
        answered = srv.stats["answered"]
    assert answered == 10
    assert rows(cache_path) == answered  # requests in flight at the 401 came back and were stored


def test_kill_9_while_later_samples_hang_keeps_sample_0(tmp_path):
    seeds = seeds_file(tmp_path, 1)
    cache_path = tmp_path / "cache.sqlite"
    with running(SCRIPT, hostile=["ignore_n"], hang_after=1) as srv:
        proc = subprocess.Popen([sys.executable, "-m", "kdpipe", "generate", str(seeds), "-o",
                                 str(tmp_path / "out.jsonl"), "--model", "loopback", "--base-url", srv.base_url,
                                 "--samples", "3", "--cache", str(cache_path), "--timeout", "60"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": os.getcwd()})
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (cache_path.exists() and _rows_or_0(cache_path)):
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert rows(cache_path) == 1


def _rows_or_0(path) -> int:
    try:
        return rows(path)
    except sqlite3.Error:
        return 0


def test_responses_of_every_odd_shape_are_cached_recorded_and_reread(tmp_path):
    kinds = ["no_usage", "usage_list", "usage_string", "usage_nan", "null_choice", "string_message",
             "lone_surrogate"]
    seeds = seeds_file(tmp_path, 7)
    out = tmp_path / "out.jsonl"
    with running(SCRIPT, hostile=kinds) as srv:
        run_generate(seeds, out, gen_opts(srv.base_url, tmp_path, concurrency=1))
        assert srv.stats["requests"] == 7  # nothing retried: each odd answer was paid for once
    first = [json.loads(line)["samples"] for line in open(out, encoding="utf-8")]
    samples = {r.id: r.samples[0] for r in load_records(out)}
    assert [samples[f"q{i}"].error for i in range(7)] == [None, None, None, None, "malformed", "malformed", None]
    assert "null" in samples["q4"].detail and "string" in samples["q5"].detail
    assert samples["q6"].text.endswith("\ufffd") and samples["q6"].answer == "12"
    with running(SCRIPT) as srv:  # the rerun reads the same entries the same way and pays nothing
        run_generate(seeds, out, gen_opts(srv.base_url, tmp_path))
        assert srv.stats["requests"] == 0
    again = [json.loads(line)["samples"] for line in open(out, encoding="utf-8")]
    assert all(s["cached"] for r in again for s in r)
    assert [[{**s, "cached": None} for s in r] for r in again] == [[{**s, "cached": None} for s in r] for r in first]


def test_max_usd_holds_when_the_server_sends_no_usage(tmp_path):
    seeds = seeds_file(tmp_path, 30)
    out = tmp_path / "out.jsonl"
    # 1 USD per million tokens in and out: each request's worst case is about 300 µUSD.
    kw = dict(max_usd=0.003, price_in=1.0, price_out=1.0, max_tokens=200, concurrency=4)
    with running(SCRIPT, hostile=["no_usage"]) as srv:
        result = run_generate(seeds, out, gen_opts(srv.base_url, tmp_path, **kw))
        sent = srv.stats["answered"]
    budget = result.extra["budget"]
    assert budget.stopped and 0 < sent < 30
    assert budget.spent <= 0.003
    assert sent * (200 / 1e6) <= 0.003  # even if every answer had been max_tokens long
    usage = json.loads(meta_path(out).read_text())["usage"]
    assert usage["stopped_at_max_usd"] is True and usage["responses_without_usage"] == sent
    assert 0 < usage["max_usd_counted"] <= 0.003  # the ledger says what the cap counted, not $0


def test_identical_samples_in_one_run_are_sent_once(tmp_path):
    with running(SCRIPT) as srv, ResponseCache(tmp_path / "c.sqlite") as cache:
        results = complete(config(srv.base_url), [ask(3, n=2), ask(3, n=2), ask(4)], cache)
        assert srv.stats["requests"] == 2
    assert [c.text for c in results[0]] == [c.text for c in results[1]]
    assert all(c.error is None for r in results for c in r)


def test_a_key_echoed_in_an_error_body_never_reaches_a_file_or_the_terminal(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    seeds = seeds_file(tmp_path, 2)
    out = tmp_path / "out.jsonl"
    with running(SCRIPT, hostile=["echo_headers"]) as srv:
        code, stdout, stderr = cli("generate", seeds, "-o", out, "--model", "loopback", "--base-url",
                                   srv.base_url, "--cache", tmp_path / "c.sqlite", "--retries", "0")
    written = out.read_text() + meta_path(out).read_text()
    assert "upstream failed" in written  # the detail is kept ...
    assert KEY not in written and KEY not in stdout + stderr  # ... without the key


def test_a_locked_cache_fails_in_one_line_naming_the_holder_before_sending(tmp_path, cli, monkeypatch):
    cache_path = tmp_path / "c.sqlite"
    ResponseCache(cache_path).close()
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys, time\n"
                               f"db = sqlite3.connect({str(cache_path)!r}, isolation_level=None)\n"
                               "db.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        monkeypatch.setenv("KDPIPE_CACHE_WAIT", "0.3")
        with running(SCRIPT) as srv:
            code, _, stderr = cli("generate", seeds_file(tmp_path, 2), "-o", tmp_path / "out.jsonl", "--model",
                                  "loopback", "--base-url", srv.base_url, "--cache", cache_path)
            assert srv.stats["requests"] == 0
    finally:
        holder.kill()
        holder.wait()
    assert code == 1
    assert "locked" in stderr and f"pid {holder.pid}" in stderr and "nothing was sent" in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.jsonl").exists()


def test_answers_a_lock_keeps_out_mid_run_are_spilled_and_merged(tmp_path, monkeypatch):
    monkeypatch.setenv("KDPIPE_CACHE_WAIT", "0.1")
    cache_path = tmp_path / "c.sqlite"
    with running(SCRIPT) as srv:
        cache = ResponseCache(cache_path)
        other = sqlite3.connect(cache_path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process writes for longer than the wait
        results = complete(config(srv.base_url), [ask(i) for i in range(5)], cache)
        again = complete(config(srv.base_url), [ask(i) for i in range(5)], cache)
        assert srv.stats["requests"] == 5  # the spilled answers serve this process too
        other.execute("ROLLBACK")
        cache.close()
    assert all(c.text for r in results for c in r) and all(c.cached for r in again for c in r)
    assert rows(cache_path) == 5  # merged on close, the spill file gone
    assert not list(tmp_path.glob("c.sqlite.pending-*"))


def test_a_damaged_cache_is_one_line(tmp_path):
    bad = tmp_path / "c.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(KdpipeError, match="cannot open the response cache"):
        ResponseCache(bad)


def test_serve_flags_select_hostile_mode(tmp_path):
    with subprocess_server("--script", _script_file(tmp_path), "--hostile", "null_choice") as url:
        from urllib.request import Request, urlopen

        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "What is 2 plus 2?"}]}).encode()
        reply = json.loads(urlopen(Request(url + "/chat/completions", body,
                                           {"Content-Type": "application/json"})).read())
    assert reply["choices"] == [None]


def _script_file(tmp_path):
    path = tmp_path / "script.jsonl"
    path.write_text(json.dumps({"question": SCRIPT[2].question, "completions": SCRIPT[2].completions}) + "\n")
    return path


@pytest.mark.parametrize("batch", [False, True])
def test_two_ids_with_the_same_question_are_paid_once_online_and_in_a_batch(tmp_path, batch):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"q{i}", "question": SCRIPT[i % 2].question, "task": "numeric"})
                             + "\n" for i in range(4)))
    out = tmp_path / "out.jsonl"
    with running(SCRIPT) as srv:
        run_generate(seeds, out, gen_opts(srv.base_url, tmp_path, batch=batch, poll_interval=0.02))
        assert sum(srv.teacher.paid.values()) == 2
    assert [r.samples[0].answer for r in load_records(out)] == ["0", "2", "0", "2"]


def test_two_runs_at_once_on_one_cache_pay_once_for_each_answer(tmp_path):
    seeds = seeds_file(tmp_path, 20)
    cache_path = tmp_path / "cache.sqlite"
    with running(SCRIPT, latency=0.2) as srv:
        procs = [subprocess.Popen([sys.executable, "-m", "kdpipe", "generate", str(seeds), "-o",
                                   str(tmp_path / f"out{k}.jsonl"), "--model", "loopback", "--base-url",
                                   srv.base_url, "--samples", "2", "--concurrency", "4", "--cache", str(cache_path),
                                   "-q"], stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.getcwd()})
                 for k in range(2)]
        for proc in procs:
            assert proc.wait(120) == 0, proc.stderr.read()
        assert sum(srv.teacher.paid.values()) == 40  # 20 questions x 2 samples, each paid once
    answers = [[s.answer for r in load_records(tmp_path / f"out{k}.jsonl") for s in r.samples] for k in range(2)]
    assert answers[0] == answers[1] and None not in answers[0]


def test_a_crash_while_reading_answers_loses_none_of_them(tmp_path, monkeypatch):
    import kdpipe.answers

    def crash(*args, **kwargs):
        raise RuntimeError("a bug in the answer parser")

    seeds = seeds_file(tmp_path, 5)
    monkeypatch.setattr(kdpipe.answers, "parse_completion", crash)
    with running(SCRIPT) as srv:
        with pytest.raises(RuntimeError):
            run_generate(seeds, tmp_path / "out.jsonl", gen_opts(srv.base_url, tmp_path, samples=2))
    assert rows(tmp_path / "cache.sqlite") == 10  # every answer was stored before anything read it
    monkeypatch.undo()
    with running(SCRIPT) as srv:
        run_generate(seeds, tmp_path / "out.jsonl", gen_opts(srv.base_url, tmp_path, samples=2))
        assert srv.stats["requests"] == 0


def test_an_unknown_hostile_kind_is_one_line(cli):
    code, _, stderr = cli("teacher", "serve", "--port", "0", "--hostile", "bogus", "--unauthorized-after", "-1")
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "unknown hostile kind 'bogus'" in stderr and "--unauthorized-after" in stderr
