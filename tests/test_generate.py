"""`kdpipe generate` end to end against the loopback teacher over real HTTP."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from kdpipe.generate import GenerateOptions, parse_question_list, run_generate, to_sample
from kdpipe.label_prompts import PROMPTS_DIR
from kdpipe.records import SAMPLE_ERRORS, Record, load_records, meta_path
from kdpipe.teacher.client import Completion
from kdpipe.loopback import ScriptLine, running
from support_teacher import palm_script, svamp_seeds

ALL_FAULTS = {"rate_limit": 0.05, "server_error": 0.05, "malformed": 0.05, "hang": 0.02,
              "truncated": 0.05, "empty": 0.05}


def opts(url, tmp_path, **kw):
    kw.setdefault("cache", tmp_path / "cache.sqlite")
    kw.setdefault("timeout", 0.5)
    return GenerateOptions(model="loopback", base_url=url, **kw)


def without_cached_flags(path):
    rows = [json.loads(line) for line in open(path)]
    for row in rows:
        for s in row.get("samples", []):
            s.pop("cached")
    return rows


def test_label_800_svamp_questions_through_every_fault(shared_data, tmp_path):
    seeds = svamp_seeds(shared_data, tmp_path)
    with running(palm_script(shared_data, seeds), faults=ALL_FAULTS, retry_after=0.01) as srv:
        first = run_generate(seeds, tmp_path / "out.jsonl", opts(srv.base_url, tmp_path, concurrency=32))
        sent = srv.stats["requests"]
        assert srv.stats["hang"] and srv.stats["malformed"] and srv.stats["rate_limit"]
        # Same command with another concurrency and another output path: nothing is sent again.
        again = run_generate(seeds, tmp_path / "again.jsonl", opts(srv.base_url, tmp_path, concurrency=7))
        assert srv.stats["requests"] == sent
    out = load_records(tmp_path / "out.jsonl")
    assert [r.id for r in out] == [r.id for r in load_records(seeds)]  # input order
    for r in out:
        (s,) = r.samples
        assert s.ok or (s.error in SAMPLE_ERRORS and s.detail), r.id
        assert r.provenance["teacher"]["prompt"] == "numeric.txt"
        assert r.provenance["teacher"]["prompt_digest"].startswith("sha256:")
    c = first.counts
    assert c["records"] == 800 and c["ok"] + sum(c[e] for e in SAMPLE_ERRORS) == 800
    assert c["empty"] == srv.stats["empty"] and c["ok"] > 650
    assert first.exit_code == (3 if c["transport"] else 0) and again.exit_code == first.exit_code
    assert again.counts["cached"] == 800
    assert without_cached_flags(tmp_path / "out.jsonl") == without_cached_flags(tmp_path / "again.jsonl")
    meta = json.loads(meta_path(tmp_path / "out.jsonl").read_text())
    assert meta["usage"]["prompt_tokens"] > 0 and meta["usage"]["retries"] > 0
    assert meta["counts"] == c


def test_kill_9_then_rerun_gives_the_uninterrupted_output(shared_data, tmp_path):
    seeds = svamp_seeds(shared_data, tmp_path, limit=300)
    script = palm_script(shared_data, seeds)
    out = tmp_path / "out.jsonl"
    out.write_text("previous output\n")
    cache = tmp_path / "cache.sqlite"
    with running(script, latency=0.02) as srv:
        def command(output, cache_file):
            return [sys.executable, "-m", "kdpipe", "generate", str(seeds), "-o", str(output), "--mode", "label",
                    "--model", "loopback", "--base-url", srv.base_url, "--cache", str(cache_file),
                    "--concurrency", "4", "--quiet"]

        cmd = command(out, cache)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if cache.exists():
                try:
                    if sqlite3.connect(cache).execute("SELECT COUNT(*) FROM responses").fetchone()[0] >= 100:
                        break
                except sqlite3.OperationalError:
                    pass
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert out.read_text() == "previous output\n"  # nothing half-written
        kept = sqlite3.connect(cache).execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        assert 100 <= kept < 300
        before = srv.stats["requests"]
        subprocess.run(cmd, check=True, timeout=120)
        assert srv.stats["requests"] - before == 300 - kept  # only what never completed
        whole = tmp_path / "whole.jsonl"
        subprocess.run(command(whole, tmp_path / "fresh.sqlite"), check=True, timeout=120)
    assert without_cached_flags(out) == without_cached_flags(whole)


def test_samples_and_sampling_provenance(shared_data, tmp_path):
    seeds = svamp_seeds(shared_data, tmp_path, limit=20)
    with running(palm_script(shared_data, seeds), max_n=1) as srv:
        run_generate(seeds, tmp_path / "out.jsonl", opts(srv.base_url, tmp_path, samples=3, seed=7))
        assert srv.stats["requests"] == 60  # the server ignored n: one request per sample
    for r in load_records(tmp_path / "out.jsonl"):
        assert [s.index for s in r.samples] == [0, 1, 2]
        t = r.provenance["teacher"]
        assert (t["samples"], t["temperature"], t["seed"], t["model"]) == (3, 0.7, 7, "loopback")
        assert t["base_url_host"].startswith("127.0.0.1:")


def test_expand_then_label_the_new_questions(shared_data, tmp_path):
    seeds = svamp_seeds(shared_data, tmp_path, limit=60)
    test_rows = [json.loads(line) for line in open(shared_data / "dss/svamp/svamp_test.json")]
    palm_test = json.load(open(shared_data / "dss/svamp/llm/test_CoT_0.json"))
    script = palm_script(shared_data, seeds) + [
        ScriptLine(row["input"], [text], expand=True) for row, text in zip(test_rows, palm_test)]
    with running(script) as srv:
        o = opts(srv.base_url, tmp_path, mode="expand", num_new=30, seed=1)
        r = run_generate(seeds, tmp_path / "new.jsonl", o)
        run_generate(seeds, tmp_path / "new2.jsonl", o)
        labeled = run_generate(tmp_path / "new.jsonl", tmp_path / "labeled.jsonl", opts(srv.base_url, tmp_path))
    new = load_records(tmp_path / "new.jsonl")
    seed_ids = {s.id: s.question for s in load_records(seeds)}
    assert len(new) == 30 == r.counts["written"]
    assert len({n.question for n in new}) == 30 and not {n.question for n in new} & set(seed_ids.values())
    for n in new:
        assert n.task == "numeric" and not n.samples
        assert len(n.provenance["inspired_by"]) == 3 and set(n.provenance["inspired_by"]) <= set(seed_ids)
    assert (tmp_path / "new.jsonl").read_bytes() == (tmp_path / "new2.jsonl").read_bytes()  # stable ids
    assert labeled.counts["ok"] >= 25  # the expansion's questions are ones the teacher can answer


def test_cli_validates_everything_before_spending(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"id": "a", "question": "1+1?", "task": "numeric"}) + "\n")
    code, _, err = cli("generate", seeds, "-o", tmp_path / "o.jsonl", "--model", "gpt-4o-mini",
                       "--base-url", "https://api.example.com/v1", "--samples", "0", "--concurrency", "0",
                       "--prompt", tmp_path / "missing.txt", "--mode", "distill")
    assert code == 2 and err.count("\n") == 1
    for part in ("--mode", "--samples", "--prompt", "--concurrency", "OPENAI_API_KEY"):
        assert part in err
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_fatal_error_is_one_line_and_the_key_is_never_written(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_TEACHER_KEY", "sk-secret-never-on-disk-123")
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} plus {i}?",
                                         "task": "numeric"}) + "\n" for i in range(5)))
    script = [ScriptLine(f"What is {i} plus {i}?", [f"The answer is {2 * i}."]) for i in range(5)]
    base = ["generate", seeds, "--model", "loopback", "--api-key-env", "MY_TEACHER_KEY",
            "--cache", tmp_path / "cache.sqlite"]
    with running(script, api_key="another-key") as srv:
        code, _, err = cli(*base, "-o", tmp_path / "o.jsonl", "--base-url", srv.base_url)
    assert code == 1 and err.count("\n") == 1 and "API key was refused (HTTP 401)" in err
    assert "sk-secret" not in err
    with running(script, api_key="sk-secret-never-on-disk-123") as srv:
        code, _, err = cli(*base, "-o", tmp_path / "o.jsonl", "--base-url", srv.base_url)
    assert code == 0 and "5 samples: 5 answered" in err and "teacher: 5/5 samples" in err
    for f in tmp_path.iterdir():
        assert b"sk-secret" not in f.read_bytes(), f


def test_to_sample_reason_codes():
    rec = Record(id="a", question="q", task="numeric")
    cut = to_sample(Completion(0, "So 84 / 2 = 42. The answer is 4", "length"), rec)
    assert (cut.error, cut.answer) == ("truncated", None) and "'4'" in cut.detail
    ran_on = to_sample(Completion(0, "The answer is 42.\n\nQ: Next one?\nA: The ans", "length"), rec)
    assert (ran_on.error, ran_on.answer) == (None, "42")
    assert to_sample(Completion(0, "", "stop"), rec).error == "empty"
    assert to_sample(Completion(0, "I'm sorry, I can't help with that.", "stop"), rec).error == "refusal"
    assert to_sample(Completion(0, None, error="transport", detail="HTTP 500"), rec).error == "transport"


@pytest.mark.parametrize("text, questions", [
    ("1. How many eggs?\n2) What is 3 + 4?\n\nThese are good questions.", ["How many eggs?", "What is 3 + 4?"]),
    ("- Tom has 3 cats.\n  How many legs?\n* Question: Ann has 2 pens?", ["Tom has 3 cats.\nHow many legs?",
                                                                           "Ann has 2 pens?"]),
    ('```json\n["A?", {"question": "B?"}, 3]\n```', ["A?", "B?"]),
    ("I don't know.", []),
])
def test_parse_question_list(text, questions):
    assert parse_question_list(text) == questions


def test_a_prompt_without_its_placeholder_is_refused(tmp_path):
    prompt = tmp_path / "p.txt"
    prompt.write_text("Answer the question. The answer is X.\n")
    label = GenerateOptions(model="m", base_url="http://127.0.0.1:1/v1", prompt=prompt).problems()
    expand = GenerateOptions(mode="expand", model="m", base_url="http://127.0.0.1:1/v1", prompt=prompt).problems()
    assert label == [f"--prompt {prompt}: label mode needs a {{question}} placeholder in it"]
    assert expand == [f"--prompt {prompt}: expand mode needs a {{examples}} placeholder in it"]


def test_ctrl_c_keeps_the_old_output_and_every_finished_response(shared_data, tmp_path):
    seeds = svamp_seeds(shared_data, tmp_path, limit=200)
    out, cache = tmp_path / "out.jsonl", tmp_path / "cache.sqlite"
    out.write_text("previous output\n")
    with running(palm_script(shared_data, seeds), latency=0.02) as srv:
        proc = subprocess.Popen([sys.executable, "-m", "kdpipe", "generate", str(seeds), "-o", str(out),
                                 "--model", "loopback", "--base-url", srv.base_url, "--cache", str(cache),
                                 "--concurrency", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while srv.stats["answered"] < 30:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        answered = srv.stats["answered"]
    assert proc.returncode == 130 and "rerun the same command to resume" in err.decode()
    assert out.read_text() == "previous output\n"
    rows = sqlite3.connect(cache).execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    assert answered - 2 <= rows <= answered  # at most the requests in flight were lost


def test_expand_drops_the_question_an_answer_cut_off_by_max_tokens_was_writing(shared_data, tmp_path):
    seeds = svamp_seeds(shared_data, tmp_path, limit=60)
    test_rows = [json.loads(line) for line in open(shared_data / "dss/svamp/svamp_test.json")]
    whole = [" ".join(row["input"].split()) for row in test_rows]
    script = palm_script(shared_data, seeds) + [ScriptLine(q, ["x"], expand=True) for q in whole]
    with running(script, faults={"truncated": 1.0}) as srv:
        r = run_generate(seeds, tmp_path / "new.jsonl", opts(srv.base_url, tmp_path, mode="expand", num_new=5))
    new = load_records(tmp_path / "new.jsonl")
    assert new and r.counts["truncated"] >= 1
    for n in new:  # every question kept is one the teacher wrote whole
        assert " ".join(n.question.split()) in whole, n.question


def test_failed_requests_write_the_output_but_exit_3_and_a_rerun_retries_only_those(cli, tmp_path):
    import socket

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} plus {i}?",
                                         "task": "numeric"}) + "\n" for i in range(6)))
    script = [ScriptLine(f"What is {i} plus {i}?", [f"{i} + {i} = {2 * i}. The answer is {2 * i}."])
              for i in range(6)]
    with socket.socket() as s:  # a port nothing listens on: the endpoint is down
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    base = ["generate", seeds, "-o", tmp_path / "out.jsonl", "--model", "loopback", "--cache",
            tmp_path / "cache.sqlite", "--retries", "0", "--timeout", "2"]
    code, _, err = cli(*base, "--base-url", down)
    assert code == 3, err
    assert "6 samples failed (transport)" in err and "rerun the same command to retry only those" in err
    assert [r.samples[0].error for r in load_records(tmp_path / "out.jsonl")] == ["transport"] * 6
    _, usage, _ = cli("generate", "--help")
    assert "3 when the output was written" in " ".join(usage.split())
    with running(script) as srv:
        code, _, err = cli(*base, "--base-url", srv.base_url)
        assert code == 0, err
        assert srv.stats["requests"] == 6
        code, _, err = cli(*base, "--base-url", srv.base_url)
        assert code == 0 and srv.stats["requests"] == 6  # up to date: everything from the cache
    assert all(r.samples[0].answer == str(2 * i) for i, r in enumerate(load_records(tmp_path / "out.jsonl")))


def test_a_built_wheel_carries_the_default_prompts(tmp_path):
    """Installed from a wheel (no repository around it), generate still finds its prompts."""
    import shutil
    import zipfile
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"
    shutil.copytree(repo / "kdpipe", src / "kdpipe", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, timeout=300, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("kdpipe-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    check = ("from kdpipe.label_prompts import PROMPTS_DIR, read_prompt\n"
             "for t in ('numeric', 'choice', 'text', 'expand'):\n"
             "    name, digest, text = read_prompt(PROMPTS_DIR / f'{t}.txt')\n"
             "    print(name, len(text) > 100)\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    got = subprocess.run([sys.executable, "-c", check], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == ["numeric.txt", "True", "choice.txt", "True", "text.txt", "True",
                                  "expand.txt", "True"]
    assert (repo / "prompts" / "numeric.txt").read_text() == (PROMPTS_DIR / "numeric.txt").read_text()


def test_eval_teacher_asks_what_generate_asked_so_the_cache_answers_it(shared_data, tmp_path):
    from kdpipe.evaluate.teacher import ask_teacher, prepare_teacher
    from kdpipe.teacher.options import TeacherOptions

    seeds = svamp_seeds(shared_data, tmp_path, limit=30)
    with running(palm_script(shared_data, seeds)) as srv:
        run_generate(seeds, tmp_path / "out.jsonl", opts(srv.base_url, tmp_path))
        sent = srv.stats["requests"]
        setup = prepare_teacher(TeacherOptions(model="loopback", base_url=srv.base_url,
                                               cache=tmp_path / "cache.sqlite"))
        texts, _, _, tokens = ask_teacher(setup, load_records(seeds))
        assert srv.stats["requests"] == sent and tokens["cached_answers"] == 30
    assert texts == [r.samples[0].text for r in load_records(tmp_path / "out.jsonl")]
    from kdpipe.label_prompts import label_prompts, label_requests

    records = load_records(seeds)
    (req, *_) = label_requests(records, label_prompts(records, None), 3)
    assert (req.n, req.id) == (3, records[0].id) and records[0].question in req.messages[0]["content"]


def test_samples_help_says_when_raising_it_reuses_the_cache(cli):
    _, usage, _ = cli("generate", "--help")
    text = " ".join(usage.replace("│", " ").split())
    assert "pays only for the new samples at the same temperature" in text
    assert "from 1 to several the default temperature changes (0 to 0.7)" in text


def test_the_result_says_what_was_written_and_what_it_cost(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} plus {i}?",
                                         "task": "numeric"}) + "\n" for i in range(5)))
    script = [ScriptLine(f"What is {i} plus {i}?", [f"The answer is {2 * i}."]) for i in range(5)]
    prices = []
    with running(script) as srv:
        r = run_generate(seeds, tmp_path / "out.jsonl", opts(srv.base_url, tmp_path, price_in=2.0, price_out=8.0),
                         on_price=prices.append)
    first, teacher = r.summary()
    assert first == f"generate: 5 records, 5 samples: 5 answered; written to {tmp_path / 'out.jsonl'}"
    assert teacher.startswith("teacher: 5/5 samples: 5 sent, 0 cached") and f"${r.cost_usd:.4f}" in teacher
    assert prices == [r.price] and r.price.input == 2.0 and r.notice() is None and r.exit_code == 0


def test_an_option_of_the_other_mode_is_reported_not_ignored(cli, tmp_path):
    url = "http://127.0.0.1:1/v1"
    assert GenerateOptions(mode="expand", model="m", base_url=url, samples=3).problems() == [
        "--samples is for label mode (expand asks for one completion per request)"]
    assert GenerateOptions(model="m", base_url=url, num_new=10, seeds_per_prompt=5).problems() == [
        "--num-new and --seeds-per-prompt are for expand mode, not label mode"]
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"id": "a", "question": "1+1?", "task": "numeric"}) + "\n")
    code, _, err = cli("generate", seeds, "-o", tmp_path / "o.jsonl", "--model", "m", "--base-url", url,
                       "--num-new", "10")
    assert code == 2 and "--num-new is for expand mode" in err and not (tmp_path / "o.jsonl").exists()
