"""Joining response caches: N machines each ran a shard with its own cache; one cache answers them all.

`merge_caches([A, B, ...], C)` writes every answer of A, B, ... (and of the spill files a
crashed run left beside them, cache.py) into C, so that a later run against C sends no
request any of them answers. The key already says what was asked (model, messages,
sampling parameters, sample index), so the union is the merge. When two caches hold
different answers under one key (two runs paid for the same sample at temperature > 0),
the cache named first wins, every time, and the conflict is counted and reported: the
answer a shard's output was built from may be the other one.

The merged cache is written beside C under a temporary name and renamed over C at the end,
so a crash leaves C as it was; C may be one of the sources (merging into it), but not a
cache another process has open (a run would go on writing to the file renamed away).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from kdpipe.errors import KdpipeError
from kdpipe.teacher.cache import ResponseCache
from kdpipe.teacher.cache_files import held_by, holders

CHUNK = 1000


@dataclass
class MergeReport:
    answers: int = 0  # in the merged cache
    added: dict[str, int] = field(default_factory=dict)  # source -> answers it brought first
    same: int = 0  # answers found in more than one source, identical
    conflicts: int = 0  # keys with different answers: the first source's kept
    conflict_keys: list[str] = field(default_factory=list)  # the first few, for the report

    def summary(self, out: Path) -> str:
        parts = ", ".join(f"{n} from {src}" for src, n in self.added.items())
        line = f"merge-cache: {len(self.added)} caches, {self.answers} answers -> {out} ({parts}"
        if self.same:
            line += f"; {self.same} held by more than one"
        if self.conflicts:
            keys = ", ".join(k[:12] for k in self.conflict_keys)
            line += (f"; {self.conflicts} keys answered differently, the first cache's answer kept "
                     f"(keys {keys}{', ...' if self.conflicts > len(self.conflict_keys) else ''})")
        return line + ")"


def merge_caches(sources: list[Path], out: Path) -> MergeReport:
    """Merge the response caches `sources` into `out` (see the module's docstring)."""
    sources, out = [Path(s) for s in sources], Path(out)
    if not sources:
        raise KdpipeError("merge-cache: name at least one cache to merge")
    resolved = [s.resolve() for s in sources]
    if len(set(resolved)) != len(resolved):
        twice = next(s for s, r in zip(sources, resolved) if resolved.count(r) > 1)
        raise KdpipeError(f"merge-cache: {twice} is given twice")
    for s in sources:
        if not s.is_file():
            raise KdpipeError(f"merge-cache: {s}: no such cache")
    if out.exists() and out.resolve() not in resolved:
        raise KdpipeError(f"merge-cache: {out} exists: name it among the caches to merge into it, "
                          f"or choose a new file")
    if out.exists() and holders(out):
        raise KdpipeError(f"merge-cache: {out} is in use ({held_by(out)}); merge when that run has ended")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.merging-{os.getpid()}")
    report = MergeReport()
    try:
        merged = ResponseCache(tmp)
        try:
            for source in sources:
                report.added[str(source)] = _merge_one(source, merged, report)
        finally:
            merged.close()  # the last connection: SQLite folds its WAL into the file
        report.answers = sum(report.added.values())
        with open(tmp, "rb") as fp:
            os.fsync(fp.fileno())
        for suffix in ("-wal", "-shm"):  # an old WAL beside the new file would be read into it
            Path(f"{out}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, out)
        _fsync_dir(out.parent)
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    return report


def _merge_one(source: Path, into: ResponseCache, report: MergeReport) -> int:
    """Copy the answers of one cache (and its spill files) that `into` lacks; count the rest."""
    added = 0
    try:
        db = sqlite3.connect(source, isolation_level=None)
        try:
            rows = db.execute("SELECT key, model, created, response FROM responses ORDER BY key")
            while True:
                chunk = rows.fetchmany(CHUNK)
                if not chunk:
                    break
                added += _add(chunk, into, report)
        finally:
            db.close()
    except sqlite3.Error as e:
        raise KdpipeError(f"merge-cache: {source}: not a readable kdpipe response cache ({e}); nothing written") \
            from None
    for spill in sorted(source.parent.glob(f"{source.name}.pending-*.jsonl")):
        spilled = []
        with open(spill, encoding="utf-8", errors="replace") as fp:
            for line in fp:
                with contextlib.suppress(ValueError, TypeError, KeyError):  # a line cut by a kill
                    row = json.loads(line)
                    spilled.append((row["key"], row["model"], row["created"], row["response"]))
        added += _add(spilled, into, report)
    return added


def _add(rows: list[tuple], into: ResponseCache, report: MergeReport) -> int:
    """Insert the rows whose key `into` lacks; an existing key is the same answer or a conflict.
    A row whose response is not JSON (a damaged cache) is left out, as a run would ignore it."""
    have = into.get_many([r[0] for r in rows])
    new = []
    for row in rows:
        try:
            response = json.loads(row[3])
        except (ValueError, TypeError, RecursionError):
            continue
        if row[0] not in have:
            have[row[0]] = response
            new.append(row)
        elif have[row[0]] == response:
            report.same += 1
        else:
            report.conflicts += 1
            if len(report.conflict_keys) < 3:
                report.conflict_keys.append(row[0])
    into.put_rows(new)
    return len(new)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
