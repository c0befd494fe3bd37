"""`kdpipe eval --teacher`: the teacher answers the eval questions through the API.

The teacher is asked with `generate`'s label prompt (the few-shot CoT prompt
it labelled the training data with), greedily, through the same response
cache, so a rerun costs nothing; its answers are parsed with
`parse_completion` like generate's. The cost is what these answers cost at
list price (cached answers included), next to what this run spent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kdpipe.errors import UsageError
from kdpipe.records import Record

if TYPE_CHECKING:  # pragma: no cover
    from kdpipe.evaluate import EvalOptions


@dataclass
class TeacherSetup:
    config: object  # kdpipe.teacher.TeacherConfig
    cache_path: Path
    prompt: Path | None
    price: object = None  # kdpipe.teacher.pricing.Price, or None when unknown


def prepare_teacher(opts: "EvalOptions") -> TeacherSetup:
    """Validate the teacher options before any model loads or request is sent."""
    from kdpipe.teacher.cache import default_cache_path
    from kdpipe.errors import KdpipeError
    from kdpipe.teacher.client import TeacherConfig
    from kdpipe.teacher.pricing import prices_file_from_env, resolve_price

    config = TeacherConfig(model=opts.teacher or "", base_url=opts.teacher_base_url,
                           api_key_env=opts.api_key_env, temperature=0.0, max_tokens=opts.teacher_max_tokens,
                           concurrency=opts.teacher_concurrency)
    problems = config.problems()
    if opts.teacher_prompt is not None and not Path(opts.teacher_prompt).is_file():
        problems.append(f"--teacher-prompt {opts.teacher_prompt}: no such file")
    for name in ("price_in", "price_out"):
        if getattr(opts, name) is not None and getattr(opts, name) < 0:
            problems.append(f"--{name.replace('_', '-')} must not be negative")
    price = None
    try:  # the rule generate bills by: flags, else $KDPIPE_PRICES, else the built-in table
        price = resolve_price(config.model, opts.price_in, opts.price_out, prices_file_from_env())
    except KdpipeError as e:
        problems.append(str(e))
    if problems:
        raise UsageError("; ".join(p.replace("--model", "--teacher") for p in problems))
    return TeacherSetup(config, Path(opts.teacher_cache or default_cache_path()), opts.teacher_prompt, price)


def ask_teacher(setup: TeacherSetup, records: list[Record], opts: "EvalOptions"):
    """(texts, seconds, cost in USD or None, token counts) of the teacher's answers."""
    from kdpipe.label_prompts import label_prompts, label_requests
    from kdpipe.teacher.cache import ResponseCache
    from kdpipe.teacher.client import Stats, complete

    requests = label_requests(records, label_prompts(records, setup.prompt), 1)
    stats = Stats()
    started = time.perf_counter()
    with ResponseCache(setup.cache_path) as cache:
        results = complete(setup.config, requests, cache, stats)
    seconds = time.perf_counter() - started
    failed = [c[0] for c in results if c and c[0].error is not None]
    if failed:
        # A question the teacher never answered is not a wrong answer: no score rather than a low one.
        from kdpipe.errors import KdpipeError

        raise KdpipeError(f"eval: the teacher gave no answer to {len(failed)} of {len(results)} questions "
                          f"({failed[0].error}: {failed[0].detail}); the answers it gave are cached, "
                          "so a rerun asks only for these")
    texts = [c[0].text or "" for c in results]
    prompt_tokens = sum(int(c[0].usage.get("prompt_tokens", 0)) for c in results if c)
    completion_tokens = sum(int(c[0].usage.get("completion_tokens", 0)) for c in results if c)
    cost = setup.price.cost(prompt_tokens, completion_tokens) if setup.price else None
    tokens = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
              "cached_answers": stats.cached, "transport_errors": stats.errors,
              "spent_prompt_tokens": stats.prompt_tokens, "spent_completion_tokens": stats.completion_tokens}
    return texts, seconds, cost, tokens
