"""The spending ledger (--spend-ledger FILE, JSONL) that makes one --max-usd cap several runs.

Every stage that pays the teacher (generate, eval --teacher, probe's judge) appends one line
per run that sent requests: what it spent, appended when the run ends however it ends
(finished, stopped at the cap, failed, interrupted). A run given the ledger and --max-usd
may spend only what the ledger's earlier lines left (TeacherOptions.budget sets
Budget.earlier from it), so a cap holds for a whole `make loop`. The ledger, not the
outputs' .meta.json, is the record of what was paid: a stage that reruns rewrites its
.meta.json, and an output stopped at the cap is deleted by make, while what they paid
stays paid.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from kdpipe.errors import KdpipeError
from kdpipe.options import FlagNamer
from kdpipe.teacher.budget import Budget
from kdpipe.teacher.pricing import Price


class StoppedAtCap(KdpipeError):
    """A run that stopped at --max-usd before it had every answer it needs; exit status 3,
    generate's for a run to finish by rerunning."""

    exit_code = 3


def ledger_spent(path: Path, price: Price | None, flag: str = "--spend-ledger") -> float:
    """USD spent by the runs in the ledger at `path` (0 when it does not exist yet); a line
    that recorded no dollars (no price then) is priced from its tokens at `price`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0.0
    except OSError as e:
        raise KdpipeError(f"{flag} {path}: cannot read it: {e.strerror}") from None
    total = 0.0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            usd = entry.get("usd")
            if usd is None:
                if price is None:
                    raise KdpipeError(f"{flag} {path}, line {number}: no dollars recorded and no price "
                                      "to count its tokens at")
                usd = price.cost(int(entry["prompt_tokens"]), int(entry["completion_tokens"]))
            total += float(usd)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise KdpipeError(f"{flag} {path}, line {number}: not a ledger line") from None
    return total


@contextlib.contextmanager
def spending_recorded(path: Path | None, out: Path, stats, budget: Budget | None, price: Price | None):
    """Append this run's spending to the ledger at `path` when the block ends, however it ends."""
    try:
        yield
    finally:
        if path is not None and stats.requests:
            usd = budget.spent if budget is not None else (
                price.cost(stats.prompt_tokens, stats.completion_tokens) if price is not None else None)
            entry = {"out": str(out), "usd": None if usd is None else round(usd, 8),
                     "prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens,
                     "requests": stats.requests, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fp:  # one short append: lines of concurrent runs stay whole
                fp.write(json.dumps(entry) + "\n")


def stopped_at_cap(stage: str, budget: Budget, flag: FlagNamer, unsent: str) -> StoppedAtCap:
    """The one-line error of a stage whose teacher (or judge) stopped at its cap; `unsent` says
    what was not asked and what that leaves undone."""
    return StoppedAtCap(f"{stage}: stopped at {flag('max_usd')} {budget.max_usd:g}: "
                        f"{spent_line(budget, flag('spend_ledger'))}, {unsent}; to continue, rerun with a higher "
                        "cap: answers already paid for come from the cache")


def spent_line(budget: Budget, flag: str = "--spend-ledger") -> str:
    """What a capped run spent, with what the ledger's earlier runs spent under the same cap."""
    spent = f"spent ${budget.spent:.4f}"
    if budget.earlier:
        spent = f"${budget.earlier:.4f} spent earlier ({flag}) and {spent} now"
    return spent
