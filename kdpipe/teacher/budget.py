"""--max-usd: a spending cap the teacher client checks before every request it sends.

Each request is admitted only if what was spent, plus the worst case of every
request in flight, plus this request's worst case stays within the cap. The
worst case is the upper bound of the prompt's tokens (see estimate.py) for
each sample plus --max-tokens per sample, so the cap is never passed while
the prompt bound holds. A request that does not fit while others are in
flight waits for them to come back (their reservations become what they
really cost, usually far less) and is checked again; the run stops only
when nothing is in flight and the request still does not fit, so it stops
less than one request's worst case short of the cap. A response without a
usable `usage` (some servers omit it, some send nonsense) is counted at its
worst case, so the cap holds with every server that honours --max-tokens. A Batch API run
reserves a whole batch at once and stops at the first line that does not fit.
`earlier` is what other runs sharing the cap already spent (generate --spend-ledger): the
cap then holds for all of them together.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from kdpipe.teacher.pricing import Price

NOT_SENT = "not_sent"  # the Sample/Completion error of a request the cap kept back


@dataclass
class Budget:
    max_usd: float
    price: Price
    max_tokens: int
    counter: object  # a token counter of estimate.py
    spent: float = 0.0  # USD billed for responses received in this run
    earlier: float = 0.0  # USD spent under the same cap by earlier runs (a spending ledger)
    reserved: float = 0.0  # worst-case USD of requests in flight
    stopped: bool = False
    refused: int = 0  # requests not sent

    in_flight: int = 0  # requests admitted and not yet settled
    _settled: tuple | None = field(default=None, repr=False)  # (event loop, asyncio.Event) of waiters

    def worst_case(self, messages: list[dict], n: int) -> float:
        _, _, high = self.counter.count(messages)
        return self.price.cost(high * n, self.max_tokens * n)

    def _fits(self, worst: float) -> bool:
        return self.earlier + self.spent + self.reserved + worst <= self.max_usd + 1e-12

    def _reserve(self, worst: float) -> float:
        self.reserved += worst
        self.in_flight += 1
        return worst

    def _refuse(self) -> None:
        self.stopped = True
        self.refused += 1

    def admit(self, messages: list[dict], n: int) -> float | None:
        """Reserve a request's worst case and return it; None (and stop for good) when it
        would take spent + in flight past the cap. For a batch: it never waits."""
        worst = self.worst_case(messages, n)
        if self.stopped or not self._fits(worst):
            self._refuse()
            return None
        return self._reserve(worst)

    async def wait_admit(self, messages: list[dict], n: int) -> float | None:
        """admit() for concurrent online requests: while others are in flight, a request that
        does not fit waits for them to settle and is checked again; None (and stop for good)
        only when nothing is in flight and it still does not fit."""
        worst = self.worst_case(messages, n)
        while not self.stopped:
            if self._fits(worst):
                return self._reserve(worst)
            if self.in_flight == 0:
                break
            await self._event().wait()
        self._refuse()
        return None

    def settle(self, reservation: float, prompt_tokens: int, completion_tokens: int,
               usage_known: bool = True) -> None:
        """A request came back (or failed): its reservation becomes what it really cost, or
        stays spent in full when a response did not say what it cost (no usable `usage`)."""
        self.reserved -= reservation
        self.in_flight -= 1
        self.spent += self.price.cost(prompt_tokens, completion_tokens) if usage_known else reservation
        if self._settled is not None:  # wake every waiting request to check again
            self._settled[1].set()
            self._settled = None

    def _event(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._settled is None or self._settled[0] is not loop:  # each asyncio.run has its own loop
            self._settled = (loop, asyncio.Event())
        return self._settled[1]

    def detail(self) -> str:
        return (f"not sent: --max-usd {self.max_usd:g} reached; rerun with a higher --max-usd to send it "
                "(answers already paid for come from the cache)")
