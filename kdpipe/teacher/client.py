"""The teacher client: many chat requests to an OpenAI-compatible endpoint, through the cache.

`complete(config, requests, cache)` sends each request's missing samples with
at most `config.concurrency` requests in flight, retries what is worth
retrying (429, 5xx, timeouts, connection errors, malformed bodies) with
exponential backoff, full jitter and the server's Retry-After, stores each
response in the cache before handing it back, and stops the whole run at
once on a fatal error (bad key, unknown model) by raising TeacherFatalError.

It knows nothing about stages: give it messages, get back texts with usage.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import random
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from kdpipe.teacher.cache import ResponseCache
from kdpipe.teacher.identity import cache_namespace, endpoint_host, is_local
from kdpipe.teacher.lookup import RunLookup
from kdpipe.teacher.response import Completion, entries_from, from_stored, lacks_logprobs
from kdpipe.teacher.stats import Stats
from kdpipe.teacher.transport import (
    Rejected, Retryable, TeacherFatalError, scrub_secret, short,
)
from kdpipe.teacher.sender import make_sender
from kdpipe.token_logprobs import MAX_TOP

BASE_URL_ENV = "OPENAI_BASE_URL"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
TRANSPORTS = ("asyncio", "aiohttp", "openai")


@dataclass
class TeacherConfig:
    """Who the teacher is and how to call it. Defaults here are the CLI's defaults."""

    model: str = ""
    base_url: str | None = None  # else $OPENAI_BASE_URL, else OpenAI
    replicas: tuple[str, ...] = ()  # more endpoints serving the same model (teacher/replicas.py)
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int | None = 512
    stop: list[str] | None = None
    seed: int | None = None
    concurrency: int = 32
    timeout: float = 60.0  # seconds per request, so a hung request cannot stall the run
    retries: int = 6  # further attempts after the first
    backoff: float = 0.5  # first backoff in seconds; doubles per attempt, full jitter
    max_backoff: float = 30.0
    # "asyncio": the chat protocol on asyncio's own connections, parsed by httptools: the least CPU.
    # "aiohttp": the same protocol through aiohttp, a general HTTP client (twice the CPU per request).
    # "openai": the official AsyncOpenAI client (on aiohttp too), its request building and errors.
    transport: str = "asyncio"
    logprobs: int | None = None  # ask for each token's logprob and this many top alternatives
    adaptive: bool = False  # halve the requests in flight at a 429, grow back by one (teacher/ratelimit.py)
    rpm: float | None = None  # request starts per minute at most
    tpm: float | None = None  # worst-case tokens per minute at most

    def problems(self, need_key: bool = True, flag: Callable[[str], str] | None = None) -> list[str]:
        """Every problem with the config; `need_key=False` for work that sends nothing (a dry run);
        `flag(field)` names the flag that set a field (default: --field-name)."""
        flag = flag or (lambda name: "--" + name.replace("_", "-"))
        p = []
        if not self.model:
            p.append(f"{flag('model')} is required")
        if self.concurrency < 1:
            p.append(f"{flag('concurrency')} must be at least 1")
        if not 0.0 <= self.temperature <= 2.0:
            p.append(f"{flag('temperature')} must be between 0 and 2")
        if self.max_tokens is not None and self.max_tokens < 1:
            p.append(f"{flag('max_tokens')} must be at least 1")
        if not self.timeout > 0 or self.timeout == float("inf"):  # NaN and inf included
            p.append(f"{flag('timeout')} must be a positive number of seconds")
        if self.retries < 0:
            p.append(f"{flag('retries')} must be at least 0")
        if self.logprobs is not None and not 1 <= self.logprobs <= MAX_TOP:
            p.append(f"{flag('logprobs')} must be between 1 and {MAX_TOP}")
        if self.transport not in TRANSPORTS:
            p.append(f"transport must be one of {', '.join(TRANSPORTS)}")
        for url in self.base_urls():
            parts = urlsplit(url)
            if parts.username is not None or parts.password is not None:
                # Never echo it: the user part often is the key itself.
                p.append(f"{flag('base_url')} must not hold credentials (user:password@host); put the key in "
                         f"${self.api_key_env}")
            elif parts.scheme not in ("http", "https") or not parts.hostname:
                p.append(f"{flag('base_url')} must be an http(s) URL, got {url!r}")
            else:
                try:
                    parts.port
                except ValueError:
                    p.append(f"{flag('base_url')} has a bad port: {url!r}")
        if need_key and not os.environ.get(self.api_key_env) and not all(map(is_local, self.base_urls())):
            p.append(f"no API key: set {self.api_key_env} (or name another variable with {flag('api_key_env')})")
        return p

    def resolved_base_url(self) -> str:
        return (self.base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")

    def base_urls(self) -> list[str]:
        return [self.resolved_base_url(), *(u.rstrip("/") for u in self.replicas)]

    def api_key(self) -> str:
        # A local server needs no key; the client library still wants a non-empty one.
        return os.environ.get(self.api_key_env) or "unused"

    def sampling_params(self) -> dict[str, Any]:
        """What, besides model and messages, determines a response: the cache key's params."""
        params = {"temperature": self.temperature, "max_tokens": self.max_tokens,
                  "stop": self.stop or None, "seed": self.seed}
        if self.logprobs:  # only then: the keys of answers cached without logprobs stay as they were
            params["logprobs"] = self.logprobs
        return params

    def provenance(self) -> dict[str, Any]:
        """The teacher call as recorded on records: never the key, only the endpoint's host."""
        return {"model": self.model, "base_url_host": endpoint_host(self.resolved_base_url()),
                **self.sampling_params()}


@dataclass
class ChatRequest:
    """One question to the teacher: `n` samples, numbered from `first_sample`."""

    messages: list[dict[str, str]]
    n: int = 1
    first_sample: int = 0
    id: str | None = None  # the record asked about: names its lines in a Batch API input file


def complete(config: TeacherConfig, requests: list[ChatRequest], cache: ResponseCache,
             stats: Stats | None = None, on_progress: Callable[[Stats], None] | None = None,
             budget=None, on_answered: Callable[[int, list[Completion]], None] | None = None,
             ) -> list[list[Completion]]:
    """Synchronous wrapper of `acomplete` for callers without an event loop."""
    # What is alive when the requests go out (the records, the requests) lives until they are answered:
    # frozen, the collector's full passes skip it (each stalls every request in flight for tens of ms
    # at 10,000 records). Left alone when the program froze objects itself: unfreezing would undo that.
    freeze = not gc.get_freeze_count()
    if freeze:
        gc.freeze()
    try:
        return asyncio.run(acomplete(config, requests, cache, stats, on_progress, budget, on_answered))
    finally:
        if freeze:
            gc.unfreeze()


async def acomplete(config: TeacherConfig, requests: list[ChatRequest], cache: ResponseCache,
                    stats: Stats | None = None, on_progress: Callable[[Stats], None] | None = None,
                    budget=None, on_answered: Callable[[int, list[Completion]], None] | None = None,
                    ) -> list[list[Completion]]:
    """For each request, its samples in order: from the cache, else from the teacher.

    Each sample is stored in the cache the moment its response arrives, before
    anything else happens. The same sample asked twice in one run is sent once.
    With a `budget` (teacher/budget.py), a request the budget refuses is not sent: its
    samples come back with error "not_sent". A fatal error (bad key, unknown model)
    stops new requests, lets those in flight come back and be stored, then is raised.
    `on_answered(r, samples)` hears each request once, as soon as all its samples are known
    (the caller's work on it then overlaps the wait for others)."""
    stats = stats or Stats()
    namespace = await asyncio.to_thread(cache_namespace, config.resolved_base_url())
    lookup = RunLookup(config, requests, cache, stats, namespace, on_answered)
    todo = lookup.todo()
    first_todo = next(todo, None)  # a run the cache answers whole connects to nothing
    if first_todo is not None:
        await _send_all(config, requests, itertools.chain([first_todo], todo), lookup, cache, stats,
                        on_progress, budget)
    if lookup.failed is not None:  # raised once every answer in flight was stored; repeats may lack theirs
        raise lookup.failed
    results, first = lookup.results, lookup.first
    for r, pos, key in lookup.repeats:
        fr, fpos = first[key]
        c = results[fr][fpos]
        lookup.fill(r, pos, Completion(requests[r].first_sample + pos, c.text, c.finish_reason, {}, True,
                                       c.error, c.detail))
        stats.duplicates += 1
        stats.done += 1
    lookup.work()
    if lookup.failed is not None:  # on_answered's own error
        raise lookup.failed
    return results  # type: ignore[return-value]


async def _send_all(config, requests, todo, lookup: RunLookup, cache, stats, on_progress, budget=None) -> None:
    transport = make_sender(config, stats.replicas, stats.limits)
    queue = iter(todo)  # read by every worker: the lookup of the next chunk runs inside next()
    ticker = asyncio.create_task(_tick(stats, on_progress)) if on_progress else None
    idle_work = asyncio.create_task(lookup.work_when_idle())
    fatal: list[BaseException] = []  # the first fatal error: no request starts after it

    def finish(r: int, c: Completion, counted_as_error: bool = True) -> None:
        stats.done += 1
        stats.errors += counted_as_error and c.error is not None
        lookup.fill(r, c.index - requests[r].first_sample, c)

    async def worker():
        for r, missing, keys in queue:
            if fatal or lookup.failed:
                return
            await _take_from_other_runs(cache, config, r, missing, keys, finish, stats, fatal, lookup.looked)
            if not missing:
                continue
            reservation = await budget.wait_admit(requests[r].messages, len(missing)) if budget else None
            if budget and reservation is None:
                for i in missing:
                    finish(r, Completion(i, error="not_sent", detail=budget.detail()), counted_as_error=False)
                stats.not_sent += len(missing)
                continue
            key_of = dict(zip(missing, keys))
            spent = [0, 0, True]  # prompt tokens, completion tokens, usage known for every response

            def store(i: int, entry: dict) -> None:
                # Stored before anything else looks at it, and committed when this turn of the
                # event loop ends, in one commit with the other answers and claims of the turn:
                # a crash or a fatal error cannot lose an answer that was paid for, a kill at
                # most the answers of that turn (milliseconds).
                cache.put(key_of.pop(i), config.model, entry, release=True, commit=False)
                cache.commit_soon()
                finish(r, from_stored(i, entry))

            def paid(usage) -> None:
                if usage is None:
                    spent[2] = False
                    stats.no_usage += 1
                else:
                    spent[0] += usage[0]
                    spent[1] += usage[1]
                    stats.prompt_tokens += usage[0]
                    stats.completion_tokens += usage[1]

            try:
                failed = await _fetch(config, transport, requests[r].messages, missing, stats, store, paid, fatal)
            finally:
                if key_of:  # the claims of samples that got no answer
                    cache.release(list(key_of.values()))
                if budget:
                    budget.settle(reservation, spent[0], spent[1], usage_known=spent[2])
            for c in failed:
                finish(r, c)

    workers = [asyncio.create_task(worker()) for _ in range(min(config.concurrency, len(requests)))]
    try:
        await asyncio.gather(*workers)
        if fatal:
            raise fatal[0]
    finally:
        for t in workers:
            t.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        idle_work.cancel()
        cache.commit()
        if ticker:
            ticker.cancel()
            on_progress(stats)
        await transport.close()


async def _take_from_other_runs(cache, config, r, missing, keys, finish, stats, fatal, looked: list) -> None:
    """Claim the keys this worker is about to send; for those another run on this cache is
    sending now, wait for its answers instead of paying twice. Drops from `missing`/`keys`
    what another run answered (or had stored since this run looked). `looked[0]`: the cache's
    version when this run looked up all its keys, None once another process has written since."""
    held: set[str] = set()
    claim_for = config.timeout * (config.retries + 1) + 60.0
    while True:
        # Lookup and claim under one write lock: no answer of another run lands between them.
        cache.begin()
        cache.commit_soon()
        if looked[0] is not None and cache.version() == looked[0]:
            fresh = {}  # nobody else has written since the run's own lookup: it still holds
        else:
            looked[0] = None
            fresh = cache.get_many(keys)
        for i, key in zip(list(missing), list(keys)):
            if key in fresh:
                finish(r, from_stored(i, fresh[key], cached=True))
                stats.cached += 1
                missing.remove(i)
                keys.remove(key)
        # Committed at the end of this turn with the answers that came in it (cache.py: put, claim).
        held = cache.claim(keys, claim_for, commit=False) if keys and not fatal else set()
        if not held:
            return
        # Hold nothing while waiting: two runs each holding what the other waits for would wait forever.
        cache.release([k for k in keys if k not in held])
        await asyncio.sleep(random.uniform(0.1, 0.3))


async def _tick(stats: Stats, on_progress) -> None:
    while True:
        on_progress(stats)
        await asyncio.sleep(0.5)


async def _fetch(config, transport, messages, missing: list[int], stats: Stats, store, paid,
                 fatal: list) -> list[Completion]:
    """The missing samples of one request: one call with `n`, separate calls for what it lacks.

    Each answer goes to `store(index, entry)` as it arrives and each response's usage
    to `paid(usage or None)`; returns the samples that got no answer (transport errors)."""
    want = list(missing)
    use_n = len(want) > 1
    while want:
        if fatal:  # another request's key was refused: send nothing more
            return [Completion(i, error="transport", detail="not sent: the run stopped at a fatal error")
                    for i in want]
        n = len(want) if use_n else 1
        body = request_body(config, messages, n)
        try:
            response = await _with_retries(config, transport, body, stats, fatal)
        except TeacherFatalError as e:
            if not fatal:
                fatal.append(e)
            return [Completion(i, error="transport", detail=str(e)) for i in want]
        except Rejected as e:
            if n > 1:  # some endpoints refuse n > 1 ("n must be 1"): ask one by one
                use_n = False
                continue
            return [Completion(i, error="transport", detail=str(e)) for i in want]
        except Retryable as e:
            return [Completion(i, error="transport", detail=str(e)) for i in want]
        entries, usage = entries_from(response, n, bool(config.logprobs))
        paid(usage)
        if config.logprobs and any(lacks_logprobs(e) for e in entries):
            # Text-only data where the user asked for probabilities is no use: stop the run.
            error = TeacherFatalError("the endpoint returned no logprobs although --logprobs asked for them "
                                  "(it does not support them): use one that does, or drop --logprobs")
            if not fatal:
                fatal.append(error)
            return [Completion(i, error="transport", detail=str(error)) for i in want]
        for i, entry in zip(want, entries):
            store(i, entry)
        want = want[len(entries):]
        if want and not entries:
            return [Completion(i, error="transport", detail="response has no choices") for i in want]
        use_n = False  # the server ignored `n`: ask for the rest one by one
    return []


async def _send_within(transport, body: dict, seconds: float) -> dict:
    if getattr(transport, "keeps_time", False):
        return await transport.send(body)
    # asyncio.timeout (3.11+) costs far less than wait_for, which wraps every call in a task.
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await transport.send(body)
    return await asyncio.wait_for(transport.send(body), seconds)


def request_body(config: TeacherConfig, messages: list[dict], n: int) -> dict:
    """The /v1/chat/completions body of one request (online, or one line of a batch)."""
    body = {"model": config.model, "messages": messages, "temperature": config.temperature}
    if n > 1:
        body["n"] = n
    if config.max_tokens is not None:
        body["max_tokens"] = config.max_tokens
    if config.stop:
        body["stop"] = config.stop
    if config.seed is not None:
        body["seed"] = config.seed
    if config.logprobs:
        body["logprobs"], body["top_logprobs"] = True, config.logprobs
    return body


async def _with_retries(config, transport, body, stats: Stats, stop: list = ()) -> dict:
    error: Exception | None = None
    for attempt in range(config.retries + 1):
        if attempt and stop:
            raise Retryable(f"{error} (not retried: the run stopped at a fatal error)")
        stats.requests += 1
        try:
            # A transport that does not keep to --timeout all through (keeps_time) gets a timer here too.
            return await _send_within(transport, body, config.timeout + 1.0)
        except asyncio.TimeoutError:
            error = Retryable(f"no response within {config.timeout:g} s")
        except Retryable as e:
            error = e
        except (TeacherFatalError, Rejected):
            raise
        except Exception as e:  # noqa: BLE001  a client library's surprise: a failed attempt, not a traceback
            error = Retryable(f"unexpected {type(e).__name__}: {short(scrub_secret(str(e), config.api_key()))}")
        if attempt == config.retries:
            raise Retryable(f"{error} (gave up after {attempt + 1} attempts)")
        stats.retries += 1
        delay = random.uniform(0, min(config.max_backoff, config.backoff * 2 ** attempt))
        if error.retry_after is not None:
            delay = max(delay, min(error.retry_after, 60.0))
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")
