"""The Batch API backend: half price, results within 24 h; a run stopped at any point resumes
from the batch remembered in the cache (batch.py)."""

from __future__ import annotations

from kdpipe.teacher.backend import answered_at_the_end
from kdpipe.teacher.batch import BatchOptions, complete_batch


class BatchBackend:
    def __init__(self, budget=None, options: BatchOptions | None = None, on_step=None):
        self.budget, self.options, self.on_step = budget, options, on_step

    def complete(self, config, requests, cache, stats=None, on_progress=None, on_answered=None):
        return answered_at_the_end(complete_batch(config, requests, cache, stats, on_progress, budget=self.budget,
                                                  options=self.options, on_step=self.on_step), on_answered)


def backend(opts, budget, on_batch_step) -> BatchBackend:
    return BatchBackend(budget, BatchOptions(poll_interval=opts.poll_interval), on_batch_step)
