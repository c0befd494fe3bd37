"""The options of `kdpipe teacher serve` (the loopback teacher), declared once for the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdpipe.errors import UsageError
from kdpipe.options import Options, option

FAULTS = ("rate_limit", "server_error", "malformed", "hang", "truncated", "empty")


@dataclass
class ServeOptions(Options):
    host: str = option("127.0.0.1", "Address to listen on.")
    port: int = option(8765, "Port (0: any free port).")
    script: list[Path] | None = option(None, "Scripted answers, JSONL {question, completions, expand} "
                                             "(repeatable).")
    latency: float = option(0.0, "Seconds before each answer.")
    fault_rate: list[str] | None = option(None, "KIND=RATE, repeatable; kinds: rate_limit, server_error, "
                                                "malformed, hang, truncated, empty.")
    retry_after: float = option(1.0, "Retry-After seconds sent with a 429.")
    fault_seed: int = option(0, "Seed of the fault draws.")
    hostile: list[str] | None = option(None, "KIND, repeatable: behave as a hostile server does; kinds: ignore_n, "
                                             "echo_headers, no_usage, usage_list, usage_string, usage_nan, "
                                             "null_choice, string_message, lone_surrogate (all but ignore_n take "
                                             "turns).")
    unauthorized_after: int | None = option(None, "Answer 401 to every request after the K-th.")
    hang_after: int | None = option(None, "Let every request after the K-th hang.")
    rate_limit: str | None = option(None, "N/SECONDS: admit at most N chat requests per SECONDS-long window, a "
                                          "429 with Retry-After past it, as a provider's rate limit does.")
    token_limit: str | None = option(None, "N/SECONDS: the same for tokens (prompt bytes/4 plus max_tokens per "
                                           "sample).")
    limit_headers: bool = option(True, "With --rate-limit/--token-limit, say what is left in x-ratelimit-* "
                                       "headers on every answer, as OpenAI does.",
                                 flags="--limit-headers/--no-limit-headers")
    ready_file: Path | None = option(None, "Write the base URL here once listening.")
    model: Path | None = option(None, "Serve this local Hugging Face causal LM instead of a script: real "
                                      "sampling (greedy at temperature 0) and real logprobs.")

    def problems(self) -> list[str]:
        from kdpipe.loopback.hostile import check_hostile

        problems = check_hostile(self.hostile or [])
        if any(k is not None and k < 0 for k in (self.unauthorized_after, self.hang_after)):
            problems.append("--unauthorized-after and --hang-after must not be negative")
        if not 0 <= self.port <= 65535:
            problems.append("--port must be between 0 and 65535")
        if self.latency < 0 or self.retry_after < 0:
            problems.append("--latency and --retry-after must not be negative")
        if self.model is not None and self.script:
            problems.append("--model and --script are two kinds of teacher: give one")
        elif self.model is not None and not Path(self.model).is_dir():
            problems.append(f"--model {self.model}: no such folder")
        from kdpipe.loopback.limits import parse_limit

        checks = [(self.faults, ())] + [(parse_limit, (spec, flag)) for spec, flag in
                                        ((self.rate_limit, "--rate-limit"), (self.token_limit, "--token-limit")) if spec]
        for check, args in checks:
            try:
                check(*args)
            except UsageError as e:
                problems.append(str(e))
        return problems

    def rate_window(self):
        """The RateWindow (limits.py) that --rate-limit/--token-limit ask for, else None."""
        if not (self.rate_limit or self.token_limit):
            return None
        from kdpipe.loopback.limits import RateWindow, parse_limit

        return RateWindow(self.rate_limit and parse_limit(self.rate_limit, "--rate-limit"),
                          self.token_limit and parse_limit(self.token_limit, "--token-limit"), self.limit_headers)

    def faults(self) -> dict[str, float]:

        return parse_fault_rates(self.fault_rate or [])


def parse_fault_rates(specs: list[str]) -> dict[str, float]:
    """["rate_limit=0.05", ...] -> {"rate_limit": 0.05}; UsageError naming every bad one."""
    rates, problems = {}, []
    for spec in specs:
        kind, _, rate = spec.partition("=")
        try:
            value = float(rate)
        except ValueError:
            value = -1.0
        if kind not in FAULTS:
            problems.append(f"unknown fault {kind!r} (known: {', '.join(FAULTS)})")
        elif not 0.0 <= value <= 1.0:
            problems.append(f"fault rate of {kind} must be a number between 0 and 1, got {rate!r}")
        else:
            rates[kind] = value
    if sum(rates.values()) > 1.0:
        problems.append("fault rates add up to more than 1")
    if problems:
        raise UsageError("; ".join(problems))
    return rates
