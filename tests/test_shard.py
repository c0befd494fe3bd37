"""`generate --shard I/N` and `kdpipe merge` against the loopback teacher over real HTTP."""

import json

import pytest
from support_teacher import palm_script, svamp_seeds

from kdpipe.generate import GenerateOptions, run_generate
from kdpipe.generate.shard import shard_of
from kdpipe.loopback import running
from kdpipe.records import meta_path


def labelled(url, seeds, out, cache, **kw):
    return run_generate(seeds, out, GenerateOptions(model="loopback", base_url=url, cache=cache, timeout=5, **kw))


def test_three_shards_merged_equal_the_unsharded_run(shared_data, tmp_path, cli):
    seeds = svamp_seeds(shared_data, tmp_path, limit=60)
    with running(palm_script(shared_data, seeds)) as srv:
        labelled(srv.base_url, seeds, tmp_path / "whole.jsonl", tmp_path / "whole.sqlite")
        requests = srv.stats["requests"]
        shards = []
        for i in (3, 1, 2):  # each machine with its own cache
            shards.append(tmp_path / f"part{i}.jsonl")
            labelled(srv.base_url, seeds, shards[-1], tmp_path / f"cache{i}.sqlite", shard=f"{i}/3")
        assert srv.stats["requests"] == 2 * requests  # each question asked once across the shards
    sizes = [len(p.read_text().splitlines()) for p in shards]
    assert sum(sizes) == 60 and all(sizes)
    code, _, err = cli("merge", *shards, "-o", tmp_path / "merged.jsonl")
    assert code == 0, err
    assert (tmp_path / "merged.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    meta = json.loads(meta_path(tmp_path / "merged.jsonl").read_text())
    assert meta["counts"]["records"] == 60 and meta["usage"]["requests"] == requests

    # A missing, a duplicated and a foreign shard are refused in one line, writing nothing.
    with running(palm_script(shared_data, seeds)) as srv:
        labelled(srv.base_url, seeds, tmp_path / "other.jsonl", tmp_path / "o.sqlite", shard="1/3", max_tokens=99)
    for given, says in ((shards[:2], "shard 2 of 3 missing"), ([*shards, shards[0]], "shard 3/3 given twice"),
                        ([tmp_path / "other.jsonl", *shards[:2]], "different run"),
                        ([tmp_path / "whole.jsonl"], "is not a shard")):
        code, _, err = cli("merge", *given, "-o", tmp_path / "bad.jsonl")
        assert code == 1 and says in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "bad.jsonl").exists()
    shards[0].write_bytes(shards[0].read_bytes() + b"\n")  # edited by hand
    code, _, err = cli("merge", *shards, "-o", tmp_path / "bad.jsonl")
    assert code == 1 and "was changed after generate wrote it" in err


def test_a_share_depends_on_the_id_only(tmp_path):
    ids = [f"q{i}" for i in range(3000)]
    counts = [sum(shard_of(i, 4) == k for i in ids) for k in (1, 2, 3, 4)]
    assert sum(counts) == 3000 and min(counts) > 650  # roughly even
    assert [shard_of(i, 4) for i in reversed(ids)] == [shard_of(i, 4) for i in ids][::-1]


@pytest.mark.parametrize("spec", ["0/3", "4/3", "3", "a/b", "1/0"])
def test_a_bad_shard_is_refused_before_anything_is_sent(cli, tmp_path, spec):
    seeds = tmp_path / "s.jsonl"
    seeds.write_text('{"id": "a", "question": "1+1?", "task": "numeric"}\n')
    code, _, err = cli("generate", seeds, "-o", tmp_path / "o.jsonl", "--model", "m",
                        "--base-url", "http://127.0.0.1:9", "--shard", spec)
    assert code == 2 and "--shard must be I/N" in err


def test_shard_is_for_label_mode(cli, tmp_path):
    seeds = tmp_path / "s.jsonl"
    seeds.write_text('{"id": "a", "question": "1+1?", "task": "numeric"}\n')
    code, _, err = cli("generate", seeds, "-o", tmp_path / "o.jsonl", "--model", "m", "--mode", "expand",
                       "--base-url", "http://127.0.0.1:9", "--shard", "1/2")
    assert code == 2 and "--shard is for label mode" in err
