"""The dry run of a whole teacher run before expansion has happened: one estimate for all of it.

`generate --mode label --dry-run --expect-new N` prices three things together:
the labelling of the questions given, the first round of expansion requests
that would write N new questions (as `generate --mode expand --num-new N` would
send them), and the labelling of those N questions, which do not exist yet:
the seed questions stand in for them in turn (the teacher writes new ones in
their style and length), and they are never counted as cached.
"""

from __future__ import annotations

from dataclasses import replace

from kdpipe.teacher.estimate import Estimate


class NothingCached:
    """A cache that answers no request, but still knows the model's earlier answer lengths."""

    def __init__(self, cache):
        self._cache = cache

    def get_many(self, keys):
        return {}

    def recent(self, model: str, limit: int):
        return self._cache.recent(model, limit)


def stand_ins(records: list, count: int) -> list:
    """`count` questions expected from expansion, shaped like the seeds (ids marked expected-)."""
    return [replace(records[k % len(records)], id=f"expected-{k}") for k in range(count)] if records else []


def merge_estimates(first: Estimate, *more: Estimate) -> Estimate:
    """One estimate for several runs at the same price."""
    total = replace(first, prompt_tokens=list(first.prompt_tokens), completion_tokens=list(first.completion_tokens))
    for e in more:
        total.requests += e.requests
        total.samples += e.samples
        total.cached_requests += e.cached_requests
        total.cached_samples += e.cached_samples
        total.prompt_tokens = [a + b for a, b in zip(total.prompt_tokens, e.prompt_tokens)]
        total.completion_tokens = [None if a is None or b is None else a + b
                                   for a, b in zip(total.completion_tokens, e.completion_tokens)]
    return total
