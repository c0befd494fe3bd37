"""`kdpipe eval --teacher`: the teacher answers the eval questions through the API.

The teacher is asked with `generate`'s label prompt (the few-shot CoT prompt
it labelled the training data with), greedily, through the same response
cache and the same backend factory as generate (kdpipe/teacher/backend.py), so
a rerun costs nothing; its answers are parsed with `parse_completion` like
generate's. The cost is what these answers cost at list price (cached answers
included), next to what this run spent.

With --max-usd the teacher is asked under the same cap as generate's, and with
--spend-ledger (kdpipe/teacher/spend_ledger.py) the cap is what the ledger's runs left and
what eval paid is appended to it, so one MAX_USD holds for every teacher step of a loop.
A run stopped at the cap has no score for the teacher: one line and exit status 3, the
answers it paid for cached.

eval holds generate's teacher options (TeacherOptions) as a block and offers
those below under its own flags: --teacher names the model, the rest keep
generate's names.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from kdpipe.options import flag_namer, raise_problems
from kdpipe.records import Record
from kdpipe.teacher.options import TeacherOptions

TEACHER_OFFERED = ("model", "base_url", "api_key_env", "cache", "max_tokens", "concurrency", "price_in",
                   "price_out", "prices", "max_usd", "spend_ledger")
TEACHER_FLAGS = {"model": "--teacher", "max_tokens": "--teacher-max-tokens"}
TEACHER_HELPS = {"model": "Also score this teacher model through the API (generate's label prompt, greedy, "
                          "cached like generate).",
                 "max_usd": "Never spend past this many USD on the teacher's answers (generate's cap); a run "
                            "stopped at it scores no teacher: rerun with a higher cap, paid answers are cached."}
teacher_flag = flag_namer(TeacherOptions, TEACHER_FLAGS)


@dataclass
class TeacherSetup:
    options: TeacherOptions
    config: object  # kdpipe.teacher.TeacherConfig
    cache_path: Path
    prompt: Path | None
    price: object = None  # kdpipe.teacher.pricing.Price, or None when unknown
    budget: object = None  # kdpipe.teacher.budget.Budget of --max-usd (less the ledger's runs), or None
    ledger_out: Path | None = None  # what the --spend-ledger line names: eval's -o, else the eval file


def teacher_problems(teacher: TeacherOptions, prompt: Path | None) -> list[str]:
    """Every problem with eval's teacher options, named by eval's flags."""
    p = teacher.problems(teacher_flag)
    if teacher.dry_run:
        p.append("eval --teacher cannot dry-run: a teacher scored on answers never asked would score 0")
    if prompt is not None and not Path(prompt).is_file():
        p.append(f"--teacher-prompt {prompt}: no such file")
    return p


def prepare_teacher(teacher: TeacherOptions, prompt: Path | None = None, ledger_out: Path | None = None
                    ) -> TeacherSetup:
    """Validate the teacher options (and read the spending ledger) before any model loads or
    request is sent."""
    raise_problems(teacher_problems(teacher, prompt))
    # the rule generate bills by: flags, else --prices / $KDPIPE_PRICES, else the built-in table
    price = teacher.price()
    return TeacherSetup(teacher, teacher.teacher_config(), teacher.cache_path(), prompt, price,
                        teacher.budget(price, teacher_flag), ledger_out)


def ask_teacher(setup: TeacherSetup, records: list[Record]):
    """(texts, seconds, cost in USD or None, token counts) of the teacher's answers."""
    from kdpipe.label_prompts import label_prompts, label_requests
    from kdpipe.teacher.backend import make_backend
    from kdpipe.teacher.cache import ResponseCache
    from kdpipe.teacher.client import Stats
    from kdpipe.teacher.spend_ledger import spending_recorded

    requests = label_requests(records, label_prompts(records, setup.prompt), 1)
    stats = Stats()
    budget = setup.budget
    backend = make_backend(setup.options, budget)
    started = time.perf_counter()
    with ResponseCache(setup.cache_path) as cache, \
            spending_recorded(setup.options.spend_ledger, setup.ledger_out, stats, budget, setup.price):
        results = backend.complete(setup.config, requests, cache, stats)
    if budget is not None and budget.stopped:
        from kdpipe.teacher.spend_ledger import stopped_at_cap

        raise stopped_at_cap("eval", budget, teacher_flag, f"{budget.refused} of {len(requests)} teacher "
                             "questions not sent, so no teacher score")
    # A rate over answers the cache returned would measure the cache, not the teacher: none then
    # (the scorecard shows "-").
    seconds = 0.0 if stats.cached else time.perf_counter() - started
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
