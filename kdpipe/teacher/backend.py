"""The teacher backend: what answers a stage's chat requests, and the one factory that picks it.

A backend is anything with `complete(config, requests, cache, stats, on_progress, on_answered)`
returning, for each request, its samples in order (a Completion each: a text, or an error with a
reason); `on_answered(r, samples)`, when given, hears each request exactly once, as soon as the
backend knows all its samples (the online one while others are still awaited).
Today's three, one file each:

    backend_online.py   the OpenAI-compatible endpoint, many requests in flight (client.py)
    backend_batch.py    the OpenAI Batch API: half price, results within 24 h (batch.py)
    backend_dry_run.py  sends nothing, records what would be sent (for the cost estimate)

`make_backend` is the only place a backend is chosen; `generate` and `eval --teacher` both
call it with their TeacherOptions (kdpipe/teacher/options.py). A new backend is one new file
with a `backend(opts, budget, on_batch_step)` function, plus one line in BACKENDS (and the
option that switches it on).
"""

from __future__ import annotations

import importlib
from typing import Callable, Protocol

from kdpipe.teacher.budget import Budget
from kdpipe.teacher.cache import ResponseCache
from kdpipe.teacher.client import ChatRequest, Completion, Stats, TeacherConfig


class TeacherBackend(Protocol):
    def complete(self, config: TeacherConfig, requests: list[ChatRequest], cache: ResponseCache,
                 stats: Stats | None = None,
                 on_progress: Callable[[Stats], None] | None = None,
                 on_answered: Callable[[int, list[Completion]], None] | None = None) -> list[list[Completion]]: ...


def answered_at_the_end(results: list[list[Completion]], on_answered) -> list[list[Completion]]:
    """For a backend that knows every answer only at the end: tell on_answered of each, in order."""
    if on_answered is not None:
        for r, samples in enumerate(results):
            on_answered(r, samples)
    return results


# (option that switches it on, module); the first switched on answers, else the online endpoint.
BACKENDS = (
    ("dry_run", "kdpipe.teacher.backend_dry_run"),
    ("export_batch", "kdpipe.teacher.backend_dry_run"),  # records the requests; generate writes them out
    ("batch", "kdpipe.teacher.backend_batch"),
)
DEFAULT_BACKEND = "kdpipe.teacher.backend_online"


def make_backend(opts, budget: Budget | None = None,
                 on_batch_step: Callable[[str, str], None] | None = None) -> TeacherBackend:
    """The backend TeacherOptions `opts` ask for; `budget` caps spending (--max-usd),
    `on_batch_step(job, message)` hears each step of a Batch API run."""
    module = next((m for switch, m in BACKENDS if getattr(opts, switch, None)), DEFAULT_BACKEND)
    return importlib.import_module(module).backend(opts, budget, on_batch_step)
