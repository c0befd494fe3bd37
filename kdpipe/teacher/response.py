"""Reading a chat completion response, whatever its shape, into cache entries and Completions.

A server may send anything: `usage` as a list, a string or NaN, `choices: [null]`,
a `message` that is a string, text with a lone surrogate. None of it may crash
a run, because the answer has been paid for: each choice becomes a cache entry
as received (`entries_from`), and reading an entry back (`from_stored`, used
for fresh answers and cache hits alike) turns an odd one into a Completion
with error "malformed" and a detail saying what was odd. So a rerun reads the
same entry the same way and pays nothing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from kdpipe.outputs import scrub
from kdpipe.token_logprobs import from_api

MALFORMED = "malformed"
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass
class Completion:
    """One sample's outcome: a text (possibly empty or truncated) or an error."""

    index: int
    text: str | None = None
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cached: bool = False
    # "transport": no response after all retries; "malformed": a response of unexpected shape;
    # "not_sent": kept back by --max-usd or a dry run.
    error: str | None = None
    detail: str | None = None
    logprobs: dict | None = None  # per-token logprobs in the stored form (kdpipe/token_logprobs.py)


def tokens(value: Any) -> int | None:
    """A token count as the server reported it, or None when it is not a count."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return int(value)
    return None


def usage_of(response: Any) -> tuple[int, int] | None:
    """(prompt tokens, completion tokens) of a response, or None when it did not say."""
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt, completion = tokens(usage.get("prompt_tokens")), tokens(usage.get("completion_tokens"))
    return None if prompt is None or completion is None else (prompt, completion)


def choices_of(response: Any) -> list:
    choices = response.get("choices") if isinstance(response, dict) else None
    return choices if isinstance(choices, list) else []


def entries_from(response: Any, count: int,
                 want_logprobs: bool = False) -> tuple[list[dict[str, Any]], tuple[int, int] | None]:
    """The cache entries of the first `count` choices of a response, and its usage (None: unknown).

    The request's usage is split over its samples so that summing samples gives the bill. With
    `want_logprobs`, each entry keeps the choice's per-token logprobs in the stored form (a
    malformed logprobs object makes the entry malformed, kept as received)."""
    choices = choices_of(response)[:count]
    usage = usage_of(response)
    entries = []
    for j, choice in enumerate(choices):
        share: dict[str, int] = {}
        if usage is not None:
            prompt, completion = usage
            share = {"prompt_tokens": prompt if j == 0 else 0,
                     "completion_tokens": completion // len(choices) + (completion % len(choices) if j == 0 else 0)}
        entry = _entry(choice)
        if want_logprobs and MALFORMED not in entry:
            entry = _with_logprobs(entry, choice)
        entries.append({**entry, "usage": share})
    return entries, usage


def _with_logprobs(entry: dict[str, Any], choice: dict) -> dict[str, Any]:
    try:
        logprobs = from_api(choice.get("logprobs"))
    except ValueError as e:
        return {MALFORMED: f"malformed logprobs: {e}", "received": choice}
    return entry if logprobs is None else {**entry, "logprobs": logprobs}


def lacks_logprobs(entry: Any) -> bool:
    """An answer with text but no logprobs, from a request that asked for them."""
    return isinstance(entry, dict) and MALFORMED not in entry and bool(entry.get("text")) \
        and entry.get("logprobs") is None


def completions_from(response: dict, indices: list[int], stats,
                     want_logprobs: bool = False) -> list[tuple[Completion, dict]]:
    """A chat completion response as (Completion, cache entry) for the first len(choices) of
    `indices`; its usage is added to `stats`. Never raises, whatever the response's shape."""
    entries, usage = entries_from(response, len(indices), want_logprobs)
    if usage is None:
        stats.no_usage += 1
    else:
        stats.prompt_tokens += usage[0]
        stats.completion_tokens += usage[1]
    return [(from_stored(i, entry), entry) for i, entry in zip(indices, entries)]


def _entry(choice: Any) -> dict[str, Any]:
    if not isinstance(choice, dict):
        return {MALFORMED: f"a choice is {_kind(choice)}, not an object", "received": choice}
    message = choice.get("message")
    if not isinstance(message, dict):
        return {MALFORMED: f"the choice's message is {_kind(message)}, not an object", "received": choice}
    # OpenAI puts a declined answer in `refusal`, with no content: the parser calls it a refusal.
    text = message.get("content") if message.get("content") is not None else message.get("refusal")
    if text is not None and not isinstance(text, str):
        return {MALFORMED: f"the message content is {_kind(text)}, not a string", "received": choice}
    finish = choice.get("finish_reason")
    return {"text": text, "finish_reason": finish if isinstance(finish, str) else None}


def from_stored(index: int, entry: Any, cached: bool = False) -> Completion:
    """The Completion of a cache entry (fresh or stored by an earlier run); never raises."""
    if not isinstance(entry, dict):
        return Completion(index, cached=cached, error=MALFORMED, detail="the cache entry is not an object")
    raw_usage = entry.get("usage")
    usage = {k: tokens(v) for k, v in raw_usage.items() if tokens(v) is not None} \
        if isinstance(raw_usage, dict) else {}
    if MALFORMED in entry:
        return Completion(index, usage=usage, cached=cached, error=MALFORMED,
                          detail=scrub(f"unexpected response: {entry[MALFORMED]}"))
    text, finish = entry.get("text"), entry.get("finish_reason")
    if text is not None and not isinstance(text, str):
        return Completion(index, usage=usage, cached=cached, error=MALFORMED,
                          detail=f"unexpected cache entry: text is {_kind(text)}")
    if text is not None:
        # A lone surrogate cannot be written as UTF-8; the cache keeps what was received.
        text = _LONE_SURROGATE.sub("\ufffd", text)
    logprobs = entry.get("logprobs")
    return Completion(index, text, finish if isinstance(finish, str) else None, usage, cached,
                      logprobs=logprobs if isinstance(logprobs, dict) else None)


def _kind(value: Any) -> str:
    return "null" if value is None else {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
                                         int: "a number", float: "a number"}.get(type(value), type(value).__name__)
