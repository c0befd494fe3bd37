"""Cost control for `kdpipe generate`: the cache a dry run may not create and what to say
when --max-usd stopped a run. The spending ledger (--spend-ledger) that makes one --max-usd
cap several runs is shared with `eval --teacher` and probe's judge: kdpipe/teacher/spend_ledger.py.

The options (--dry-run, --max-usd, --batch, price files) and their checks are the
teacher's (kdpipe/teacher/options.py), shared with `eval --teacher`; which backend answers
(online, Batch API, dry run) is chosen by kdpipe/teacher/backend.py.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from kdpipe.teacher.budget import NOT_SENT, Budget
from kdpipe.teacher.cache import ResponseCache
from kdpipe.teacher.spend_ledger import spent_line


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
    return (f"stopped at --max-usd {budget.max_usd:g}: {spent_line(budget)}, "
            f"{budget.refused} requests not sent (their samples carry error \"{NOT_SENT}\"); to continue, "
            f"rerun the same command with a higher --max-usd: answers already paid for come from the cache")
