"""`kdpipe teacher merge-cache`: shard machines' caches joined into one that answers an unsharded run whole."""

import json
import sqlite3

from support_teacher import palm_script, svamp_seeds

from kdpipe.generate import GenerateOptions, run_generate
from kdpipe.loopback import running
from kdpipe.teacher.cache import ResponseCache


def labelled(url, seeds, out, cache, **kw):
    return run_generate(seeds, out, GenerateOptions(model="loopback", base_url=url, cache=cache, timeout=5, **kw))


def test_two_shard_caches_merged_answer_the_unsharded_run_without_a_request(shared_data, tmp_path, cli):
    seeds = svamp_seeds(shared_data, tmp_path, limit=40)
    with running(palm_script(shared_data, seeds)) as srv:
        for i in (1, 2):  # two machines, each with its own cache
            labelled(srv.base_url, seeds, tmp_path / f"part{i}.jsonl", tmp_path / f"c{i}.sqlite", shard=f"{i}/2")
        sent = srv.stats["requests"]
        assert sent == 40
        code, _, err = cli("teacher", "merge-cache", tmp_path / "c1.sqlite", tmp_path / "c2.sqlite",
                           "-o", tmp_path / "merged.sqlite")
        assert code == 0 and "2 caches, 40 answers" in err and "differently" not in err, err
        r = labelled(srv.base_url, seeds, tmp_path / "whole.jsonl", tmp_path / "merged.sqlite")
        assert srv.stats["requests"] == sent  # not one request more
        assert r.stats.cached == 40
    # Each shard's cache alone answers only its share: the merge is what made the difference.
    with ResponseCache(tmp_path / "c1.sqlite", write=False) as c1, ResponseCache(tmp_path / "merged.sqlite") as m:
        assert 0 < len(c1) < 40 and len(m) == 40
    assert not list(tmp_path.glob("merged.sqlite.merging-*"))


def _cache_with(path, rows):
    with ResponseCache(path) as cache:
        for key, text in rows:
            cache.put(key, "m", {"text": text, "finish_reason": "stop", "usage": {}})


def test_a_conflict_keeps_the_first_caches_answer_and_is_reported(tmp_path, cli):
    _cache_with(tmp_path / "a.sqlite", [("k1", "A's answer"), ("k2", "same")])
    _cache_with(tmp_path / "b.sqlite", [("k1", "B's answer"), ("k2", "same"), ("k3", "only in B")])
    for order, winner in (("ab", "A's answer"), ("ba", "B's answer")):
        out = tmp_path / f"{order}.sqlite"
        code, _, said = cli("teacher", "merge-cache", *(tmp_path / f"{c}.sqlite" for c in order), "-o", out)
        assert code == 0 and "1 keys answered differently" in said and "k1" in said and "1 held by more" in said
        code, _, err = cli("teacher", "merge-cache", *(tmp_path / f"{c}.sqlite" for c in order), "-o",
                           tmp_path / f"{order}-quiet.sqlite", "-q")
        assert code == 0 and err.strip() == "merge-cache: 1 requests had different answers in different caches; " \
                                            "the first cache's kept"
        with ResponseCache(out, write=False) as merged:
            got = merged.get_many(["k1", "k2", "k3"])
        assert {k: v["text"] for k, v in got.items()} == {"k1": winner, "k2": "same", "k3": "only in B"}


def test_merging_into_one_of_the_caches_and_refusals_write_nothing(tmp_path, cli):
    _cache_with(tmp_path / "a.sqlite", [("k1", "one")])
    _cache_with(tmp_path / "b.sqlite", [("k2", "two")])
    code, _, err = cli("teacher", "merge-cache", tmp_path / "a.sqlite", tmp_path / "b.sqlite",
                       "-o", tmp_path / "a.sqlite")
    assert code == 0, err
    with ResponseCache(tmp_path / "a.sqlite", write=False) as a:
        assert len(a) == 2
    before = (tmp_path / "b.sqlite").read_bytes()
    (tmp_path / "notes.txt").write_text("not a cache\n")
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    for given, says in (([tmp_path / "notes.txt"], "not a readable kdpipe response cache"),
                        ([tmp_path / "other.db"], "not a readable kdpipe response cache"),
                        ([tmp_path / "missing.sqlite"], "no such cache"),
                        ([tmp_path / "a.sqlite", tmp_path / "a.sqlite"], "given twice")):
        code, _, err = cli("teacher", "merge-cache", *given, "-o", tmp_path / "new.sqlite")
        assert code == 1 and says in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "new.sqlite").exists() and not list(tmp_path.glob("new.sqlite*"))
    code, _, err = cli("teacher", "merge-cache", tmp_path / "a.sqlite", "-o", tmp_path / "b.sqlite")
    assert code == 1 and "b.sqlite exists" in err
    assert (tmp_path / "b.sqlite").read_bytes() == before
    # A failure half way (the second cache is no cache) leaves the cache merged into as it was.
    code, _, err = cli("teacher", "merge-cache", tmp_path / "b.sqlite", tmp_path / "notes.txt",
                       "-o", tmp_path / "b.sqlite")
    assert code == 1 and "notes.txt" in err
    assert (tmp_path / "b.sqlite").read_bytes() == before and not list(tmp_path.glob("*.merging-*"))


def test_answers_a_killed_run_left_in_a_spill_file_are_merged_too(tmp_path, cli):
    _cache_with(tmp_path / "a.sqlite", [("k1", "one")])
    row = {"key": "k2", "model": "m", "created": 1.0, "response": json.dumps({"text": "spilled", "usage": {}})}
    (tmp_path / "a.sqlite.pending-99999-abc.jsonl").write_text(json.dumps(row) + "\n" + '{"key": "cut')
    code, _, err = cli("teacher", "merge-cache", tmp_path / "a.sqlite", "-o", tmp_path / "m.sqlite")
    assert code == 0, err
    with ResponseCache(tmp_path / "m.sqlite", write=False) as m:
        assert m.get_many(["k2"])["k2"]["text"] == "spilled" and len(m) == 2
