"""--adaptive against a loopback teacher with a rate limit switched on, over real HTTP: a limit of 8 in
flight (no headers), and a provider's limit per time window announced in x-ratelimit-* headers."""

import asyncio
import dataclasses
import time

import pytest

from support_teacher import palm_script, svamp_seeds

from kdpipe.generate import GenerateOptions, run_generate
from kdpipe.loopback import running
from kdpipe.loopback.limits import RateWindow
from kdpipe.teacher.client import TeacherConfig
from kdpipe.teacher.ratelimit import duration_s
from kdpipe.teacher.sender import make_transport
from kdpipe.teacher.transport import Retryable


def test_adaptive_concurrency_meets_far_fewer_429s(shared_data, tmp_path):
    seeds = svamp_seeds(shared_data, tmp_path, limit=200)
    seen = {}
    for adaptive in (False, True):
        with running(palm_script(shared_data, seeds), latency=0.05, retry_after=0.05, limit_in_flight=8) as srv:
            started = time.monotonic()
            r = run_generate(seeds, tmp_path / f"{adaptive}.jsonl", GenerateOptions(
                model="loopback", base_url=srv.base_url, cache=tmp_path / f"{adaptive}.sqlite", concurrency=64,
                adaptive=adaptive, retries=10))
            seen[adaptive] = (srv.stats["limited"], time.monotonic() - started, r)
            assert srv.stats["answered"] == 200 and not r.counts.get("transport")
    (fixed_429, fixed_s, _), (adaptive_429, adaptive_s, r) = seen[False], seen[True]
    assert adaptive_429 < fixed_429 / 2, seen
    assert adaptive_s < fixed_s * 1.5, seen
    assert r.stats.limits["throttled"] == adaptive_429 and r.stats.limits["min_window"] <= 8


def test_rpm_spaces_request_starts(shared_data, tmp_path):
    seeds = svamp_seeds(shared_data, tmp_path, limit=10)
    with running(palm_script(shared_data, seeds)) as srv:
        started = time.monotonic()
        run_generate(seeds, tmp_path / "o.jsonl", GenerateOptions(model="loopback", base_url=srv.base_url,
                                                                 cache=tmp_path / "c.sqlite", rpm=600))
        assert time.monotonic() - started >= 0.85  # 10 starts 0.1 s apart
        assert srv.stats["answered"] == 10


def test_an_adaptive_run_reading_the_limit_headers_meets_almost_no_429s(shared_data, tmp_path):
    """A provider's limit of 40 requests per 0.5 s window, announced in x-ratelimit-* headers or not:
    the same --adaptive run, once without the headers to read and once with them."""
    seeds = svamp_seeds(shared_data, tmp_path, limit=200)
    seen = {}
    for headers in (False, True):
        with running(palm_script(shared_data, seeds), latency=0.05,
                     rate_limit=RateWindow((40, 0.5), None, headers)) as srv:
            started = time.monotonic()
            r = run_generate(seeds, tmp_path / f"{headers}.jsonl", GenerateOptions(
                model="loopback", base_url=srv.base_url, cache=tmp_path / f"{headers}.sqlite", concurrency=64,
                adaptive=True, retries=10))
            seen[headers] = (srv.stats["limited"], time.monotonic() - started, r.stats.limits)
            assert srv.stats["answered"] == 200 and not r.counts.get("transport")
    (blind_429, blind_s, _), (read_429, read_s, limits) = seen[False], seen[True]
    assert blind_429 >= 10 and read_429 <= blind_429 / 5, seen
    assert read_s < blind_s * 1.5, seen
    assert limits["held"] > 0 and limits["throttled"] == read_429


@pytest.mark.parametrize("transport", ["openai", "aiohttp", "asyncio"])
def test_both_transports_hand_the_limit_headers_over_on_answers_and_429s(transport):
    config = TeacherConfig(model="m", concurrency=4, transport=transport, timeout=10)
    body = {"model": "m", "messages": [{"role": "user", "content": "2 + 2?"}], "max_tokens": 8}

    async def two_sends(url):
        sender = make_transport(dataclasses.replace(config, base_url=url))
        try:
            first, second = {}, {}
            await sender.send(body, first)
            with pytest.raises(Retryable) as refused:
                await sender.send(body, second)
            return first, second, refused.value
        finally:
            await sender.close()

    with running([], rate_limit=RateWindow((1, 30.0), (1000, 30.0))) as srv:
        first, second, refused = asyncio.run(two_sends(srv.base_url))
    assert first["x-ratelimit-remaining-requests"] == "0" and first["x-ratelimit-limit-requests"] == "1"
    assert int(first["x-ratelimit-remaining-tokens"]) < 1000
    assert 0 < duration_s(first["x-ratelimit-reset-requests"]) <= 30
    assert 0 < float(second["retry-after"]) <= 30 and refused.retry_after == float(second["retry-after"])
    assert str(refused).startswith("HTTP 429")


def test_reset_headers_are_read_in_the_forms_providers_send():
    assert [duration_s(v) for v in ("1s", "6m0s", "20ms", "1m30.5s", "0.25", " 2 ")] == [1, 360, 0.02, 90.5, 0.25, 2]
    assert [duration_s(v) for v in (None, "", "soon", "1x", "Wed, 21 Oct 2015 07:28:00 GMT")] == [None] * 5


def test_serve_refuses_a_bad_limit_in_one_line(cli):
    code, _, err = cli("teacher", "serve", "--rate-limit", "0/1", "--token-limit", "many")
    assert code == 2 and "--rate-limit must be N/SECONDS" in err and "--token-limit must be N/SECONDS" in err
    assert "Traceback" not in err
