"""Staying under a provider's rate limit: adaptive concurrency (AIMD), its rate-limit headers, --rpm/--tpm.

A transport wrapper with the same `send(body)` (transport.py). With `adaptive`, at most
`window` requests are in flight: it starts at --concurrency, is halved by a 429 answering
a request started after the last halving (so one burst of 429s halves it once, as TCP
does once per round trip), and grows by 1/window per answer (one more request in flight
per window's worth of answers), never past --concurrency.

With `adaptive`, the headers of every answer are read too, so that the limit is met before
it answers 429: `x-ratelimit-remaining-requests` is how many more requests the provider
admits before `x-ratelimit-reset-requests`, so no more than that many start before then
(each start spends one); `x-ratelimit-remaining-tokens` / `-reset-tokens` likewise, each
request spending its worst-case tokens (below). The newest answer's headers replace what
was known (the provider counts our requests in flight already); once the reset time has
passed, nothing holds starts back until the next header. A 429's `Retry-After` holds every
new start until then, not only the retry of that request (which the client's retry waits
for as before): the others would meet the same 429.

--rpm spaces request starts 60/rpm seconds apart; --tpm spaces them by each request's
worst-case tokens (its prompt's UTF-8 bytes / 4 plus max_tokens per sample), for providers
that publish limits but send no headers.

`counts` (throttled: 429s seen; window, min_window; held: starts the headers held back) goes
to the run's .meta.json.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

from kdpipe.teacher.transport import Retryable

PROBE_S = 2.0  # the first request goes alone at most this long (it may be one that hangs)
MAX_HOLD_S = 60.0  # a header asking for a longer wait than this is taken as this (as the client's Retry-After)
_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_s(value: str | None) -> float | None:
    """A reset header in seconds: "1s", "6m0s", "20ms", "1m30.5s" (OpenAI's form) or a number of
    seconds; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _count(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class _Quota:
    """What the provider last said is left of one limit (requests or tokens) until its reset."""

    def __init__(self):
        self.left: float | None = None  # None: unknown, nothing held back
        self.limit: float | None = None  # what a reset restores, when the provider said
        self.until = 0.0

    def update(self, limit: str | None, left: str | None, reset: str | None, now: float, unseen: float) -> None:
        left_n, reset_s = _count(left), duration_s(reset)
        self.limit = _count(limit) or self.limit
        if left_n is not None:
            self.left = left_n - unseen
            # No reset named: assume the provider's usual one-second refill rather than wait blind.
            self.until = now + min(MAX_HOLD_S, 1.0 if reset_s is None else reset_s)

    def wait(self, cost: float, now: float) -> float:
        """Seconds before a start costing `cost` fits (0: now)."""
        if self.left is not None and now >= self.until:
            # Reset: the whole limit is back (else unknown) until an answer's headers say more; a
            # second on, refilled again, so that answers without headers cannot stall the run.
            self.left, self.until = self.limit, now + 1.0
        if self.left is None:
            return 0.0
        return 0.0 if self.left >= min(cost, self.limit or cost) else self.until - now

    def spend(self, cost: float) -> None:
        if self.left is not None:
            self.left -= cost


class RateLimited:
    def __init__(self, inner, config, counts: dict | None = None):
        self.inner, self.adaptive = inner, config.adaptive
        # The inner transport's own --timeout: a wait here for a slot is not the server being late.
        self.keeps_time = getattr(inner, "keeps_time", False)
        self.cap = config.concurrency
        self.window = float(self.cap)
        self.rpm, self.tpm, self.max_tokens = config.rpm, config.tpm, config.max_tokens or 0
        self.in_flight = self.started = 0
        self.last_decrease = 0.0
        self.next_start = 0.0
        self.requests, self.tokens = _Quota(), _Quota()
        self.paused_until = 0.0
        # The first request goes alone: its answer's headers (if any) tell the limit before a burst meets it.
        self.probing = self.adaptive
        self.probe_until: float | None = None
        self.counts = {} if counts is None else counts
        self.counts.update(throttled=0, window=self.cap, min_window=self.cap, held=0)
        self._freed: asyncio.Event | None = None

    def _tokens(self, body: dict) -> float:
        prompt = len(json.dumps(body.get("messages"), ensure_ascii=False).encode("utf-8")) / 4
        return prompt + self.max_tokens * int(body.get("n") or 1)

    def _interval(self, body: dict) -> float:
        gap = 60.0 / self.rpm if self.rpm else 0.0
        if self.tpm:
            gap = max(gap, 60.0 * self._tokens(body) / self.tpm)
        return gap

    def _held_for(self, tokens: float) -> float:
        """Seconds the provider's last word holds the next start back (0: start now)."""
        now = time.monotonic()
        return max(self.paused_until - now, self.requests.wait(1, now), self.tokens.wait(tokens, now))

    async def _acquire(self, body: dict, tokens: float) -> tuple[float, int]:
        """Wait for a start; returns when it started and which start it is."""
        self._freed = self._freed or asyncio.Event()
        held = False
        if self.probing and self.probe_until is None:
            self.probe_until = time.monotonic() + PROBE_S
        while True:
            while self.in_flight >= (1 if self.probing else max(1, int(self.window))):
                self._freed.clear()
                if not self.probing:
                    await self._freed.wait()
                    continue
                try:
                    await asyncio.wait_for(self._freed.wait(), max(0.0, self.probe_until - time.monotonic()))
                except asyncio.TimeoutError:
                    self.probing = False
            wait = self._held_for(tokens) if self.adaptive else 0.0
            if wait <= 0:
                break
            held = True
            await asyncio.sleep(wait)
        self.counts["held"] += held
        self.requests.spend(1)
        self.tokens.spend(tokens)
        self.in_flight += 1
        self.started += 1
        number = self.started
        if self.rpm or self.tpm:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self._interval(body)
            if start > now:
                try:
                    await asyncio.sleep(start - now)
                except BaseException:
                    self._release()
                    raise
        return time.monotonic(), number

    def _release(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self._freed.set()

    def _read(self, seen: dict, number: int, tokens: float) -> None:
        """Take in an answer's headers; `number`: which start that request was. The requests started
        after it and still in flight may not have reached the provider when it wrote the headers:
        they are counted as not yet seen, so that a late answer cannot hand out their share again."""
        now = time.monotonic()
        unseen = min(self.in_flight - 1, self.started - number)
        for kind, quota, each in (("requests", self.requests, 1.0), ("tokens", self.tokens, tokens)):
            quota.update(seen.get(f"x-ratelimit-limit-{kind}"), seen.get(f"x-ratelimit-remaining-{kind}"),
                         seen.get(f"x-ratelimit-reset-{kind}"), now, unseen * each)

    async def send(self, body: dict, seen: dict | None = None) -> dict:
        tokens = self._tokens(body) if self.adaptive else 0.0
        started, number = await self._acquire(body, tokens)
        seen = {} if self.adaptive and seen is None else seen
        try:
            response = await self.inner.send(body, seen)
        except Retryable as e:
            if str(e).startswith("HTTP 429"):
                self.counts["throttled"] += 1
                if self.adaptive and e.retry_after is not None:
                    self.paused_until = max(self.paused_until, time.monotonic() + min(e.retry_after, MAX_HOLD_S))
                if self.adaptive and started >= self.last_decrease:
                    self.window = max(1.0, self.window / 2)
                    self.last_decrease = time.monotonic()
                    self.counts["min_window"] = min(self.counts["min_window"], int(self.window))
            raise
        finally:
            if seen:
                self._read(seen, number, tokens)
            self.probing = False
            self._release()
        if self.adaptive:
            self.window = min(float(self.cap), self.window + 1.0 / self.window)
        self.counts["window"] = int(self.window)
        return response

    async def close(self) -> None:
        await self.inner.close()
