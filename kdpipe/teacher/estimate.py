"""What a teacher run will cost, before it is sent: tokens in, tokens out, dollars, as ranges.

Prompt tokens are counted with a tokenizer file when one is given
(`--tokenizer tokenizer.json`, a Hugging Face `tokenizers` file of the
teacher's tokenizer), else estimated from the UTF-8 size of the messages:

    estimate  bytes / 4 + 4 per message + 3        (English text with GPT-style BPE)
    bounds    bytes / 6  ..  bytes / 2.5 + 4 per message + 3

The bounds hold for text in Latin script with GPT-style BPE tokenizers (and
for the loopback teacher, which bills characters / 4); other scripts can run
past the upper bound: give --tokenizer for them. No tokenizer is downloaded:
tiktoken's encodings come from the internet at first use, so it is not used. Completion tokens are bounded by
--max-tokens per sample (the API never bills more); the expected number is
the mean of earlier answers from the same model in the cache when it has
some, else --max-tokens itself (an upper estimate).

A request whose samples are all in the cache costs nothing and is counted
apart. Prompt tokens are billed once per call: the estimate assumes the
endpoint honours `n`, the upper bound that it does not (one call per sample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from kdpipe.errors import InputError
from kdpipe.teacher.cache import ResponseCache, request_key
from kdpipe.teacher.client import ChatRequest, TeacherConfig
from kdpipe.teacher.identity import cache_namespace
from kdpipe.teacher.pricing import Price

PER_MESSAGE = 4  # role and separators around each message in the chat format
PER_REPLY = 3  # the tokens that prime the assistant's reply
BYTES_PER_TOKEN = 4.0
BYTES_PER_TOKEN_MAX = 6.0  # dense English prose: fewest tokens
BYTES_PER_TOKEN_MIN = 2.5  # digits, code, symbols: most tokens
OBSERVED_ANSWERS = 2000  # how many recent cached answers the output mean is taken over


class ByteCounter:
    """Prompt tokens estimated from UTF-8 bytes (see the module doc for the rule and bounds)."""

    name = "estimate: UTF-8 bytes / 4 (bounds bytes/6 .. bytes/2.5)"

    def count(self, messages: list[dict]) -> tuple[int, int, int]:
        size = sum(len(str(m.get("content") or "").encode("utf-8")) for m in messages)
        overhead = PER_MESSAGE * len(messages) + PER_REPLY
        return (math.floor(size / BYTES_PER_TOKEN_MAX), math.ceil(size / BYTES_PER_TOKEN) + overhead,
                math.ceil(size / BYTES_PER_TOKEN_MIN) + overhead)


class TokenizerCounter:
    """Prompt tokens counted with the teacher's own tokenizer (a `tokenizers` JSON file);
    the chat format's overhead is the only uncertainty."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer

        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises its own Exception type for a bad file
            raise InputError(path, f"not a tokenizers JSON file: {str(e).splitlines()[0][:200]}") from None
        self.name = f"counted with {Path(path).name}"

    def count(self, messages: list[dict]) -> tuple[int, int, int]:
        texts = [str(m.get("content") or "") for m in messages]
        tokens = sum(len(e.ids) for e in self._tokenizer.encode_batch(texts, add_special_tokens=False))
        overhead = PER_MESSAGE * len(messages) + PER_REPLY
        return tokens, tokens + overhead, tokens + 2 * overhead


def token_counter(tokenizer: str | Path | None):
    return TokenizerCounter(tokenizer) if tokenizer else ByteCounter()


@dataclass
class Estimate:
    """The dry run's numbers: each token and cost figure as (low, expected, high)."""

    requests: int = 0  # requests that would be sent
    samples: int = 0  # samples they ask for
    cached_requests: int = 0  # requests the cache answers whole: free
    cached_samples: int = 0
    prompt_tokens: list[int] = field(default_factory=lambda: [0, 0, 0])
    completion_tokens: list[int | None] = field(default_factory=lambda: [0, 0, 0])
    counting: str = ""  # how prompt tokens were counted
    output_basis: str = ""  # where the expected completion length comes from
    price: Price | None = None
    batch: bool = False

    @property
    def cost(self) -> list[float | None] | None:
        """(low, expected, high) in USD; high is None without --max-tokens; None without a price."""
        if self.price is None:
            return None
        return [None if c is None else self.price.cost(p, c)
                for p, c in zip(self.prompt_tokens, self.completion_tokens)]

    def to_dict(self) -> dict:
        return {"requests": self.requests, "samples": self.samples, "cached_requests": self.cached_requests,
                "cached_samples": self.cached_samples, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost_usd": self.cost, "counting": self.counting,
                "output_basis": self.output_basis, "batch": self.batch,
                "price": None if self.price is None else {"input": self.price.input, "output": self.price.output}}


def estimate(config: TeacherConfig, requests: list[ChatRequest], cache: ResponseCache, counter,
             price: Price | None, batch: bool = False) -> Estimate:
    """The cost of sending `requests` now: what the cache lacks, priced at `price`."""
    params = config.sampling_params()
    mean, seen = observed_completion_mean(cache, config.model)
    cap = config.max_tokens
    if mean is not None:
        expected_out = min(mean, cap) if cap else mean
        basis = f"mean of {seen} earlier answers from {config.model} in the cache"
    else:
        expected_out = cap
        basis = "--max-tokens (no earlier answers in the cache: an upper estimate)"
    e = Estimate(counting=counter.name, output_basis=basis, price=price, batch=batch)
    low_in = mid_in = high_in = 0
    mid_out = 0.0
    namespace = cache_namespace(config.resolved_base_url())
    keys = [[request_key(config.model, req.messages, params, i, namespace)
             for i in range(req.first_sample, req.first_sample + req.n)] for req in requests]
    stored = cache.get_many([k for ks in keys for k in ks])
    for req, req_keys in zip(requests, keys):
        indices = range(req.first_sample, req.first_sample + req.n)
        missing = [i for i, k in zip(indices, req_keys) if k not in stored]
        e.cached_samples += req.n - len(missing)
        if not missing:
            e.cached_requests += 1
            continue
        e.requests += 1
        e.samples += len(missing)
        low, mid, high = counter.count(req.messages)
        calls = _batch_lines(missing) if batch else 1  # a batch line cannot ask for gaps
        low_in, mid_in, high_in = low_in + low * calls, mid_in + mid * calls, high_in + high * len(missing)
        mid_out += (expected_out or 0) * len(missing)
    e.prompt_tokens = [low_in, mid_in, high_in]
    e.completion_tokens = [0, round(mid_out) if expected_out is not None else None,
                           cap * e.samples if cap else None]
    return e


def _batch_lines(indices: list[int]) -> int:
    """Contiguous runs of sample indices: one batch line each."""
    return sum(1 for k, i in enumerate(indices) if k == 0 or indices[k - 1] != i - 1)


def observed_completion_mean(cache: ResponseCache, model: str) -> tuple[float | None, int]:
    """Mean completion tokens per sample over the model's most recent cached answers."""
    counts = []
    for response in cache.recent(model, OBSERVED_ANSWERS):
        usage = response.get("usage") or {}
        if isinstance(usage.get("completion_tokens"), int):
            counts.append(usage["completion_tokens"])
    return (sum(counts) / len(counts), len(counts)) if counts else (None, 0)


def describe_estimate(e: Estimate, max_tokens: int | None) -> list[str]:
    """The dry run's report, one line per figure."""
    def rng(values, fmt):
        low, mid, high = values
        return f"{fmt(mid)} (range {fmt(low)} .. {fmt(high) if high is not None else 'unbounded'})"

    tokens = lambda n: "?" if n is None else f"{n:,}"
    lines = [f"requests to send: {e.requests:,} ({e.samples:,} samples); "
             f"answered by the cache: {e.cached_requests:,} requests ({e.cached_samples:,} samples, free)",
             f"input tokens: {rng(e.prompt_tokens, tokens)} [{e.counting}]",
             f"output tokens: {rng(e.completion_tokens, tokens)} "
             f"[expected from {e.output_basis}; at most --max-tokens {max_tokens} per sample]"]
    if e.cost is None:
        lines.append("cost: unknown price for this model: give --price-in/--price-out or --prices FILE")
    else:
        kind = "Batch API price" if e.batch else "price"
        lines.append(f"cost: {rng(e.cost, lambda c: '?' if c is None else f'${c:.4f}')} "
                     f"[{kind} ${e.price.input:g} in / ${e.price.output:g} out per million tokens]")
    return lines
