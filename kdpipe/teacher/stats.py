"""The teacher client's running totals, read by the progress line and the summaries."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Stats:
    """Running totals for the progress line and the summary."""

    total: int = 0  # samples asked for
    done: int = 0
    cached: int = 0
    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    errors: int = 0  # samples that ended with a transport error
    not_sent: int = 0  # samples a --max-usd budget kept back
    duplicates: int = 0  # samples asked twice in one run: sent once
    no_usage: int = 0  # responses without a usable `usage`: --max-usd counted their worst case
    prompt_tokens: int = 0  # spent in this run (cache hits cost nothing)
    completion_tokens: int = 0
    replicas: dict = field(default_factory=dict)  # host -> requests, ok, failed, set_aside (several --base-url)
    limits: dict = field(default_factory=dict)  # 429s seen and the in-flight window (--adaptive, --rpm, --tpm)
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.started
