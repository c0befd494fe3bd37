"""The dry-run backend: sends nothing; records the requests it is given (for the cost
estimate) and answers each sample "not_sent", so a stage renders exactly the prompts of a
real run."""

from __future__ import annotations

from kdpipe.teacher.backend import answered_at_the_end
from kdpipe.teacher.budget import NOT_SENT
from kdpipe.teacher.client import ChatRequest, Completion

DRY_RUN_DETAIL = "not sent: --dry-run"


class DryRunBackend:
    def __init__(self):
        self.requests: list[ChatRequest] = []

    def complete(self, config, requests, cache, stats=None, on_progress=None,
                 on_answered=None) -> list[list[Completion]]:
        self.requests += requests
        return answered_at_the_end([[Completion(i, error=NOT_SENT, detail=DRY_RUN_DETAIL)
                                     for i in range(r.first_sample, r.first_sample + r.n)] for r in requests],
                                   on_answered)


def backend(opts, budget, on_batch_step) -> DryRunBackend:
    return DryRunBackend()
