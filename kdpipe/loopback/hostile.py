"""The loopback teacher's hostile mode: a server that does what real ones sometimes do.

Kinds (`kdpipe teacher serve --hostile KIND`, repeatable; `running(hostile=[...])`):
    ignore_n        answer one choice whatever `n` asks (Ollama, some hosted APIs)
    echo_headers    fail with HTTP 500 whose message echoes the request headers (the key)
    no_usage        omit `usage`
    usage_list      `usage` is a list
    usage_string    `usage` is a string
    usage_nan       `usage` counts are NaN
    null_choice     `choices: [null]`
    string_message  the choice's `message` is a string
    lone_surrogate  the content ends with a lone surrogate (valid JSON, not valid Unicode)
`ignore_n` applies to every request; the other kinds take turns, request by
request, so one run meets all that were asked for. Besides: `unauthorized_after`
K answers every request after the K-th with a 401 (a key revoked mid-run), and
`hang_after` K lets every request after the K-th hang (for kill tests).
"""

from __future__ import annotations

import asyncio
import json

HOSTILE = ("ignore_n", "echo_headers", "no_usage", "usage_list", "usage_string", "usage_nan",
           "null_choice", "string_message", "lone_surrogate")
_USAGE = {"no_usage": None, "usage_list": [1, 2], "usage_string": "lots",
          "usage_nan": {"prompt_tokens": float("nan"), "completion_tokens": float("nan")}}


def check_hostile(kinds: list[str]) -> list[str]:
    """The problems with a list of hostile kinds (unknown names)."""
    return [f"unknown hostile kind {k!r} (known: {', '.join(HOSTILE)})" for k in kinds if k not in HOSTILE]


def _turn(teacher) -> str | None:
    kinds = [k for k in teacher.hostile if k != "ignore_n"]
    if not kinds:
        return None
    teacher.stats["hostile_turns"] += 1
    return kinds[(teacher.stats["hostile_turns"] - 1) % len(kinds)]


async def before(teacher, headers: dict, body: dict):
    """A hostile reply to send instead of an answer, or None (and `body` adjusted) to answer."""
    count = teacher.stats["requests"]
    if teacher.unauthorized_after is not None and count > teacher.unauthorized_after:
        return 401, {}, b'{"error": {"message": "Incorrect API key provided"}}'
    if teacher.hang_after is not None and count > teacher.hang_after:
        await asyncio.sleep(3600)  # cancelled when the client hangs up
    if "ignore_n" in teacher.hostile:
        body["n"] = 1
    kind = _turn(teacher)
    if kind == "echo_headers":
        echoed = "; ".join(f"{k}: {v}" for k, v in headers.items())
        return 500, {}, json.dumps({"error": {"message": f"upstream failed for request with {echoed}"}}).encode()
    body["_hostile"] = kind
    return None


def mangle(reply: dict, kind: str | None) -> dict:
    """The answer `reply` as a hostile server of this kind would shape it."""
    if kind in _USAGE:
        if _USAGE[kind] is None:
            reply.pop("usage", None)
        else:
            reply["usage"] = _USAGE[kind]
    elif kind == "null_choice":
        reply["choices"] = [None]
    elif kind == "string_message":
        reply["choices"] = [{**c, "message": c["message"]["content"]} for c in reply["choices"]]
    elif kind == "lone_surrogate":
        for c in reply["choices"]:
            c["message"]["content"] += "\ud800"
    return reply
