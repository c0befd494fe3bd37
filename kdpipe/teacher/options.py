"""The teacher options every stage that asks the teacher shares: who it is, how to reach and
pay it, and which backend answers (online, Batch API, dry run: kdpipe/teacher/backend.py).

`generate` offers them all (GenerateOptions extends this class); `eval --teacher` holds
them as a block and offers some of them under its own flags (--teacher for --model), so
each problem names the flag through a `flag` function rather than a fixed string.

Light to import (the command line builds its flags from these fields): the client,
cache and price table are imported when a method needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdpipe.errors import KdpipeError
from kdpipe.options import FlagNamer, Options, flag_namer, option


@dataclass
class TeacherOptions(Options):
    model: str = option("", "Teacher model id at the endpoint.", required=True)
    base_url: list[str] | None = option(None, "OpenAI-compatible endpoint (default: $OPENAI_BASE_URL, else "
                                              "https://api.openai.com/v1); repeat it for replicas of one model: "
                                              "each request goes to the one with the fewest in flight.",
                                        metavar="URL")
    api_key_env: str = option("OPENAI_API_KEY", "Environment variable holding the API key.")
    concurrency: int = option(32, "Requests in flight.")
    max_tokens: int | None = option(512, "Most tokens per completion.")
    cache: Path | None = option(None, "Response cache (SQLite) (default: $KDPIPE_CACHE, "
                                      "else ~/.cache/kdpipe/teacher.sqlite).")
    price_in: float | None = option(None, "USD per million input tokens (default: --prices, else built-in "
                                          "table; given alone, the output price still comes from there).")
    price_out: float | None = option(None, "USD per million output tokens (default: --prices, else built-in "
                                           "table; given alone, the input price still comes from there).")
    timeout: float = option(60.0, "Seconds before a request is retried.")
    retries: int = option(6, "Retries per request (429, 5xx, timeouts).")
    transport: str = option("asyncio", "asyncio: the chat API on asyncio's own connections, the least CPU per "
                                       "request (no proxy); aiohttp: through aiohttp (about twice the CPU); "
                                       "openai: through the official openai client (about five times).")
    adaptive: bool = option(False, "Adapt to the endpoint's rate limit: halve the requests in flight at a 429, "
                                   "add them back one at a time as answers come (AIMD), up to --concurrency.")
    rpm: float | None = option(None, "Start at most this many requests a minute (a published limit the "
                                     "endpoint does not announce in headers).")
    tpm: float | None = option(None, "Send at most this many tokens a minute, counting each request at its "
                                     "worst case (prompt bytes/4 plus --max-tokens per sample).")
    # Cost control (kdpipe/teacher/estimate.py, budget.py, batch.py) and the backend.
    dry_run: bool = option(False, "Render every prompt, send nothing, write nothing: print the requests, input "
                                  "tokens (--tokenizer, else UTF-8 bytes/4 with bounds bytes/6 .. bytes/2.5), "
                                  "output tokens (mean of earlier cached answers, else --max-tokens) and the "
                                  "cost range; cached requests are free.")
    max_usd: float | None = option(None, "Never spend past this many USD: a request is sent only when spent "
                                         "plus the worst case of requests in flight and its own fits (else it "
                                         "waits for those in flight); the run stops within one request's worst "
                                         "case of the cap; unsent samples get error not_sent; rerun with a "
                                         "higher cap to continue.")
    spend_ledger: Path | None = option(None, "Spending ledger (JSONL) shared by several runs: each run that sends "
                                             "appends what it spent, and --max-usd caps them together (this run "
                                             "may spend what the ledger's runs left of it).", metavar="FILE")
    batch: bool = option(False, "Use the OpenAI Batch API (half price, results within 24 h); stop and rerun "
                                "at any time: the batch is remembered in the cache.")
    prices: Path | None = option(None, "Price file, JSON (or TOML): {\"model-prefix\": {\"input\": USD/M, "
                                       "\"output\": USD/M, \"batch_input\": .., \"batch_output\": ..}} "
                                       "(default: $KDPIPE_PRICES).")
    tokenizer: Path | None = option(None, "The teacher's tokenizer.json (Hugging Face tokenizers) to count "
                                          "input tokens for --dry-run and --max-usd.")
    poll_interval: float = option(30.0, "Seconds between batch status checks (--batch).")

    def teacher_config(self):
        """The client's config: greedy here; generate adds its sampling options."""
        return self.client_config(temperature=0.0)

    def client_config(self, **sampling):
        """The client's config with these sampling parameters (temperature, stop, seed)."""
        from kdpipe.teacher.client import TeacherConfig

        urls = [self.base_url] if isinstance(self.base_url, str) else list(self.base_url or [])
        return TeacherConfig(model=self.model, base_url=urls[0] if urls else None, replicas=tuple(urls[1:]),
                             api_key_env=self.api_key_env,
                             max_tokens=self.max_tokens, concurrency=self.concurrency, timeout=self.timeout,
                             retries=self.retries, transport=self.transport, adaptive=self.adaptive,
                             rpm=self.rpm, tpm=self.tpm, **sampling)

    def problems(self, flag: FlagNamer | None = None) -> list[str]:
        """Every problem with these options, before anything is spent; `flag(name)` is the flag
        a user gave field `name` with (default: generate's)."""
        flag = flag or flag_namer(TeacherOptions)
        # `not x >= 0` rather than `x < 0`: NaN is refused too.
        p = [f"{flag(name)} must not be negative" for name in ("price_in", "price_out")
             if getattr(self, name) is not None and not getattr(self, name) >= 0]
        p += [f"{flag(name)} must be positive" for name in ("rpm", "tpm")
              if getattr(self, name) is not None and not 0 < getattr(self, name) < float("inf")]
        return p + self.cost_problems(flag) + self.teacher_config().problems(need_key=not self.dry_run, flag=flag)

    def cost_problems(self, flag: FlagNamer) -> list[str]:
        p = []
        price, bad_price_file = None, False
        try:
            price = self.price()
        except KdpipeError as e:
            p.append(str(e))
            bad_price_file = True
        if self.tokenizer is not None and not Path(self.tokenizer).is_file():
            p.append(f"{flag('tokenizer')} {self.tokenizer}: no such file")
        if not self.poll_interval > 0:
            p.append(f"{flag('poll_interval')} must be positive")
        if self.max_usd is not None:
            if not 0 < self.max_usd < float("inf"):  # NaN included
                p.append(f"{flag('max_usd')} must be positive")
            if self.max_tokens is None:
                p.append(f"{flag('max_usd')} needs {flag('max_tokens')}: it bounds what each answer can cost")
            if price is None and not bad_price_file:
                p.append(f"{flag('max_usd')} needs a price: {self.model!r} is not in the price table; "
                         f"give {flag('price_in')}/{flag('price_out')} or {flag('prices')} FILE")
        return p

    def resolved_prices_file(self) -> Path | None:
        from kdpipe.teacher.pricing import prices_file_from_env

        return prices_file_from_env(self.prices)

    def price(self):
        """The Price this run is billed at (batch price with --batch); None when unknown."""
        from kdpipe.teacher.pricing import resolve_price

        return resolve_price(self.model, self.price_in, self.price_out, self.resolved_prices_file(), self.batch)

    def cache_path(self) -> Path:
        from kdpipe.teacher.cache import default_cache_path

        return Path(self.cache or default_cache_path())

    def budget(self, price, flag: FlagNamer | None = None):
        """The spending cap of --max-usd (None: no cap), less what the runs in --spend-ledger
        spent (`flag(name)`: the flag a user gave field `name` with, for a broken ledger)."""
        if self.max_usd is None:
            return None
        from kdpipe.teacher.budget import Budget
        from kdpipe.teacher.estimate import token_counter

        budget = Budget(self.max_usd, price, self.max_tokens, token_counter(self.tokenizer))
        if self.spend_ledger is not None:
            from kdpipe.teacher.spend_ledger import ledger_spent

            flag = flag or flag_namer(TeacherOptions)
            budget.earlier = ledger_spent(self.spend_ledger, price, flag("spend_ledger"))
        return budget
