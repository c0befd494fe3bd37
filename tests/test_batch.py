"""`kdpipe generate --batch` against the loopback teacher's real /v1/files and /v1/batches."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from kdpipe.generate import GenerateOptions, run_generate
from kdpipe.records import load_records, meta_path
from kdpipe.teacher import ChatRequest, ResponseCache, TeacherConfig
from kdpipe.teacher.batch import BatchOptions, complete_batch
from kdpipe.loopback import ScriptLine, running

N = 24
SCRIPT = [ScriptLine(f"What is {i} plus {i}?", [f"{i} + {i} = {2 * i}. The answer is {2 * i}.",
                                                 f"Twice {i} is {2 * i}. The answer is {2 * i}."])
          for i in range(N)]


def seeds_file(tmp_path, n=N):
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} plus {i}?", "task": "numeric"})
                            + "\n" for i in range(n)))
    return path


def opts(url, tmp_path, **kw):
    kw.setdefault("cache", tmp_path / "cache.sqlite")
    kw.setdefault("poll_interval", 0.02)
    kw.setdefault("batch", True)
    return GenerateOptions(model="loopback", base_url=url, price_in=2.0, price_out=8.0, **kw)


def rows(path):
    out = [json.loads(line) for line in open(path)]
    for row in out:
        for s in row.get("samples", []):
            s.pop("cached")
        row["provenance"]["teacher"].pop("base_url_host")  # another server, another port
    return out


def paid_once_each(srv, samples=1):
    """Every prompt the server answered was billed for exactly `samples` answers."""
    return srv.teacher.paid and set(srv.teacher.paid.values()) == {samples}


def test_batch_gives_the_online_answers_at_half_the_price(tmp_path):
    seeds = seeds_file(tmp_path)
    with running(SCRIPT) as srv:
        online = run_generate(seeds, tmp_path / "online.jsonl", opts(srv.base_url, tmp_path, batch=False,
                                                                     cache=tmp_path / "online.sqlite", samples=2))
    with running(SCRIPT) as srv:
        steps = []
        batch = run_generate(seeds, tmp_path / "batch.jsonl", opts(srv.base_url, tmp_path, samples=2),
                             on_batch_step=lambda job, message: steps.append(message))
        assert srv.stats["batches_created"] == 1 and srv.stats["files_uploaded"] == 1
        assert srv.stats["requests"] == 0  # nothing went through /v1/chat/completions
        assert paid_once_each(srv, samples=2) and len(srv.teacher.paid) == N
    assert rows(tmp_path / "online.jsonl") == rows(tmp_path / "batch.jsonl")
    assert batch.counts["ok"] == 2 * N
    assert (batch.stats.prompt_tokens, batch.stats.completion_tokens) == \
        (online.stats.prompt_tokens, online.stats.completion_tokens)
    assert batch.cost_usd == pytest.approx(online.cost_usd / 2)
    usage = json.loads(meta_path(tmp_path / "batch.jsonl").read_text())["usage"]
    assert usage["batch"] is True and usage["price"] == {"input": 1.0, "output": 4.0}
    assert any(m.startswith("created batch") for m in steps) and any("completed" in m for m in steps)
    # The input file names each record and sample, and asks for both samples in one line.
    (job_input,) = (tmp_path / "cache.sqlite.batches").glob("*.input.jsonl")
    first = json.loads(job_input.read_text().splitlines()[0])
    assert first["custom_id"] == "q0#0" and first["body"]["n"] == 2 and first["url"] == "/v1/chat/completions"


def test_expired_batch_and_failed_lines_are_resubmitted_alone(tmp_path):
    seeds = seeds_file(tmp_path)
    with running(SCRIPT, faults={"server_error": 0.25}, expire_batches=1, seed=3) as srv:
        steps = []
        r = run_generate(seeds, tmp_path / "out.jsonl", opts(srv.base_url, tmp_path),
                         on_batch_step=lambda job, message: steps.append(message))
        assert paid_once_each(srv)  # every question answered, none twice
    assert r.counts["ok"] == N
    written = [int(m.split()[1]) for m in steps if m.startswith("wrote")]
    outcomes = [m for m in steps if ": " in m and "answered" in m]
    assert outcomes[0].startswith("expired")
    # Each later batch holds exactly the lines that failed or expired in the one before.
    failed = [int(m.split(", ")[1].split()[0]) for m in outcomes]
    assert written[0] == N and written[1:] == failed[:-1] and failed[-1] == 0
    assert N // 2 <= written[1] < N


def test_a_line_that_keeps_failing_is_a_transport_error_with_the_batch_reason(tmp_path):
    seeds = seeds_file(tmp_path, 4)
    with running(SCRIPT, faults={"server_error": 1.0}) as srv:
        r = run_generate(seeds, tmp_path / "out.jsonl", opts(srv.base_url, tmp_path))
        assert srv.stats["batches_created"] == BatchOptions.submissions
    assert r.counts["transport"] == 4
    s = load_records(tmp_path / "out.jsonl")[0].samples[0]
    assert s.error == "transport" and "HTTP 500" in s.detail


def test_an_endpoint_that_refuses_n_gets_one_line_per_sample(tmp_path):
    with running(SCRIPT, reject_n=True) as srv:
        r = run_generate(seeds_file(tmp_path, 6), tmp_path / "out.jsonl", opts(srv.base_url, tmp_path, samples=3))
        assert srv.stats["batches_created"] == 2 and paid_once_each(srv, samples=3)
    assert r.counts["ok"] == 18


def test_online_and_batch_runs_share_answers(tmp_path):
    with running(SCRIPT) as srv:
        run_generate(seeds_file(tmp_path, N // 2), tmp_path / "half.jsonl", opts(srv.base_url, tmp_path, batch=False))
        r = run_generate(seeds_file(tmp_path), tmp_path / "all.jsonl", opts(srv.base_url, tmp_path))
        assert paid_once_each(srv)
        again = run_generate(seeds_file(tmp_path), tmp_path / "again.jsonl", opts(srv.base_url, tmp_path, batch=False))
        assert srv.stats["requests"] == N // 2 and srv.stats["batch_answered"] == N - N // 2
    assert r.counts["cached"] == N // 2 and again.counts["cached"] == N
    assert rows(tmp_path / "all.jsonl") == rows(tmp_path / "again.jsonl")


class Stop(BaseException):
    pass


def stop_at(predicate):
    def on_step(job, message):
        if predicate(message):
            raise Stop(message)
    return on_step


STEPS = {
    "written": lambda m: m.startswith("wrote"),
    "uploaded": lambda m: m.startswith("uploaded"),
    "created": lambda m: m.startswith("created"),
    "polling": lambda m: m.startswith("in_progress"),
    "downloaded": lambda m: "answered" in m and ": " in m,
    "joined": lambda m: m.startswith("stored"),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_stopped_at_each_step_a_rerun_completes_paying_nothing_twice(tmp_path, step):
    requests = [ChatRequest([{"role": "user", "content": f"Q: What is {i} plus {i}?\nA:"}], id=f"q{i}")
                for i in range(N)]
    config = TeacherConfig(model="loopback", timeout=5)
    options = BatchOptions(poll_interval=0.02)
    with running(SCRIPT, batch_latency=0.02, faults={"server_error": 0.2}, expire_batches=1, seed=5) as srv:
        config.base_url = srv.base_url
        with ResponseCache(tmp_path / "c.sqlite") as cache:
            with pytest.raises(Stop):
                complete_batch(config, requests, cache, options=options, on_step=stop_at(STEPS[step]))
        uploads, created = srv.stats["files_uploaded"], srv.stats["batches_created"]
        with ResponseCache(tmp_path / "c.sqlite") as cache:
            resumed = []
            results = complete_batch(config, requests, cache, options=options,
                                     on_step=lambda job, m: resumed.append(m))
        assert resumed[0] == f"resuming from step {step if step != 'polling' else 'created'}" or step == "joined"
        assert paid_once_each(srv)
        # The first job was neither uploaded nor created again: only resubmissions are new.
        resubmissions = sum(m.startswith("wrote") for m in resumed)
        assert srv.stats["files_uploaded"] == max(uploads, 1) + resubmissions
        assert srv.stats["batches_created"] == max(created, 1) + resubmissions
    assert [[c.text for c in r] for r in results] == [[SCRIPT[i].completions[0]] for i in range(N)]


def stop_and_forget(config, requests, cache_path, lost: str) -> None:
    """Stop a batch run right after the server made its file (or batch), then drop that step's
    record, as a kill between the server's answer and the record would."""
    with ResponseCache(cache_path) as cache:
        with pytest.raises(Stop):
            complete_batch(config, requests, cache, options=BatchOptions(poll_interval=0.02),
                           on_step=stop_at(STEPS["created" if lost == "create" else "uploaded"]))
    db = sqlite3.connect(cache_path)
    if lost == "create":
        db.execute("UPDATE batch_jobs SET state = 'uploaded', batch_id = NULL")
    else:
        db.execute("UPDATE batch_jobs SET state = 'written', file_id = NULL")
    db.commit()
    db.close()


@pytest.mark.parametrize("lost", ["upload", "create"])
def test_a_file_or_batch_made_but_not_recorded_is_found_not_made_again(tmp_path, lost):
    """A kill between the server's answer and the record: the rerun finds the file by its
    name and the batch by its metadata."""
    requests = [ChatRequest([{"role": "user", "content": f"What is {i} plus {i}?"}]) for i in range(N)]
    with running(SCRIPT) as srv:
        config = TeacherConfig(model="loopback", base_url=srv.base_url)
        stop_and_forget(config, requests, tmp_path / "c.sqlite", lost)
        with ResponseCache(tmp_path / "c.sqlite") as cache:
            results = complete_batch(config, requests, cache, options=BatchOptions(poll_interval=0.02))
        assert srv.stats["files_uploaded"] == 1 and srv.stats["batches_created"] == 1
        assert paid_once_each(srv)
    assert all(r[0].text for r in results)


def test_kill_9_while_polling_then_rerun(tmp_path):
    seeds = seeds_file(tmp_path)
    cache = tmp_path / "cache.sqlite"
    with running(SCRIPT, batch_latency=0.1) as srv:
        cmd = [sys.executable, "-m", "kdpipe", "generate", str(seeds), "-o", str(tmp_path / "out.jsonl"),
               "--model", "loopback", "--base-url", srv.base_url, "--cache", str(cache), "--batch",
               "--poll-interval", "0.05", "--price-in", "2", "--price-out", "8"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not srv.stats["batch_polls"]:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert srv.stats["batch_answered"] < N  # killed while the batch was still running
        assert sqlite3.connect(cache).execute("SELECT state FROM batch_jobs").fetchall() == [("created",)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "resuming from step created" in done.stderr
        assert srv.stats["batches_created"] == 1 and paid_once_each(srv)
    assert len(load_records(tmp_path / "out.jsonl")) == N
    usage = json.loads(meta_path(tmp_path / "out.jsonl").read_text())["usage"]
    assert usage["prompt_tokens"] > 0 and usage["batch"] is True


def test_deleted_batch_files_are_fetched_or_written_again_not_paid_again(tmp_path):
    requests = [ChatRequest([{"role": "user", "content": f"What is {i} plus {i}?"}]) for i in range(N)]
    work = tmp_path / "c.sqlite.batches"
    with running(SCRIPT) as srv:
        config = TeacherConfig(model="loopback", base_url=srv.base_url)
        for step, gone in (("downloaded", "*.output.jsonl"), ("written", "*.input.jsonl")):
            with ResponseCache(tmp_path / "c.sqlite") as cache:
                with pytest.raises(Stop):
                    complete_batch(config, requests, cache, options=BatchOptions(poll_interval=0.02),
                                   on_step=stop_at(STEPS[step]))
            for path in work.glob(gone):
                path.unlink()
            with ResponseCache(tmp_path / "c.sqlite") as cache:
                results = complete_batch(config, requests, cache, options=BatchOptions(poll_interval=0.02))
            assert all(r[0].text for r in results) and paid_once_each(srv)
            requests = [ChatRequest([{"role": "user", "content": f"What is {i} plus {i}? "}]) for i in range(N)]
        assert srv.stats["batches_created"] == 2


def test_a_job_another_run_left_unsent_is_dropped(tmp_path):
    ask = [ChatRequest([{"role": "user", "content": f"What is {i} plus {i}?"}]) for i in range(N)]
    with running(SCRIPT) as srv:
        config = TeacherConfig(model="loopback", base_url=srv.base_url)
        with ResponseCache(tmp_path / "c.sqlite") as cache:
            with pytest.raises(Stop):
                complete_batch(config, ask, cache, on_step=stop_at(STEPS["written"]))
        (tmp_path / "c.sqlite.batches").joinpath(
            sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT job FROM batch_jobs").fetchone()[0]
            + ".input.jsonl").unlink()
        steps = []
        with ResponseCache(tmp_path / "c.sqlite") as cache:  # half the questions: it cannot render the rest
            results = complete_batch(config, ask[: N // 2], cache, options=BatchOptions(poll_interval=0.02),
                                     on_step=lambda job, m: steps.append(m))
        assert steps[0].startswith("dropped") and srv.stats["batches_created"] == 1
    assert all(r[0].text for r in results)


@pytest.mark.parametrize("lost", ["upload", "create"])
def test_a_lost_file_or_batch_is_found_past_the_first_page_of_the_listing(tmp_path, lost):
    import openai

    from kdpipe.loopback.batch import PAGE_SIZE

    requests = [ChatRequest([{"role": "user", "content": f"What is {i} plus {i}?"}]) for i in range(N)]
    with running(SCRIPT) as srv:
        config = TeacherConfig(model="loopback", base_url=srv.base_url)
        stop_and_forget(config, requests, tmp_path / "c.sqlite", lost)
        # Newer files and batches of other work push ours off the first page of the listings.
        client = openai.OpenAI(base_url=srv.base_url, api_key="unused")
        for k in range(PAGE_SIZE + 5):
            f = client.files.create(file=(f"other-{k}.jsonl", b"{}\n"), purpose="batch")
            client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        made = srv.stats["files_uploaded"], srv.stats["batches_created"]
        with ResponseCache(tmp_path / "c.sqlite") as cache:
            results = complete_batch(config, requests, cache, options=BatchOptions(poll_interval=0.02))
        # Found, not made again (stopped after the upload, the batch itself was still to create).
        assert srv.stats["files_uploaded"] == made[0]
        assert srv.stats["batches_created"] == made[1] + (lost == "upload")
    assert all(r[0].text for r in results)


def test_a_corrupt_downloaded_file_is_one_error_naming_it(tmp_path):
    from kdpipe.errors import KdpipeError

    requests = [ChatRequest([{"role": "user", "content": f"What is {i} plus {i}?"}]) for i in range(N)]
    work = tmp_path / "c.sqlite.batches"
    with running(SCRIPT) as srv:
        config = TeacherConfig(model="loopback", base_url=srv.base_url)
        with ResponseCache(tmp_path / "c.sqlite") as cache:
            with pytest.raises(Stop):
                complete_batch(config, requests, cache, options=BatchOptions(poll_interval=0.02),
                               on_step=stop_at(STEPS["downloaded"]))
        (output,) = work.glob("*.output.jsonl")
        output.write_text(output.read_text()[:-40] + "\n")  # cut short: the last line is broken
        with ResponseCache(tmp_path / "c.sqlite") as cache:
            with pytest.raises(KdpipeError, match=rf"{output.name}:{N}: the downloaded Batch API output file "
                                                  "is corrupt .*delete it and rerun"):
                complete_batch(config, requests, cache, options=BatchOptions(poll_interval=0.02))
        output.unlink()
        with ResponseCache(tmp_path / "c.sqlite") as cache:
            results = complete_batch(config, requests, cache, options=BatchOptions(poll_interval=0.02))
        assert all(r[0].text for r in results) and paid_once_each(srv)
