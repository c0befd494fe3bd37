"""Several --base-url replicas of one teacher, over real HTTP to loopback servers, one of which dies."""

import json
import threading
import time

from support_teacher import palm_script, svamp_seeds

from kdpipe.generate import GenerateOptions, run_generate
from kdpipe.loopback import running
from kdpipe.records import load_records, meta_path
from kdpipe.teacher.identity import endpoint_host


def test_three_replicas_one_dies_mid_run(shared_data, tmp_path, cli):
    seeds = svamp_seeds(shared_data, tmp_path, limit=150)
    script = palm_script(shared_data, seeds)
    with running(script, latency=0.02) as a, running(script, latency=0.02) as b, \
            running(script, latency=0.02) as c:
        def kill_b():
            while b.stats["answered"] < 15:
                time.sleep(0.005)
            b.stop()

        killer = threading.Thread(target=kill_b)
        killer.start()
        code, _, err = cli("generate", seeds, "-o", tmp_path / "out.jsonl", "--model", "loopback",
                           "--cache", tmp_path / "c.sqlite", "--concurrency", "12", "--timeout", "5",
                           "--base-url", a.base_url, "--base-url", b.base_url, "--base-url", c.base_url)
        killer.join(10)
        assert code == 0, err
        records = load_records(tmp_path / "out.jsonl")
        assert len(records) == 150 and all(r.samples[0].error != "transport" for r in records)
        meta = json.loads(meta_path(tmp_path / "out.jsonl").read_text())
        counts = meta["usage"]["replicas"]
        ha, hb, hc = (endpoint_host(s.base_url) for s in (a, b, c))
        assert set(counts) == {ha, hb, hc}
        # Every request sent is counted under one replica; every answer was received once.
        assert sum(x["requests"] for x in counts.values()) == meta["usage"]["requests"]
        assert sum(x["ok"] for x in counts.values()) == 150
        assert counts[ha]["ok"] == a.stats["answered"] and counts[hc]["ok"] == c.stats["answered"]
        assert 15 <= counts[hb]["ok"] <= b.stats["answered"] < 150 // 3
        assert counts[hb]["failed"] >= 3 and counts[hb]["set_aside"] >= 1
        assert counts[ha]["ok"] > 40 and counts[hc]["ok"] > 40  # the others took the dead one's share
        assert meta["params"]["base_url"] == [ha, hb, hc]
        # Nothing is paid twice: a rerun on one replica is answered by the cache whole.
        asked = a.stats["requests"]
        run_generate(seeds, tmp_path / "again.jsonl", GenerateOptions(model="loopback", base_url=[a.base_url],
                                                                      cache=tmp_path / "c.sqlite"))
        assert a.stats["requests"] == asked
    assert all(r.samples[0].cached for r in load_records(tmp_path / "again.jsonl"))
