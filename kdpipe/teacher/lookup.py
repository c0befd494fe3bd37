"""Which samples of a run the cache already answers, and the caller's work on each answered request.

Keys, the cache lookup and the bookkeeping cost tens of microseconds a request: done for
all requests before the first is sent, they delay the run by a second at 10,000 questions.
`RunLookup.todo()` does them for CHUNK requests when the senders need more work, so the
first requests leave at once and the rest of the lookup runs while answers are awaited.

The caller's work on an answered request (on_answered: parsing it, a record's output line)
waits in a queue that `work_when_idle` runs a few at a time between network events: run at
once, it would delay the next request of every worker behind it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable, Iterator

from kdpipe.teacher.cache import plain_aliases, request_key
from kdpipe.teacher.response import Completion, from_stored

CHUNK = 64  # about 2 ms of work: a worker that does it delays little


class RunLookup:
    """The cache's answers to `requests`, filled into `results` chunk by chunk as todo() is read.

    results[r][pos]: the Completion of sample `pos` of request r, None until it is known.
    repeats: (request, position, key) of samples asked twice in the run, answered by the first
    asking. looked[0]: the cache's version before the first lookup (None once another process
    has written since: the client then looks again before sending)."""

    def __init__(self, config, requests: list, cache, stats, namespace: str | None,
                 on_answered: Callable[[int, list[Completion]], None] | None = None):
        self._config, self._requests, self._cache, self._stats = config, requests, cache, stats
        self._params = config.sampling_params()
        self._namespace = namespace
        self._on_answered = on_answered
        self.results: list[list[Completion | None]] = [[None] * req.n for req in requests]
        self._unknown = [req.n for req in requests]  # samples of each request not yet known
        self.failed: BaseException | None = None  # what on_answered raised: the client sends no more
        self._answered: deque[int] = deque()  # requests whose samples are all known, for on_answered
        self._waiting = asyncio.Event()
        self.first: dict[str, tuple[int, int]] = {}  # key -> (request, position) that sends it
        self.repeats: list[tuple[int, int, str]] = []
        self.looked = [cache.version()]  # read before any lookup: a later write by another run changes it
        stats.total += sum(req.n for req in requests)

    def fill(self, r: int, pos: int, completion: Completion) -> None:
        """Sample `pos` of request r is known; when it was the request's last, tell on_answered."""
        self.results[r][pos] = completion
        self._unknown[r] -= 1
        if not self._unknown[r] and self._on_answered is not None:
            self._answered.append(r)
            self._waiting.set()

    async def work_when_idle(self, per_turn: int = 8) -> None:
        """Run on_answered for queued requests, `per_turn` per turn of the event loop, until cancelled."""
        while True:
            await self._waiting.wait()
            self.work(per_turn)
            if not self._answered:
                self._waiting.clear()
            await asyncio.sleep(0)

    def work(self, most: int | None = None) -> None:
        """Run on_answered for (at most `most` of) the queued requests; an exception it raises is
        kept in `failed` (the client then starts no more requests) and ends the calls."""
        queue = self._answered
        for _ in range(len(queue) if most is None else min(most, len(queue))):
            r = queue.popleft()
            if self.failed is not None:
                continue
            try:
                self._on_answered(r, self.results[r])
            except Exception as e:  # noqa: BLE001  raised once the answers in flight are stored
                self.failed = e

    def todo(self) -> Iterator[tuple[int, list[int], list[str]]]:
        """(request, its missing sample indices, their keys) for each request with samples to send."""
        for start in range(0, len(self._requests), CHUNK):
            yield from self._chunk(start, min(start + CHUNK, len(self._requests)))

    def _chunk(self, start: int, end: int) -> Iterator[tuple[int, list[int], list[str]]]:
        config, requests, stats = self._config, self._requests, self._stats
        all_keys = [[request_key(config.model, req.messages, self._params, i, self._namespace)
                     for i in range(req.first_sample, req.first_sample + req.n)] for req in requests[start:end]]
        stored = self._cache.get_many([k for keys in all_keys for k in keys])
        self._cache.alias_on_put(plain_aliases(config.model, requests[start:end], self._params, self._namespace))
        for r, keys_of_r in enumerate(all_keys, start):
            req = requests[r]
            missing, keys = [], []
            for pos, key in enumerate(keys_of_r):
                i = req.first_sample + pos
                hit = stored.get(key)
                if hit is not None:
                    self.fill(r, pos, from_stored(i, hit, cached=True))
                    stats.cached += 1
                    stats.done += 1
                elif key in self.first:
                    self.repeats.append((r, pos, key))
                else:
                    self.first[key] = (r, pos)
                    missing.append(i)
                    keys.append(key)
            if missing:
                yield r, missing, keys
