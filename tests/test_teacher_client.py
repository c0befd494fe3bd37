"""The teacher client against a real loopback HTTP server: concurrency, retries, faults, cache."""

import re
import sqlite3
import time

import pytest

from kdpipe.teacher import ChatRequest, ResponseCache, Stats, TeacherConfig, TeacherFatalError, complete
from kdpipe.loopback import ScriptLine, running
from kdpipe.teacher.pricing import resolve_price

SCRIPT = [ScriptLine(f"What is {i} plus {i}?", [f"{i} + {i} = {2 * i}. The answer is {2 * i}.",
                                                 f"Twice {i} is {2 * i}. The answer is {2 * i}."])
          for i in range(40)]


def ask(i: int, n: int = 1) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": f"Q: What is 1 plus 1?\nA: 2\n\nQ: What is {i} plus {i}?\nA:"}], n)


def config(url, **kw) -> TeacherConfig:
    kw.setdefault("timeout", 2.0)
    kw.setdefault("backoff", 0.01)
    return TeacherConfig(model="loopback", base_url=url, **kw)


@pytest.mark.parametrize("transport", ["openai", "aiohttp", "asyncio"])
def test_answers_in_request_order_with_n_samples(tmp_path, transport):
    with running(SCRIPT, latency=0.01) as srv, ResponseCache(tmp_path / "c.sqlite") as cache:
        results = complete(config(srv.base_url, transport=transport, concurrency=8),
                           [ask(i, n=3) for i in range(40)], cache)
    for i, comps in enumerate(results):
        # The question asked is the last one in the prompt, not the few-shot exemplar's.
        assert [c.index for c in comps] == [0, 1, 2]
        assert [c.text for c in comps] == [SCRIPT[i].completions[k % 2] for k in range(3)]
        assert all(c.finish_reason == "stop" and not c.cached and c.error is None for c in comps)
    assert srv.stats["requests"] == 40  # one request per question: `n` was used
    assert sum(c.usage["completion_tokens"] for c in results[0]) > 0


@pytest.mark.parametrize("behaviour, sent", [({"max_n": 1}, 15), ({"reject_n": True}, 20)])
def test_server_without_n_gets_separate_requests(tmp_path, behaviour, sent):
    with running(SCRIPT, **behaviour) as srv, ResponseCache(tmp_path / "c.sqlite") as cache:
        results = complete(config(srv.base_url), [ask(i, n=3) for i in range(5)], cache)
    assert [len(r) for r in results] == [3] * 5
    assert all(c.text and c.error is None for r in results for c in r)
    assert srv.stats["requests"] == sent  # ignored n: 3 per question; refused n: 1 refused + 3


def test_concurrency_limit_is_kept(tmp_path):
    with running(SCRIPT, latency=0.1) as srv, ResponseCache(tmp_path / "c.sqlite") as cache:
        started = time.monotonic()
        complete(config(srv.base_url, concurrency=5), [ask(i) for i in range(40)], cache)
        elapsed = time.monotonic() - started
    assert srv.stats["max_in_flight"] == 5
    assert elapsed >= 40 / 5 * 0.1


def test_cache_means_a_rerun_sends_nothing_and_more_samples_pay_only_for_new(tmp_path):
    with running(SCRIPT) as srv:
        with ResponseCache(tmp_path / "c.sqlite") as cache:
            first = complete(config(srv.base_url), [ask(i, 2) for i in range(10)], cache)
        with ResponseCache(tmp_path / "c.sqlite") as cache:
            again = complete(config(srv.base_url, concurrency=3), [ask(i, 2) for i in range(10)], cache)
            assert srv.stats["requests"] == 10
            assert all(c.cached for r in again for c in r)
            assert [[c.text for c in r] for r in again] == [[c.text for c in r] for r in first]
            more = complete(config(srv.base_url), [ask(i, 3) for i in range(10)], cache)
    assert srv.stats["requests"] == 20  # one more request per question, for sample 2 only
    assert [c.cached for c in more[0]] == [True, True, False]


def test_a_different_sampling_parameter_is_a_different_request(tmp_path):
    with running(SCRIPT) as srv, ResponseCache(tmp_path / "c.sqlite") as cache:
        complete(config(srv.base_url), [ask(1)], cache)
        complete(config(srv.base_url, temperature=0.5), [ask(1)], cache)
        complete(config(srv.base_url, max_tokens=64), [ask(1)], cache)
    assert srv.stats["requests"] == 3


def test_every_fault_is_survived_and_only_completed_responses_are_cached(tmp_path):
    faults = {"rate_limit": 0.1, "server_error": 0.1, "malformed": 0.1, "hang": 0.05,
              "truncated": 0.1, "empty": 0.1}
    with running(SCRIPT, faults=faults) as srv, ResponseCache(tmp_path / "c.sqlite") as cache:
        stats = Stats()
        results = complete(config(srv.base_url, timeout=0.3, concurrency=16), [ask(i) for i in range(40)],
                           cache, stats)
        assert all(c.error is None for r in results for c in r)  # retries absorbed the transport faults
        assert stats.retries == sum(srv.stats[k] for k in ("rate_limit", "server_error", "malformed", "hang"))
        finishes = [r[0].finish_reason for r in results]
        assert finishes.count("length") == srv.stats["truncated"]
        assert sum(r[0].text == "" for r in results) == srv.stats["empty"]
        assert len(cache) == 40


def test_retry_after_is_honoured_and_exhausted_retries_become_a_transport_error(tmp_path):
    with running(SCRIPT, faults={"rate_limit": 1.0}, retry_after=0.2) as srv, \
            ResponseCache(tmp_path / "c.sqlite") as cache:
        started = time.monotonic()
        (c,), = complete(config(srv.base_url, retries=2), [ask(1)], cache)
        elapsed = time.monotonic() - started
    assert c.error == "transport" and "HTTP 429" in c.detail and "3 attempts" in c.detail
    assert elapsed >= 0.4  # waited Retry-After twice although our own backoff is 10 ms
    assert len(ResponseCache(tmp_path / "c.sqlite")) == 0  # nothing to reuse: the rerun retries


def test_a_hung_request_times_out_and_is_retried(tmp_path):
    with running(SCRIPT, faults={"hang": 1.0}) as srv, ResponseCache(tmp_path / "c.sqlite") as cache:
        started = time.monotonic()
        (c,), = complete(config(srv.base_url, timeout=0.2, retries=1), [ask(1)], cache)
    assert c.error == "transport" and "0.2 s" in c.detail
    assert srv.stats["requests"] == 2 and time.monotonic() - started < 3


@pytest.mark.parametrize("transport", ["openai", "aiohttp", "asyncio"])
@pytest.mark.parametrize("behaviour, message", [
    ({"api_key": "right-key"}, "API key was refused (HTTP 401)"),
    ({"models": ["gpt-x"]}, "not found (HTTP 404)"),
])
def test_fatal_errors_stop_the_run_at_once(tmp_path, monkeypatch, transport, behaviour, message):
    monkeypatch.setenv("OPENAI_API_KEY", "wrong-key")
    with running(SCRIPT, latency=0.05, **behaviour) as srv, ResponseCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(TeacherFatalError, match=re.escape(message)):
            complete(config(srv.base_url, transport=transport, concurrency=4), [ask(i) for i in range(40)], cache)
        # Stopped at the first answers, not after failing all 40.
        assert srv.stats["requests"] <= 8


def test_cache_rows_are_committed_as_they_arrive(tmp_path):
    with running(SCRIPT) as srv, ResponseCache(tmp_path / "c.sqlite") as cache:
        complete(config(srv.base_url), [ask(i) for i in range(3)], cache)
        # Another connection (another process after a crash) sees them while this one is open.
        rows = sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    assert rows == 3
    assert sqlite3.connect(tmp_path / "c.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_config_problems_are_reported_together(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    problems = TeacherConfig(model="", base_url="https://api.example.com/v1", concurrency=0,
                             temperature=3).problems()
    assert len(problems) == 4 and any("OPENAI_API_KEY" in p for p in problems)
    assert TeacherConfig(model="m", base_url="http://127.0.0.1:1/v1").problems() == []  # no key needed locally


def test_price_table_and_override():
    assert resolve_price("gpt-4o-mini").cost(1_000_000, 1_000_000) == pytest.approx(0.75)
    assert resolve_price("openai/gpt-4o-2024-08-06").input == 2.50
    assert resolve_price("my-local-model") is None
    assert resolve_price("my-local-model", 1.0, 2.0).cost(500_000, 250_000) == pytest.approx(1.0)


def test_a_base_url_with_credentials_is_refused_without_echoing_them(cli, tmp_path):
    url = "http://user:sk-SECRET-in-url@127.0.0.1:9/v1"
    problems = TeacherConfig(model="m", base_url=url).problems()
    assert problems == ["--base-url must not hold credentials (user:password@host); put the key in $OPENAI_API_KEY"]
    assert TeacherConfig(model="m", base_url=url).provenance()["base_url_host"] == "127.0.0.1:9"
    assert TeacherConfig(model="m", base_url="http://127.0.0.1:x/v1").problems() == [
        "--base-url has a bad port: 'http://127.0.0.1:x/v1'"]
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"id": "a", "question": "1+1?", "task": "numeric"}\n')
    code, out, err = cli("generate", seeds, "-o", tmp_path / "o.jsonl", "--model", "m", "--base-url", url,
                         "--cache", tmp_path / "c.sqlite")
    assert code == 2 and err.count("\n") == 1 and "must not hold credentials" in err
    assert "SECRET" not in out + err and not (tmp_path / "o.jsonl").exists()


def test_an_unexpected_transport_exception_is_a_failed_attempt_not_a_traceback(tmp_path, monkeypatch):
    from kdpipe.teacher import transport

    async def broken_send(self, body):
        raise ValueError("something inside the client library")

    monkeypatch.setattr(transport.AiohttpTransport, "send", broken_send)
    with running([ScriptLine("q", ["The answer is 1."])]) as srv, ResponseCache(tmp_path / "c.sqlite") as cache:
        stats = Stats()
        (got,) = complete(config(srv.base_url, transport="aiohttp", retries=1, backoff=0.001), [ask(0)], cache, stats)
        assert len(cache) == 0
    assert got[0].error == "transport" and "unexpected ValueError: something inside" in got[0].detail
    assert stats.retries == 1


def test_the_declared_openai_bound_is_the_tested_release_and_provides_what_transport_uses():
    import tomllib
    from pathlib import Path

    import openai

    repo = Path(__file__).resolve().parent.parent
    deps = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
    (bound,) = [d.split("#")[0].split(">=")[1].strip() for d in deps if d.startswith("openai")]
    pins = dict(line.strip().split("==") for line in (repo / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    as_tuple = lambda v: tuple(int(x) for x in v.split(".")[:2])  # noqa: E731
    assert as_tuple(bound) == as_tuple(pins["openai"]) == as_tuple(openai.__version__)
    assert hasattr(openai, "DefaultAioHttpClient") and hasattr(openai, "DEFAULT_CONNECTION_LIMITS")


@pytest.mark.parametrize("transport", ["openai", "aiohttp", "asyncio"])
def test_a_refused_connection_is_reported_as_such_not_as_a_timeout(tmp_path, transport):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        (got,) = complete(config(url, transport=transport, retries=0, timeout=30), [ask(0)], cache)
    assert got[0].error == "transport" and got[0].detail.startswith("connection error:"), got[0].detail
    assert "no response within" not in got[0].detail


def test_answers_and_claims_of_one_turn_share_one_commit_and_none_is_left_uncommitted(tmp_path):
    import asyncio

    path = tmp_path / "c.sqlite"
    with ResponseCache(path) as cache:
        other = sqlite3.connect(path, timeout=0)  # another process's view
        count = lambda table: other.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: E731
        cache.claim(["a", "b"], 60)
        assert count("claims") == 2  # committed at once by default

        async def one_turn():
            cache.put("a", "m", {"text": "A"}, release=True, commit=False)
            cache.commit_soon()
            assert cache.claim(["c"], 60, commit=False) == set()
            cache.put("b", "m", {"text": "B"}, release=True, commit=False)
            cache.commit_soon()
            assert count("responses") == 0  # still one open transaction ...
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")  # ... that holds the write lock: no other run claims meanwhile
            await asyncio.sleep(0)  # the turn ends
            assert count("responses") == 2 and count("claims") == 1  # answers, released claims, the new claim

        asyncio.run(one_turn())
        cache.put("c", "m", {"text": "C"}, release=True, commit=False)
    assert count("responses") == 3 and count("claims") == 0  # closing commits what was left open
    assert ResponseCache(path).get_many(["a", "b", "c"])["c"]["text"] == "C"


def test_a_local_base_url_with_a_space_is_a_failed_request_not_a_traceback(cli, tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"id": "a", "question": "1+1?", "task": "numeric"}\n')
    code, _, err = cli("generate", seeds, "-o", tmp_path / "o.jsonl", "--model", "m", "--base-url",
                       "http://127.0.0.1:9/v 1", "--cache", tmp_path / "c.sqlite", "--retries", "0", "-q")
    assert code == 3 and "Traceback" not in err and "1 samples failed (transport): connection error" in err, err


def test_an_answer_that_can_be_neither_committed_nor_spilled_stops_the_run(tmp_path, monkeypatch):
    from kdpipe.errors import KdpipeError

    def no_spill(self, *args):
        raise KdpipeError("cannot store a response: disk full; nor in a spill file: disk full")

    with running(SCRIPT) as srv, ResponseCache(tmp_path / "c.sqlite") as cache:
        real = cache._db

        class CommitFails:  # the connection as a full disk leaves it: everything works but the commit
            def __getattr__(self, name):
                return getattr(real, name)

            def execute(self, sql, *args):
                if sql == "COMMIT":
                    raise sqlite3.OperationalError("database or disk is full")
                return real.execute(sql, *args)

        cache._db = CommitFails()
        monkeypatch.setattr(ResponseCache, "_spill_row", no_spill)
        with pytest.raises(KdpipeError, match="disk full"):
            complete(config(srv.base_url, concurrency=1), [ask(i) for i in range(10)], cache)
        cache._db = real
        assert srv.stats["requests"] <= 2  # stopped at the first answer it could not keep, not after all ten


def test_the_callers_error_comes_out_even_when_a_repeated_request_was_never_sent(tmp_path):
    def broken(r, samples):
        raise RuntimeError("a bug in the caller's parser")

    requests = [ask(i) for i in range(6)] + [ask(5)]  # the last asks again what the sixth asks
    with running(SCRIPT, latency=0.02) as srv, ResponseCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(RuntimeError, match="caller's parser"):
            complete(config(srv.base_url, concurrency=1), requests, cache, on_answered=broken)
        assert srv.stats["requests"] < 6  # it stopped sending at the error
