"""Which processes have a response cache open: named in the error when it is locked, and the
reason `teacher merge-cache` refuses to write into a cache a run still uses."""

from __future__ import annotations

import os
from pathlib import Path


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
