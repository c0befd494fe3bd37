"""A one-line progress display for teacher runs: done/total, rate, retries, errors, tokens, cost."""

from __future__ import annotations

import sys
import time

from kdpipe.teacher.client import Stats
from kdpipe.teacher.pricing import Price
from kdpipe.teacher.replicas import describe_replicas


def describe(stats: Stats, price: Price | None) -> str:
    """The progress/summary text for a run so far: of the samples done, how many the teacher
    answered now ("sent"), how many the cache answered and how many were kept back; the rate
    counts sent samples only (the cache answers thousands a second)."""
    elapsed = max(stats.elapsed(), 1e-9)
    sent = stats.done - stats.cached - stats.not_sent
    cost = f"${price.cost(stats.prompt_tokens, stats.completion_tokens):.4f}" if price else "$? (unknown price)"
    not_sent = f", {stats.not_sent} not sent (--max-usd)" if stats.not_sent else ""
    rate = f"{sent / elapsed:.1f}/s" if sent else "-/s"
    return (f"{stats.done}/{stats.total} samples: {sent} sent, {stats.cached} cached{not_sent}; {rate}, "
            f"{stats.retries} retries, {stats.errors} errors, "
            f"tokens {_k(stats.prompt_tokens)} in / {_k(stats.completion_tokens)} out, {cost}"
            + (f"; replicas {describe_replicas(stats.replicas)}" if stats.replicas else ""))


def _k(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


class ProgressLine:
    """Call with Stats as often as you like; redraws a terminal line at most 4 times a second
    (a plain line every 15 s when stderr is not a terminal)."""

    def __init__(self, label: str, price: Price | None, quiet: bool = False, stream=None):
        self.label, self.price, self.quiet = label, price, quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        # On a terminal draw at once; in a log, write the first line after 15 s, so short runs
        # leave only their summary.
        self._last = 0.0 if self.tty else time.monotonic()
        self._drawn = False

    def set_price(self, price: Price | None) -> None:
        """The price to show the cost at, once the run knows it."""
        self.price = price

    def __call__(self, stats: Stats) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if now - self._last < (0.25 if self.tty else 15.0):
            return
        self._last = now
        line = f"{self.label}: {describe(stats, self.price)}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
