"""`kdpipe teacher serve`: a real OpenAI-compatible HTTP server in a child process."""

import json
import signal
import subprocess
import sys
import time
import urllib.request

from kdpipe.answers import parse_completion
from kdpipe.loopback import subprocess_server


def post(url, body):
    req = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def write_script(path):
    lines = [{"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
              "completions": ["3 + 4 = 7. The answer is 7.", "He has 7. The answer is 7."]},
             {"question": "Ann has 10 pens and loses 2. How many pens are left?", "completions": ["x"],
              "expand": True},
             {"question": "A box holds 6 eggs. How many eggs are in 5 boxes?", "completions": ["y"],
              "expand": True}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_serves_scripted_answers_expansions_and_models(tmp_path):
    script = write_script(tmp_path / "script.jsonl")
    with subprocess_server("--script", str(script)) as url:
        models = json.load(urllib.request.urlopen(url + "/models", timeout=10))
        assert models["data"][0]["id"] == "loopback"
        prompt = "Q: Ann has 10 pens and loses 2. How many pens are left?\nA: 8\n\n" \
                 "Q: Tom has 3 apples and buys 4 more. How many apples does he have?\nA:"
        r = post(url, {"model": "m", "messages": [{"role": "user", "content": prompt}], "n": 3})
        texts = [c["message"]["content"] for c in r["choices"]]
        assert texts == ["3 + 4 = 7. The answer is 7.", "He has 7. The answer is 7.", "3 + 4 = 7. The answer is 7."]
        assert r["usage"]["prompt_tokens"] > 0 and r["usage"]["completion_tokens"] > 0
        unknown = post(url, {"model": "m", "messages": [{"role": "user", "content": "Q: What is love?\nA:"}]})
        text = unknown["choices"][0]["message"]["content"]
        assert parse_completion(text, "numeric").error == "refusal"
        ask = {"model": "m", "messages": [{"role": "user", "content": "Write 2 new questions like these."}]}
        listing = post(url, ask)["choices"][0]["message"]["content"]
        assert sorted(listing.splitlines()) == sorted(post(url, ask)["choices"][0]["message"]["content"].splitlines())
        assert {line[3:] for line in listing.splitlines()} == {
            "Ann has 10 pens and loses 2. How many pens are left?", "A box holds 6 eggs. How many eggs are in 5 boxes?"}


def test_stops_cleanly_on_sigterm_and_removes_the_ready_file(tmp_path):
    ready = tmp_path / "url"
    proc = subprocess.Popen([sys.executable, "-m", "kdpipe", "teacher", "serve", "--port", "0",
                             "--ready-file", str(ready)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    url = ready.read_text().strip()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    urllib.request.urlopen(url + "/models", timeout=10)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert out.decode().strip() == url and not ready.exists()


def test_bad_options_are_one_line_errors(cli, tmp_path):
    code, _, err = cli("teacher", "serve", "--fault-rate", "flood=0.1", "--fault-rate", "hang=2")
    assert code == 2
    assert err.count("\n") == 1 and "unknown fault 'flood'" in err and "hang must be a number" in err
    (tmp_path / "bad.jsonl").write_text('{"question": "q"}\n')
    code, _, err = cli("teacher", "serve", "--script", tmp_path / "bad.jsonl")
    assert code == 1 and "bad.jsonl:1: field 'completions'" in err
