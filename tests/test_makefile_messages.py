"""What a Makefile user reads when something goes wrong or is left out: failure lines that name
their cause, progress that tells sent from cached, options that are refused rather than ignored,
and a loopback teacher that is never taken for the real model it was asked as."""

import os
import socket
import subprocess
import sys
from pathlib import Path

from kdpipe.loopback import ScriptLine, running
from kdpipe.teacher.cache import ResponseCache
from kdpipe.teacher.cache_files import remove_cache
from kdpipe.teacher.client import ChatRequest, Stats, TeacherConfig, complete
from kdpipe.teacher.progress import describe

REPO = Path(__file__).resolve().parent.parent
SCRIPT = [ScriptLine("What is 2 + 2?", ["2 + 2 = 4. The answer is 4."])]


def kdpipe(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("KDPIPE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "kdpipe", *args], capture_output=True, text=True, env=env, cwd=cwd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_failed_run_names_the_first_transport_error_and_how_many_share_it(tmp_path):
    (tmp_path / "q.jsonl").write_text("".join(
        f'{{"question": "What is {i} + 1?", "answer": "{i + 1}"}}\n' for i in range(3)))
    assert kdpipe("seed", "q.jsonl", "-o", "seeds.jsonl", "-q", cwd=tmp_path).returncode == 0
    run = kdpipe("generate", "seeds.jsonl", "-o", "out.jsonl", "--model", "m", "--samples", "2", "--retries", "0",
                 "--base-url", f"http://127.0.0.1:{free_port()}/v1", "--cache", "c.sqlite", "-q", cwd=tmp_path)
    assert run.returncode == 3
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith("generate: 6 samples failed (transport): connection error")
    assert "(6); the output is written" in line and "rerun the same command" in line


def test_progress_tells_sent_from_cached_and_kept_back():
    stats = Stats(total=66, done=66, cached=0, not_sent=53)
    text = describe(stats, None)
    assert text.startswith("66/66 samples: 13 sent, 0 cached, 53 not sent (--max-usd)")
    all_cached = describe(Stats(total=10, done=10, cached=10), None)
    assert all_cached.startswith("10/10 samples: 0 sent, 10 cached; -/s")


def test_debug_after_the_command_shows_the_traceback(tmp_path):
    after = kdpipe("seed", "missing.jsonl", "-o", "s.jsonl", "--debug", cwd=tmp_path)
    assert after.returncode != 0 and "Traceback" in after.stderr
    plain = kdpipe("seed", "missing.jsonl", "-o", "s.jsonl", cwd=tmp_path)
    assert "Traceback" not in plain.stderr and "missing.jsonl" in plain.stderr


def test_train_refuses_epochs_with_max_steps(tmp_path):
    (tmp_path / "sft.jsonl").write_text("")
    run = kdpipe("train", "sft.jsonl", "-o", "run", "--student", "x", "--epochs", "2", "--max-steps", "5",
                 cwd=tmp_path)
    assert run.returncode == 2 and "--epochs or --max-steps, not both" in run.stderr


def test_a_loopback_answer_is_keyed_apart_from_the_real_models(tmp_path):
    request = [ChatRequest([{"role": "user", "content": "What is 2 + 2?"}], n=2)]
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        with running(SCRIPT) as loopback:
            stats = Stats()
            complete(TeacherConfig(model="gpt-4o-mini", base_url=loopback.base_url), request, cache, stats)
            assert stats.cached == 0 and loopback.stats["requests"] == 1
        with running(SCRIPT, identify=False) as real:
            stats = Stats()
            got = complete(TeacherConfig(model="gpt-4o-mini", base_url=real.base_url), request, cache, stats)
            assert stats.cached == 0 and real.stats["requests"] == 1
            assert [c.text for c in got[0]] == ["2 + 2 = 4. The answer is 4."] * 2
        # A loopback with another script is another teacher too.
        with running([ScriptLine("What is 2 + 2?", ["5"])]) as other:
            stats = Stats()
            got = complete(TeacherConfig(model="gpt-4o-mini", base_url=other.base_url), request, cache, stats)
            assert stats.cached == 0 and [c.text for c in got[0]] == ["5", "5"]
        assert len(cache) == 6


def test_clear_cache_refuses_a_file_that_is_not_a_cache(tmp_path):
    other = tmp_path / "notes.sqlite"
    other.write_text("not a database")
    run = kdpipe("teacher", "clear-cache", str(other), cwd=tmp_path)
    assert run.returncode != 0 and "not a kdpipe response cache" in run.stderr and other.exists()
    assert remove_cache(tmp_path / "absent.sqlite") is None
