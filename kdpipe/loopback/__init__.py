"""A loopback teacher: an OpenAI-compatible server on 127.0.0.1 with scripted answers and faults.

Real HTTP (`GET /v1/models`, `POST /v1/chat/completions`), so tests, the
offline demo and users' own Makefiles exercise exactly the code path a paid
endpoint takes, for free.

Script files are JSONL, one question per line:
    {"question": str, "completions": [str, ...], "expand": bool (optional),
     "rationalize": [str, ...] (optional), "counterfactual": [str, ...] (optional)}
A label request is answered with the completions of the known question that
occurs last in the last user message (few-shot exemplars come before the
question asked); sample i gets completions[i % len]. An unknown question gets
"I don't know." A Socratic request (its prompt asks for "sub-questions") gets each completion
rewritten as a decomposition, one sub-question per sentence (replies.py socratic_reply). An expansion request (its prompt asks for "new questions" or
"new instructions") gets a numbered list drawn, seeded by the request, from the
lines marked "expand". A rationalization request (prompts/rationalize.txt: a hint
with the correct answer) gets the question's "rationalize" completions, else a
rationale reaching the hint; a counterfactual request (prompts/counterfactual.txt)
gets its "counterfactual" completions, else "I don't know." (replies.py).

Faults (`KIND=RATE`, each drawn independently per request): rate_limit (429
with Retry-After), server_error (500), malformed (a broken JSON body), hang
(no answer until the client gives up), truncated (half the text,
finish_reason "length"), empty (an empty completion).

Asked for `logprobs` (and `top_logprobs`), it answers each completion's tokens
(word-sized pieces of the scripted text) with deterministic fake distributions
(replies.py fake_logprobs).

`GET /v1/models` names the server a kdpipe loopback (field kdpipe_loopback,
a digest of its script), so that clients cache its answers apart from a real
model's (kdpipe/teacher/identity.py); `identify=False` makes it pose as a real
endpoint, for tests.

`GET /v1/kdpipe/stats` returns what the server has answered, for tests.
The Files and Batch API (`/v1/files`, `/v1/batches`) are in batch.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from kdpipe.errors import InputError
from kdpipe.loopback.options import FAULTS, parse_fault_rates  # noqa: F401  (the server's API)
from kdpipe.loopback.replies import (
    SOCRATIC_REQUEST, answered, asked_for, chat_completion, derived_reply, json_reply as _json, socratic_reply,
)

UNKNOWN_ANSWER = "I don't know."
# An expansion request asks for new questions (expand.txt) or new instructions (expand_instruction.txt).
_EXPAND = re.compile(r"\bnew (?:questions?|instructions?)\b", re.I)
_EXPAND_COUNT = re.compile(r"\b(\d+)\s+new (?:questions?|instructions?)\b", re.I)


@dataclass
class ScriptLine:
    question: str
    completions: list[str]
    expand: bool = False
    rationalize: list[str] | None = None  # the replies to a rationalization request (with the gold as a hint)
    counterfactual: list[str] | None = None  # the replies to a counterfactual request


def load_script(path: str | os.PathLike) -> list[ScriptLine]:
    from kdpipe.records import iter_json_objects

    lines = []
    for lineno, obj in iter_json_objects(path):
        q, comps = obj.get("question"), obj.get("completions")
        if not isinstance(q, str) or not q.strip():
            raise InputError(path, "field 'question' must be a non-empty string", lineno)
        if not isinstance(comps, list) or not comps or not all(isinstance(c, str) for c in comps):
            raise InputError(path, "field 'completions' must be a non-empty list of strings", lineno)
        derived = {k: obj.get(k) for k in ("rationalize", "counterfactual")}
        for k, v in derived.items():
            if v is not None and (not isinstance(v, list) or not v or not all(isinstance(c, str) for c in v)):
                raise InputError(path, f"field '{k}' must be a non-empty list of strings", lineno)
        lines.append(ScriptLine(q.strip(), comps, bool(obj.get("expand", False)), **derived))
    return lines


@dataclass
class LoopbackTeacher:
    """The server's behaviour, independent of the HTTP plumbing."""

    script: list[ScriptLine] = field(default_factory=list)
    latency: float = 0.0
    faults: dict[str, float] = field(default_factory=dict)
    retry_after: float = 0.1
    seed: int = 0
    max_n: int | None = None  # answer at most this many choices per request (a server without `n`)
    reject_n: bool = False  # answer n > 1 with a 400, as endpoints that only allow n = 1 do
    api_key: str | None = None  # when set, any other bearer token gets a 401
    models: list[str] | None = None  # when set, any other model gets a 404
    # Hostile mode (loopback/hostile.py): odd shapes, ignored n, echoed headers, a late 401, hangs.
    hostile: list[str] = field(default_factory=list)
    unauthorized_after: int | None = None
    hang_after: int | None = None
    limit_in_flight: int | None = None  # a rate limit: a request past this many in flight gets a 429
    rate_limit: Any = None  # a provider's limit per time window, announced in headers (limits.py RateWindow)
    stats: Counter = field(default_factory=Counter)
    # The Batch API (batch.py): seconds per batch line; how many batches expire half way.
    batch_latency: float = 0.0
    expire_batches: int = 0
    paid: Counter = field(default_factory=Counter)  # prompt digest -> answers billed, online and batch
    batch_api: Any = field(default=None, repr=False)  # the files and batches this server holds
    identify: bool = True  # name itself a loopback in GET /v1/models (False: pose as a real endpoint)
    logprobs: bool = True  # answer logprobs when asked (False: ignore the request, as some servers do)

    def __post_init__(self):
        self._rng = random.Random(self.seed)
        self._by_question = {line.question: line for line in self.script}
        self._expandable = [line.question for line in self.script if line.expand] or list(self._by_question)
        # Longest first, so that a question containing a shorter known one wins.
        self._questions = sorted(self._by_question, key=len, reverse=True)
        self._lookup_memo: dict[str, ScriptLine | None] = {}

    def identity(self) -> str:
        """What GET /v1/models calls this server: its script's digest, so that two servers with
        different scripts never share cached answers."""
        digest = hashlib.sha256(json.dumps([[line.question, line.completions, line.expand]
                                            + [v for v in (line.rationalize, line.counterfactual) if v is not None]
                                            for line in self.script])
                                .encode("utf-8")).hexdigest()[:16]
        return f"kdpipe-loopback:{digest}"

    def draw_fault(self) -> str | None:
        x, edge = self._rng.random(), 0.0
        for kind in FAULTS:
            edge += self.faults.get(kind, 0.0)
            if x < edge:
                return kind
        return None

    def answer(self, body: dict) -> tuple[list[str], bool]:
        """The completion texts for a chat request, and whether it was an expansion request."""
        n = max(1, int(body.get("n") or 1))
        messages = body.get("messages") or []
        user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        if not isinstance(user, str):
            user = " ".join(part.get("text", "") for part in user if isinstance(part, dict))
        lowered = user.lower()
        kind = asked_for(user, lowered)
        if kind is None and "new " in lowered and _EXPAND.search(user):
            return [self._expansion(user, i) for i in range(n)], True
        line = self._lookup(user)
        if kind is not None:
            return [derived_reply(kind, line, user, i) or UNKNOWN_ANSWER for i in range(n)], False
        if line is None:
            return [UNKNOWN_ANSWER] * n, False
        texts = [line.completions[i % len(line.completions)] for i in range(n)]
        if "sub" in lowered and SOCRATIC_REQUEST.search(user):
            texts = [socratic_reply(t) for t in texts]
        return texts, False

    def _lookup(self, user: str) -> ScriptLine | None:
        if user in self._lookup_memo:
            return self._lookup_memo[user]
        best, best_pos = None, -1
        for q in self._questions:
            pos = user.rfind(q)
            if pos > best_pos:
                best, best_pos = self._by_question[q], pos
        self._lookup_memo[user] = best
        return best

    def _expansion(self, user: str, sample: int) -> str:
        m = _EXPAND_COUNT.search(user)
        count = min(int(m.group(1)) if m else 5, len(self._expandable))
        if not count:
            return UNKNOWN_ANSWER
        seed = int.from_bytes(hashlib.sha256(f"{sample}\0{user}".encode()).digest()[:8], "big")
        picks = random.Random(seed).sample(self._expandable, count)
        return "\n".join(f"{k}. {q}" for k, q in enumerate(picks, 1))


async def handle(teacher: LoopbackTeacher, method: str, target: str, headers: dict, body: bytes):
    """One HTTP request -> (status, headers, body): the OpenAI chat API as the loopback speaks it."""
    path, _, query = target.partition("?")
    if method == "GET" and path == "/v1/models":
        listing = {"object": "list", "data": [
            {"id": "loopback", "object": "model", "created": 0, "owned_by": "kdpipe"}]}
        if teacher.identify:
            from kdpipe.teacher.identity import LOOPBACK_FIELD

            listing[LOOPBACK_FIELD] = teacher.identity()
        return _json(200, listing)
    if method == "GET" and path == "/v1/kdpipe/stats":
        return _json(200, dict(teacher.stats))
    if path.startswith(("/v1/files", "/v1/batches")):
        from kdpipe.loopback.batch import BatchEndpoints

        teacher.batch_api = teacher.batch_api or BatchEndpoints(teacher)
        return await teacher.batch_api.handle(method, path, headers, body, query)
    if method != "POST" or path != "/v1/chat/completions":
        return _json(404, {"error": {"message": f"no route {method} {path}"}})
    teacher.stats["requests"] += 1
    teacher.stats["in_flight"] += 1
    teacher.stats["max_in_flight"] = max(teacher.stats["max_in_flight"], teacher.stats["in_flight"])
    try:
        if teacher.limit_in_flight is not None and teacher.stats["in_flight"] > teacher.limit_in_flight:
            teacher.stats["limited"] += 1
            return _json(429, {"error": {"message": "rate limit reached", "type": "rate_limit"}},
                         {"Retry-After": f"{teacher.retry_after:g}"})
        if teacher.rate_limit is not None:
            admitted, said = teacher.rate_limit.admit(body)
            if not admitted:
                teacher.stats["limited"] += 1
                return _json(429, {"error": {"message": "rate limit reached", "type": "rate_limit"}}, said)
            status, extra, payload = await _chat(teacher, headers, body)
            return status, {**extra, **teacher.rate_limit.describe()}, payload
        return await _chat(teacher, headers, body)
    finally:
        teacher.stats["in_flight"] -= 1


async def _chat(teacher: LoopbackTeacher, headers: dict, raw: bytes):
    if teacher.api_key is not None and headers.get("authorization") != f"Bearer {teacher.api_key}":
        return _json(401, {"error": {"message": "Incorrect API key provided"}})
    try:
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        return _json(400, {"error": {"message": "body is not a JSON object"}})
    if teacher.models is not None and body.get("model") not in teacher.models:
        return _json(404, {"error": {"message": f"model {body.get('model')!r} does not exist"}})
    if teacher.reject_n and int(body.get("n") or 1) > 1:
        return _json(400, {"error": {"message": "n must be 1"}})
    if teacher.max_n is not None:
        body["n"] = min(int(body.get("n") or 1), teacher.max_n)
    hostile = None
    if teacher.hostile or teacher.unauthorized_after is not None or teacher.hang_after is not None:
        from kdpipe.loopback import hostile
        early = await hostile.before(teacher, headers, body)
        if early is not None:
            return early
    if teacher.latency:
        await asyncio.sleep(teacher.latency)
    fault = teacher.draw_fault()
    if fault:
        teacher.stats[fault] += 1
    if fault == "rate_limit":
        return _json(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                     {"Retry-After": f"{teacher.retry_after:g}"})
    if fault == "server_error":
        return _json(500, {"error": {"message": "injected server error"}})
    if fault == "malformed":
        return 200, {}, b'{"id": "chatcmpl-x", "choices": [{"mess'
    if fault == "hang":
        await asyncio.sleep(3600)  # cancelled when the client gives up and hangs up
    texts, finish, expand = answered(teacher, body, fault)
    teacher.stats["answered"] += 1
    teacher.stats["expand" if expand else "label"] += 1
    reply = chat_completion("chatcmpl-loopback", body, texts, finish, teacher.logprobs)
    return _json(200, hostile.mangle(reply, body.get("_hostile")) if hostile else reply)


async def _start(teacher: LoopbackTeacher, host: str, port: int):
    from kdpipe.loopback.httpserver import HttpServer

    server = await HttpServer(lambda *request: handle(teacher, *request)).start(host, port)
    return server, f"http://{host}:{server.port}/v1"


def serve(teacher: LoopbackTeacher, host: str = "127.0.0.1", port: int = 8765,
          ready_file: str | os.PathLike | None = None, announce=print) -> None:
    """Serve until SIGTERM or SIGINT; write the base URL to `ready_file` once listening."""

    async def main():
        server, url = await _start(teacher, host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready_file:
            tmp = Path(str(ready_file) + ".tmp")
            tmp.write_text(url + "\n")
            os.replace(tmp, ready_file)
        announce(url)
        await stop.wait()
        await server.close()
        if ready_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ready_file)

    asyncio.run(main())


class RunningServer:
    """A loopback server running in a background thread of this process."""

    def __init__(self, teacher: LoopbackTeacher, base_url: str, loop, server, thread):
        self.teacher, self.base_url = teacher, base_url
        self._loop, self._server, self._thread = loop, server, thread

    @property
    def stats(self) -> Counter:
        return self.teacher.stats

    def stop(self) -> None:
        if self._loop.is_closed():  # stopped already (a test that killed a replica mid-run)
            return
        asyncio.run_coroutine_threadsafe(self._server.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextlib.contextmanager
def running(script: list[ScriptLine] | str | os.PathLike | None = None, *, latency: float = 0.0,
            faults: dict[str, float] | None = None, retry_after: float = 0.05, seed: int = 0,
            host: str = "127.0.0.1", port: int = 0, teacher: LoopbackTeacher | None = None,
            **behaviour) -> Iterator[RunningServer]:
    """Start a loopback server in a thread on a free port; yields it (`.base_url`, `.stats`).

    `behaviour` sets the other LoopbackTeacher fields (max_n, reject_n, api_key, models, hostile,
    unauthorized_after, hang_after); `teacher` serves one made already (a local model: loopback/model.py)."""
    if script is not None and not isinstance(script, list):
        script = load_script(script)
    teacher = teacher or LoopbackTeacher(script or [], latency, faults or {}, retry_after, seed, **behaviour)
    loop = asyncio.new_event_loop()
    started: dict = {}
    ready = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        try:
            started["server"], started["url"] = loop.run_until_complete(_start(teacher, host, port))
        except BaseException as e:  # reported to the caller below
            started["error"] = e
        ready.set()
        if "error" not in started:
            loop.run_forever()
        loop.close()

    thread = threading.Thread(target=run, name="kdpipe-loopback", daemon=True)
    thread.start()
    ready.wait(30)
    if "error" in started:
        raise started["error"]
    server = RunningServer(teacher, started["url"], loop, started["server"], thread)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def subprocess_server(*args: str, timeout: float = 30.0) -> Iterator[str]:
    """Run `kdpipe teacher serve --port 0 ARGS...` in a child process; yields its base URL."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "url"
        proc = subprocess.Popen([sys.executable, "-m", "kdpipe", "teacher", "serve", "--port", "0",
                                 "--ready-file", str(ready), *args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + timeout
            while not ready.exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"loopback server exited: {proc.stderr.read().decode()[-500:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError("loopback server did not start in time")
                time.sleep(0.05)
            yield ready.read_text().strip()
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

