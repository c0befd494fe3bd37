"""Which samples of a run the cache already answers, and the caller's work on each answered request.

Keys, the cache lookup and the bookkeeping cost tens of microseconds a request: done for
all requests before the first is sent, they delay the run by a second at 10,000 questions.
`RunLookup.todo()` hands out requests as their chunk of CHUNK is looked up, so the first
leave at once. The rest of the lookup, and the caller's work on each answered request
(on_answered: parsing it, a record's output line), run in `work_when_idle`: in the quiet
between bursts of answers. Run as each answer arrives, that work would delay the next request
of every worker behind it in the burst.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable, Iterator

from kdpipe.teacher.cache import plain_aliases, request_key
from kdpipe.teacher.response import Completion, from_stored

CHUNK = 64  # about 2 ms of work: a worker that finds none ready does it itself
QUIET_S = 0.002  # no answer for this long: the idle work may run
AHEAD = 2 * CHUNK  # requests looked up ahead of the workers in the quiet
BACKLOG = 512  # answered requests waiting for on_answered past which it runs in a burst too


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
        self._last_answer = 0.0  # time.monotonic() of the last sample known
        self._ready: deque[tuple[int, list[int], list[str]]] = deque()  # looked up, for todo()
        self._looked_up = 0  # requests looked up so far
        self.first: dict[str, tuple[int, int]] = {}  # key -> (request, position) that sends it
        self.repeats: list[tuple[int, int, str]] = []
        self.looked = [cache.version()]  # read before any lookup: a later write by another run changes it
        stats.total += sum(req.n for req in requests)

    def fill(self, r: int, pos: int, completion: Completion) -> None:
        """Sample `pos` of request r is known; when it was the request's last, tell on_answered."""
        self.results[r][pos] = completion
        self._unknown[r] -= 1
        self._last_answer = time.monotonic()
        if not self._unknown[r] and self._on_answered is not None:
            self._answered.append(r)

    async def work_when_idle(self, per_turn: int = 32) -> None:
        """Until cancelled: when no answer has come for QUIET_S (or BACKLOG requests wait), run
        on_answered for up to `per_turn` queued requests, else look up the next chunk ahead."""
        while True:
            quiet = time.monotonic() - self._last_answer
            if quiet < QUIET_S and len(self._answered) < BACKLOG:
                await asyncio.sleep(QUIET_S - quiet)
            elif self._answered:
                self.work(per_turn)
                await asyncio.sleep(0)
            elif len(self._ready) < AHEAD and self._looked_up < len(self._requests):
                try:
                    self._look_up_next_chunk()
                except Exception as e:  # noqa: BLE001  a task's exception is never seen: the workers stop on it
                    self.failed = e
                    return
                await asyncio.sleep(0)
            elif self._on_answered is None and self._looked_up == len(self._requests):
                return  # nothing left to do in the quiet
            else:
                await asyncio.sleep(QUIET_S)

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
        while self._ready or self._looked_up < len(self._requests):
            if not self._ready:
                self._look_up_next_chunk()
                continue
            yield self._ready.popleft()

    def _look_up_next_chunk(self) -> None:
        config, requests, stats = self._config, self._requests, self._stats
        start = self._looked_up
        chunk = requests[start:start + CHUNK]
        all_keys = [[request_key(config.model, req.messages, self._params, i, self._namespace)
                     for i in range(req.first_sample, req.first_sample + req.n)] for req in chunk]
        stored = self._cache.get_many([k for keys in all_keys for k in keys])
        self._cache.alias_on_put(plain_aliases(config.model, chunk, self._params, self._namespace))
        self._looked_up += len(chunk)  # only now: a failed lookup is tried again, not skipped
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
                self._ready.append((r, missing, keys))
