"""Cost control for `kdpipe generate`: --dry-run, --max-usd, --batch, price files.

`generate` asks a *sender* for its teacher answers; this module picks it:
the online client (kdpipe/teacher/client.py), the Batch API
(kdpipe/teacher/batch.py), or a dry run that records what would be sent and
sends nothing. Label and expand modes thus render exactly the same prompts in
a dry run as in the real one.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Callable

from kdpipe.errors import KdpipeError
from kdpipe.teacher.budget import NOT_SENT, Budget
from kdpipe.teacher.cache import ResponseCache
from kdpipe.teacher.client import ChatRequest, Completion, complete
from kdpipe.teacher.estimate import token_counter

DRY_RUN_DETAIL = "not sent: --dry-run"


def cost_problems(opts) -> list[str]:
    """Every problem with the cost options of GenerateOptions `opts`, before anything is spent."""
    p = []
    price, bad_price_file = None, False
    try:
        price = opts.price()
    except KdpipeError as e:
        p.append(str(e))
        bad_price_file = True
    if opts.tokenizer is not None and not Path(opts.tokenizer).is_file():
        p.append(f"--tokenizer {opts.tokenizer}: no such file")
    if opts.poll_interval <= 0:
        p.append("--poll-interval must be positive")
    if opts.max_usd is not None:
        if not 0 < opts.max_usd < float("inf"):  # NaN included
            p.append("--max-usd must be positive")
        if opts.max_tokens is None:
            p.append("--max-usd needs --max-tokens: it bounds what each answer can cost")
        if price is None and not bad_price_file:
            p.append(f"--max-usd needs a price: {opts.model!r} is not in the price table; "
                     "give --price-in/--price-out or --prices FILE")
    return p


class DryRun:
    """A sender that records the requests it is given and answers each sample "not_sent"."""

    def __init__(self):
        self.requests: list[ChatRequest] = []

    def __call__(self, config, requests, cache, stats=None, on_progress=None) -> list[list[Completion]]:
        self.requests += requests
        return [[Completion(i, error=NOT_SENT, detail=DRY_RUN_DETAIL)
                 for i in range(r.first_sample, r.first_sample + r.n)] for r in requests]


def make_sender(opts, cache: ResponseCache, budget: Budget | None, on_batch_step=None) -> Callable:
    """The function generate calls with (config, requests, cache, stats, on_progress)."""
    if opts.dry_run:
        return DryRun()
    if opts.batch:
        from kdpipe.teacher.batch import BatchOptions, complete_batch

        return functools.partial(complete_batch, budget=budget, on_step=on_batch_step,
                                 options=BatchOptions(poll_interval=opts.poll_interval))
    return functools.partial(complete, budget=budget)


def make_budget(opts, price) -> Budget | None:
    if opts.max_usd is None:
        return None
    return Budget(opts.max_usd, price, opts.max_tokens, token_counter(opts.tokenizer))


@contextlib.contextmanager
def open_cache(path: Path, dry_run: bool):
    """The response cache; a dry run never creates one (an absent cache answers nothing)."""
    if dry_run and not Path(path).exists():
        with ResponseCache(":memory:") as cache:
            yield cache
    else:
        with ResponseCache(path, write=not dry_run) as cache:
            yield cache


def continue_hint(budget: Budget) -> str:
    """What to tell a user whose run stopped at its cap."""
    return (f"stopped at --max-usd {budget.max_usd:g}: spent ${budget.spent:.4f}, {budget.refused} requests "
            f"not sent (their samples carry error \"{NOT_SENT}\"); to continue, rerun the same command with a "
            f"higher --max-usd: answers already paid for come from the cache")
