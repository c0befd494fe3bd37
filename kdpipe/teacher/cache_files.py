"""A response cache's files: which processes have it open (named in the error when it is
locked, and why `teacher merge-cache` refuses to write into a cache a run still uses), and
`teacher clear-cache`'s removal."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from kdpipe.errors import KdpipeError


def held_by(path: Path) -> str:
    """Which other processes have the cache open, for the error that it is locked."""
    found = holders(path)
    return "held by " + "; ".join(found[:3]) if found else "held by another process"


def holders(path: Path) -> list[str]:
    """The other processes that have the cache open (Linux /proc), as "pid N: command"."""
    names = {str(Path(path).resolve()) + suffix for suffix in ("", "-wal", "-shm")}
    holders = []
    for proc in Path("/proc").glob("[0-9]*"):
        if proc.name == str(os.getpid()):
            continue
        try:
            if any(os.readlink(fd) in names for fd in (proc / "fd").iterdir()):
                cmd = " ".join((proc / "cmdline").read_bytes().decode("utf-8", "replace").replace("\0", " ").split())
                holders.append(f"pid {proc.name}: {cmd[:80]}")
        except OSError:
            continue
    return holders


def remove_cache(path: str | os.PathLike) -> tuple[int, int] | None:
    """Delete a response cache and its WAL files; returns (responses it held, bytes it took),
    None when there is none. A file that is not a response cache is left alone (KdpipeError)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            entries = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error as e:
        raise KdpipeError(f"{path}: not a kdpipe response cache ({e}); not removed") from None
    files = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
    size = sum(f.stat().st_size for f in files if f.exists())
    for f in files:
        f.unlink(missing_ok=True)
    return entries, size
