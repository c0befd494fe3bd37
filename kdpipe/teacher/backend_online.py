"""The online backend: requests to the OpenAI-compatible endpoint, many in flight (client.py)."""

from __future__ import annotations

from kdpipe.teacher.client import complete


class OnlineBackend:
    def __init__(self, budget=None):
        self.budget = budget

    def complete(self, config, requests, cache, stats=None, on_progress=None, on_answered=None):
        return complete(config, requests, cache, stats, on_progress, budget=self.budget, on_answered=on_answered)


def backend(opts, budget, on_batch_step) -> OnlineBackend:
    return OnlineBackend(budget)
