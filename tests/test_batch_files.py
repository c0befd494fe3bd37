"""--export-batch / --import-batch: OpenAI batch JSONL out, an engine's output file in, over real HTTP."""

import json
import urllib.request

from support_teacher import palm_script, svamp_seeds

from kdpipe.generate import GenerateOptions, run_generate
from kdpipe.loopback import running
from kdpipe.records import load_records, meta_path


def run_batch_file(base_url, src, dst):
    """What `vllm run-batch` does with an input file: each line's body to the endpoint, one output line each."""
    with open(src) as fp, open(dst, "w") as out:
        for n, line in enumerate(fp):
            row = json.loads(line)
            assert row["method"] == "POST" and row["url"] == "/v1/chat/completions"
            request = urllib.request.Request(base_url.rstrip("/") + "/chat/completions",
                                             json.dumps(row["body"]).encode(), {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                body = json.loads(response.read())
            out.write(json.dumps({"id": f"vllm-{n}", "custom_id": row["custom_id"], "error": None,
                                  "response": {"status_code": 200, "request_id": f"r{n}", "body": body}}) + "\n")


def test_export_then_an_engines_output_then_import_sends_nothing(shared_data, tmp_path, cli):
    seeds = svamp_seeds(shared_data, tmp_path, limit=30)
    with running(palm_script(shared_data, seeds)) as srv:
        base = ["generate", seeds, "--model", "loopback", "--base-url", srv.base_url, "--samples", "2",
                "--seed", "3"]
        code, _, err = cli(*base, "-o", tmp_path / "unused.jsonl", "--cache", tmp_path / "c.sqlite",
                           "--export-batch", tmp_path / "in.jsonl")
        assert code == 0 and "wrote 30 requests (60 samples" in err, err
        assert srv.stats["requests"] == 0 and not (tmp_path / "unused.jsonl").exists()
        rows = [json.loads(line) for line in open(tmp_path / "in.jsonl")]
        assert all(r["body"]["n"] == 2 and r["body"]["seed"] == 3 for r in rows)

        run_batch_file(srv.base_url, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
        asked = srv.stats["requests"]
        code, _, err = cli(*base, "-o", tmp_path / "labeled.jsonl", "--cache", tmp_path / "c.sqlite",
                           "--import-batch", tmp_path / "out.jsonl")
        assert code == 0, err
        assert srv.stats["requests"] == asked  # every answer came from the file
        # The same answers as the online run (which asks the server itself).
        run_generate(seeds, tmp_path / "online.jsonl", GenerateOptions(
            model="loopback", base_url=srv.base_url, samples=2, seed=3, cache=tmp_path / "online.sqlite"))
        # Exporting again: nothing left to ask.
        code, _, err = cli(*base, "-o", tmp_path / "unused.jsonl", "--cache", tmp_path / "c.sqlite",
                           "--export-batch", tmp_path / "again.jsonl")
        assert "wrote 0 requests" in err and (tmp_path / "again.jsonl").read_text() == ""
    imported = load_records(tmp_path / "labeled.jsonl")
    online = load_records(tmp_path / "online.jsonl")
    assert [[(s.text, s.answer) for s in r.samples] for r in imported] == \
           [[(s.text, s.answer) for s in r.samples] for r in online]
    assert sum(s.ok for r in imported for s in r.samples) >= 50
    meta = json.loads(meta_path(tmp_path / "labeled.jsonl").read_text())
    assert meta["imported_batch"]["answers"] == 60 and meta["usage"]["requests"] == 0


def test_an_output_file_of_another_run_is_one_line(shared_data, tmp_path, cli):
    seeds = svamp_seeds(shared_data, tmp_path, limit=5)
    (tmp_path / "other.jsonl").write_text(json.dumps({"custom_id": "x", "response": {"status_code": 200,
                                                                                         "body": {}}}) + "\n")
    (tmp_path / "bad.jsonl").write_text("not json\n")
    with running(palm_script(shared_data, seeds)) as srv:
        for name, says in (("other.jsonl", "none of its 1 lines answers"), ("bad.jsonl", "bad.jsonl:1: not a batch")):
            code, _, err = cli("generate", seeds, "-o", tmp_path / "o.jsonl", "--model", "loopback",
                               "--base-url", srv.base_url, "--cache", tmp_path / "c.sqlite",
                               "--import-batch", tmp_path / name)
            assert code == 1 and says in err and len(err.strip().splitlines()) == 1, err
        assert srv.stats["requests"] == 0 and not (tmp_path / "o.jsonl").exists()
