"""Staying under a provider's rate limit: adaptive concurrency (AIMD) and --rpm/--tpm pacing.

A transport wrapper with the same `send(body)` (transport.py). With `adaptive`, at most
`window` requests are in flight: it starts at --concurrency, is halved by a 429 answering
a request started after the last halving (so one burst of 429s halves it once, as TCP
does once per round trip), and grows by 1/window per answer (one more request in flight
per window's worth of answers), never past --concurrency. --rpm spaces request starts
60/rpm seconds apart; --tpm spaces them by each request's worst-case tokens (its prompt's
UTF-8 bytes / 4 plus max_tokens per sample), for providers that publish limits but send
no headers. The server's Retry-After is honoured by the client's retry as before.

`counts` (throttled: 429s seen; window, min_window) goes to the run's .meta.json.
"""

from __future__ import annotations

import asyncio
import json
import time

from kdpipe.teacher.transport import Retryable


class RateLimited:
    def __init__(self, inner, config, counts: dict | None = None):
        self.inner, self.adaptive = inner, config.adaptive
        self.cap = config.concurrency
        self.window = float(self.cap)
        self.rpm, self.tpm, self.max_tokens = config.rpm, config.tpm, config.max_tokens or 0
        self.in_flight = 0
        self.last_decrease = 0.0
        self.next_start = 0.0
        self.counts = {} if counts is None else counts
        self.counts.update(throttled=0, window=self.cap, min_window=self.cap)
        self._freed: asyncio.Event | None = None

    def _interval(self, body: dict) -> float:
        gap = 60.0 / self.rpm if self.rpm else 0.0
        if self.tpm:
            prompt = len(json.dumps(body.get("messages"), ensure_ascii=False).encode("utf-8")) / 4
            gap = max(gap, 60.0 * (prompt + self.max_tokens * int(body.get("n") or 1)) / self.tpm)
        return gap

    async def _acquire(self, body: dict) -> float:
        self._freed = self._freed or asyncio.Event()
        while self.in_flight >= max(1, int(self.window)):
            self._freed.clear()
            await self._freed.wait()
        self.in_flight += 1
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
        return time.monotonic()

    def _release(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self._freed.set()

    async def send(self, body: dict) -> dict:
        started = await self._acquire(body)
        try:
            response = await self.inner.send(body)
        except Retryable as e:
            if str(e).startswith("HTTP 429"):
                self.counts["throttled"] += 1
                if self.adaptive and started >= self.last_decrease:
                    self.window = max(1.0, self.window / 2)
                    self.last_decrease = time.monotonic()
                    self.counts["min_window"] = min(self.counts["min_window"], int(self.window))
            raise
        finally:
            self._release()
        if self.adaptive:
            self.window = min(float(self.cap), self.window + 1.0 / self.window)
        self.counts["window"] = int(self.window)
        return response

    async def close(self) -> None:
        await self.inner.close()
