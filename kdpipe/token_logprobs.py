"""The teacher's per-token log-probabilities as a sample stores them, and as the API sends them.

An OpenAI-compatible endpoint asked for `logprobs: true, top_logprobs: K`
answers, per completion token, {token, logprob, bytes, top_logprobs: [{token,
logprob, bytes}, ...]}. Stored as-is that is ~60 bytes of keys per
alternative; a sample keeps parallel lists instead (one record line stays
readable and a 10k-question run stays a file one can open):

    tokens        [str]          the sampled tokens, in order
    logprobs      [float]        each one's logprob
    top_tokens    [[str]]        per position, the top-K alternatives, most likely first
    top_logprobs  [[float]]      their logprobs
    bytes         [[int] | null] only when some token's text is not its bytes (a token that
                                 splits a UTF-8 character): that token's bytes, else null
    top_bytes     [[[int] | null]]  the same for the alternatives, only when one needs it

Logprobs are rounded to DIGITS decimals: 1e-4 in log space is 0.01 % of a probability.
"""

from __future__ import annotations

import math
from typing import Any

MAX_TOP = 20  # the most top_logprobs the OpenAI API allows
DIGITS = 4
KEYS = ("tokens", "logprobs", "top_tokens", "top_logprobs")


def _lp(value: Any) -> float:
    x = float(value)
    if math.isnan(x) or x > 0:
        raise ValueError(f"logprob {value!r} is not a number at most 0")
    # -inf (a token the model gives no mass) has no JSON form: a very small number stands in for it.
    return round(max(x, -9999.0), DIGITS)


def from_api(logprobs: Any) -> dict[str, list] | None:
    """A choice's `logprobs` object as the stored form; None when it holds no per-token list.
    Raises ValueError on a malformed one."""
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")
    if content is None:
        content = logprobs.get("refusal")  # OpenAI puts a declined answer's tokens there
    if content is None:
        return None
    if not isinstance(content, list):
        raise ValueError("logprobs.content is not a list")
    out: dict[str, list] = {k: [] for k in KEYS}
    raw_bytes: list = []
    top_bytes: list = []
    for pos, item in enumerate(content):
        if not isinstance(item, dict) or not isinstance(item.get("token"), str):
            raise ValueError(f"logprobs.content[{pos}] has no token text")
        top = item.get("top_logprobs") or []
        if not isinstance(top, list) or not all(isinstance(t, dict) and isinstance(t.get("token"), str)
                                                for t in top):
            raise ValueError(f"logprobs.content[{pos}].top_logprobs is not a list of tokens")
        try:
            out["logprobs"].append(_lp(item.get("logprob")))
            alts = sorted(((t["token"], _lp(t.get("logprob")), _odd_bytes(t)) for t in top), key=lambda a: -a[1])
        except (TypeError, ValueError) as e:
            raise ValueError(f"logprobs.content[{pos}]: {e}") from None
        out["tokens"].append(item["token"])
        out["top_tokens"].append([a[0] for a in alts])
        out["top_logprobs"].append([a[1] for a in alts])
        raw_bytes.append(_odd_bytes(item))
        top_bytes.append([a[2] for a in alts])
    if any(b is not None for b in raw_bytes):
        out["bytes"] = raw_bytes
    if any(b is not None for row in top_bytes for b in row):
        out["top_bytes"] = top_bytes
    return out


def _odd_bytes(item: dict) -> list[int] | None:
    """A token's bytes when its text does not say them exactly, else None."""
    b = item.get("bytes")
    return b if isinstance(b, list) and bytes_differ(item["token"], b) else None


def bytes_differ(text: str, raw: list) -> bool:
    try:
        return bytes(raw) != text.encode("utf-8")
    except (TypeError, ValueError):
        return False


def problem(d: Any) -> str | None:
    """What is wrong with a stored logprobs object, or None."""
    if not isinstance(d, dict):
        return "must be an object"
    missing = [k for k in KEYS if not isinstance(d.get(k), list)]
    if missing:
        return f"needs list field(s) {', '.join(missing)}"
    extra = set(d) - set(KEYS) - {"bytes", "top_bytes"}
    if extra:
        return f"unknown field(s) {', '.join(sorted(extra))}"
    n = len(d["tokens"])
    lists = [d[k] for k in KEYS] + [d[k] for k in ("bytes", "top_bytes") if k in d]
    if any(len(x) != n for x in lists):
        return "its lists differ in length"
    for pos, (tt, tl) in enumerate(zip(d["top_tokens"], d["top_logprobs"])):
        if not isinstance(tt, list) or not isinstance(tl, list) or len(tt) != len(tl):
            return f"top_tokens[{pos}] and top_logprobs[{pos}] differ in length"
        if "top_bytes" in d and (not isinstance(d["top_bytes"][pos], list) or len(d["top_bytes"][pos]) != len(tt)):
            return f"top_bytes[{pos}] does not match top_tokens[{pos}]"
    return None


def top_k(d: dict[str, list]) -> int:
    """The K the alternatives were asked with (the longest list of them)."""
    return max((len(t) for t in d["top_tokens"]), default=0)
