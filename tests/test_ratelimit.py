"""--adaptive against a loopback teacher with a rate limit switched on (8 in flight), over real HTTP."""

import time

from support_teacher import palm_script, svamp_seeds

from kdpipe.generate import GenerateOptions, run_generate
from kdpipe.loopback import running


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
