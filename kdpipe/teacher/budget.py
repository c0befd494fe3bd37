"""--max-usd: a spending cap the teacher client checks before every request it sends.

Each request is admitted only if what was spent, plus the worst case of every
request in flight, plus this request's worst case stays within the cap. The
worst case is the upper bound of the prompt's tokens (see estimate.py) for
each sample plus --max-tokens per sample, so the cap is never passed while
the prompt bound holds. When a request is refused, no further request is
sent; those in flight finish and are paid, so a run stops within one round
of in-flight requests (--concurrency of them, or one batch) of its cap.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdpipe.teacher.pricing import Price

NOT_SENT = "not_sent"  # the Sample/Completion error of a request the cap kept back


@dataclass
class Budget:
    max_usd: float
    price: Price
    max_tokens: int
    counter: object  # a token counter of estimate.py
    spent: float = 0.0  # USD billed for responses received in this run
    reserved: float = 0.0  # worst-case USD of requests in flight
    stopped: bool = False
    refused: int = 0  # requests not sent

    def worst_case(self, messages: list[dict], n: int) -> float:
        _, _, high = self.counter.count(messages)
        return self.price.cost(high * n, self.max_tokens * n)

    def admit(self, messages: list[dict], n: int) -> float | None:
        """Reserve a request's worst case and return it; None (and stop for good) when it
        would take spent + in flight past the cap."""
        worst = self.worst_case(messages, n)
        if self.stopped or self.spent + self.reserved + worst > self.max_usd + 1e-12:
            self.stopped = True
            self.refused += 1
            return None
        self.reserved += worst
        return worst

    def settle(self, reservation: float, prompt_tokens: int, completion_tokens: int) -> None:
        """A request came back (or failed): its reservation becomes what it really cost."""
        self.reserved -= reservation
        self.spent += self.price.cost(prompt_tokens, completion_tokens)

    def detail(self) -> str:
        return (f"not sent: --max-usd {self.max_usd:g} reached; rerun with a higher --max-usd to send it "
                "(answers already paid for come from the cache)")
