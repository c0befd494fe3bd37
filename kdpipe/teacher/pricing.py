"""Teacher prices, in US dollars per million tokens, and cost estimates.

The one place prices live. `--price-in/--price-out` override the table for a
model it does not know (or a negotiated price). Prices are list prices for
standard (non-batch) requests as published by the vendors; check them before
relying on an estimate, they change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    input: float  # USD per million prompt tokens
    output: float  # USD per million completion tokens

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1e6


# Model id prefix -> price. The longest matching prefix wins ("gpt-4o-mini" before "gpt-4o").
PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "o4-mini": Price(1.10, 4.40),
    "deepseek-chat": Price(0.27, 1.10),
    "deepseek-reasoner": Price(0.55, 2.19),
    "loopback": Price(0.0, 0.0),
}


def price_for(model: str, price_in: float | None = None, price_out: float | None = None) -> Price | None:
    """The price of a model: the flags when given, else the table; None when unknown."""
    if price_in is not None or price_out is not None:
        return Price(price_in or 0.0, price_out or 0.0)
    name = model.rsplit("/", 1)[-1].lower()  # "openai/gpt-4o" on routers
    matches = [p for p in PRICES if name.startswith(p)]
    return PRICES[max(matches, key=len)] if matches else None
