"""A provider's rate limit on the loopback teacher: N requests (and T tokens) per window of S seconds.

Fixed windows, the first starting at the first request: a chat request that would pass
either limit in the current window gets a 429 with Retry-After (the seconds to the next
window) and is not counted. With `headers` (the default), every chat answer, 200 and 429
alike, says what is left as OpenAI does: `x-ratelimit-limit-requests`,
`x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests` ("350ms"), and the same for
tokens when a token limit is on. A request's tokens are counted as a provider counts them
before answering: its prompt (UTF-8 bytes / 4) plus max_tokens for each sample.
"""

from __future__ import annotations

import json
import math
import time

from kdpipe.errors import UsageError


def parse_limit(spec: str, what: str) -> tuple[int, float]:
    """"N/SECONDS" -> (N, SECONDS); UsageError naming `what` when it is not that."""
    count, _, period = spec.partition("/")
    try:
        n, s = int(count), float(period or "60")
    except ValueError:
        n, s = 0, 0.0
    if n < 1 or not 0 < s < math.inf:
        raise UsageError(f"{what} must be N/SECONDS (N at least 1, SECONDS positive), got {spec!r}")
    return n, s


def request_tokens(raw: bytes) -> int:
    try:
        body = json.loads(raw)
        prompt = len(json.dumps(body.get("messages"), ensure_ascii=False).encode("utf-8")) // 4
        return prompt + int(body.get("max_tokens") or 16) * max(1, int(body.get("n") or 1))
    except (ValueError, TypeError, AttributeError):
        return len(raw) // 4


class RateWindow:
    def __init__(self, requests: tuple[int, float] | None = None, tokens: tuple[int, float] | None = None,
                 headers: bool = True):
        self.requests, self.tokens, self.headers = requests, tokens, headers
        self._starts: dict[str, float] = {}  # kind -> when its current window began
        self._used = {"requests": 0, "tokens": 0}

    def _left(self, kind: str, now: float) -> tuple[int, float]:
        """(what is left of `kind` in its window, seconds until the window ends)."""
        limit, period = getattr(self, kind)
        start = self._starts.get(kind)
        if start is None or now >= start + period:
            self._starts[kind] = start = now if start is None else now - (now - start) % period
            self._used[kind] = 0
        return limit - self._used[kind], start + period - now

    def admit(self, raw: bytes) -> tuple[bool, dict[str, str]]:
        """Count one chat request if it fits: (admitted, the headers of its answer before it is answered)."""
        now = time.monotonic()
        cost = {"requests": 1, "tokens": request_tokens(raw) if self.tokens else 0}
        kinds = [k for k in ("requests", "tokens") if getattr(self, k)]
        state = {k: self._left(k, now) for k in kinds}
        refused = [k for k in kinds if state[k][0] < cost[k]]
        if not refused:
            for k in kinds:
                self._used[k] += cost[k]
        wait = max((state[k][1] for k in refused), default=0.0)
        extra = {"Retry-After": f"{wait:.3f}"} if refused else {}
        return not refused, {**extra, **self.describe(now)}

    def describe(self, now: float | None = None) -> dict[str, str]:
        """The x-ratelimit-* headers of an answer sent now."""
        if not self.headers:
            return {}
        now = time.monotonic() if now is None else now
        out = {}
        for kind in ("requests", "tokens"):
            if getattr(self, kind):
                left, reset = self._left(kind, now)
                out[f"x-ratelimit-limit-{kind}"] = str(getattr(self, kind)[0])
                out[f"x-ratelimit-remaining-{kind}"] = str(max(0, left))
                out[f"x-ratelimit-reset-{kind}"] = f"{max(0, round(reset * 1000))}ms"
        return out
