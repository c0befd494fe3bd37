"""Teacher prices, in US dollars per million tokens, and cost estimates.

The one place prices live. `--price-in/--price-out` override the table for a
model it does not know (or a negotiated price), and a price file (`--prices`
or $KDPIPE_PRICES, JSON or TOML) adds or replaces entries. Prices are list
prices for standard requests as published by the vendors; the Batch API bills
BATCH_SHARE of them unless the file says otherwise. Check them before relying
on an estimate: they change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    input: float  # USD per million prompt tokens
    output: float  # USD per million completion tokens

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1e6

    def batch(self) -> "Price":
        """The Batch API price: BATCH_SHARE of this one."""
        return Price(self.input * BATCH_SHARE, self.output * BATCH_SHARE)


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


# ------------------------------------------------------------------ batch prices and price files

# The OpenAI Batch API bills half the standard price (input and output). A price file
# can give other batch prices per model ("batch_input", "batch_output").
BATCH_SHARE = 0.5
PRICES_ENV = "KDPIPE_PRICES"


def load_price_file(path) -> tuple[dict[str, Price], dict[str, Price]]:
    """A price file: JSON (or TOML on Python 3.11+) mapping a model id prefix to
    {"input": USD/M, "output": USD/M, "batch_input": ..., "batch_output": ...} (batch optional).
    Returns (standard prices, batch prices); raises InputError naming every bad entry."""
    import json
    from pathlib import Path

    from kdpipe.errors import InputError

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(path, f"cannot read the price file: {e.strerror}") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib  # Python 3.11+

            table = tomllib.loads(raw.decode("utf-8"))
        else:
            table = json.loads(raw)
    except ImportError:
        raise InputError(path, "TOML price files need Python 3.11 or later; use JSON") from None
    except ValueError as e:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
        raise InputError(path, f"not a valid price file: {e}") from None
    if not isinstance(table, dict):
        raise InputError(path, "a price file maps model names to {input, output} prices")
    standard, batch, problems = {}, {}, []
    for model, entry in table.items():
        fields = entry if isinstance(entry, dict) else {}
        unknown = set(fields) - {"input", "output", "batch_input", "batch_output"}
        numbers = {k: v for k, v in fields.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not isinstance(entry, dict) or unknown or "input" not in numbers or "output" not in numbers \
                or len(numbers) != len(fields) or any(v < 0 for v in numbers.values()):
            problems.append(f"{model!r} needs non-negative numbers 'input' and 'output' "
                            "(and optionally 'batch_input', 'batch_output'), nothing else")
            continue
        key = model.lower()
        standard[key] = Price(float(numbers["input"]), float(numbers["output"]))
        if "batch_input" in numbers or "batch_output" in numbers:
            half = standard[key].batch()
            batch[key] = Price(float(numbers.get("batch_input", half.input)),
                               float(numbers.get("batch_output", half.output)))
    if problems:
        raise InputError(path, "; ".join(problems))
    return standard, batch


def resolve_price(model: str, price_in: float | None = None, price_out: float | None = None,
                  prices_file=None, batch: bool = False) -> Price | None:
    """The price a run is billed at: --price-in/--price-out, else the price file, else the
    built-in table; with `batch`, the file's batch price or BATCH_SHARE of the standard one.
    One flag alone overrides its side only: the other comes from the file or table, and a
    model neither knows is a UsageError (a missing side is never taken as free)."""
    table, batch_table = dict(PRICES), {}
    if prices_file:
        file_prices, batch_table = load_price_file(prices_file)
        table.update(file_prices)
    match = _longest_prefix(model, table)
    standard = table[match] if match else None
    if price_in is not None or price_out is not None:
        if standard is None and (price_in is None or price_out is None):
            from kdpipe.errors import UsageError

            given, missing = ("--price-in", "--price-out") if price_out is None else ("--price-out", "--price-in")
            raise UsageError(f"{given} without {missing}: {model!r} is not in the price table or price file, "
                             f"so give {missing} too")
        standard = Price(standard.input if price_in is None else price_in,
                         standard.output if price_out is None else price_out)
        match = None  # the flags' price: the batch share of it, not the file's batch entry
    if standard is None or not batch:
        return standard
    return batch_table.get(match) or standard.batch()


def prices_file_from_env(prices_file=None):
    """--prices, else $KDPIPE_PRICES, else None."""
    import os
    from pathlib import Path

    if prices_file:
        return Path(prices_file)
    return Path(os.environ[PRICES_ENV]) if os.environ.get(PRICES_ENV) else None


def _longest_prefix(model: str, table: dict) -> str | None:
    name = model.rsplit("/", 1)[-1].lower()  # "openai/gpt-4o" on routers
    matches = [p for p in table if name.startswith(p)]
    return max(matches, key=len) if matches else None
