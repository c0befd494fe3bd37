"""The persistent response cache: every teacher response, stored before it is used.

One SQLite file in WAL mode. Each completed response is committed the moment
it arrives, so a Ctrl-C or `kill -9` loses at most the requests still in
flight, and a rerun of the same command pays only for those.

The key is a digest of everything that determines a response: the model,
the messages, the sampling parameters and the sample index. It leaves out
how the run was made (concurrency, output path, base URL, API key), so
changing those reuses the cache. `n` is left out too: sample 2 of a question
is the same request whether 3 or 5 samples were asked for, so raising
`--samples` from 3 to 5 pays only for samples 3 and 4. The temperature is in
the key, though, and generate's default changes with the sample count (0 for
one sample, 0.7 for several): going from 1 sample to several without
--temperature asks for every sample anew.

The one exception to leaving the endpoint out: a kdpipe loopback server
(scripted answers, a stand-in for tests and the demo) names itself, and its
answers are keyed under that name too, so they can never be served later as
a real model's answers (teacher/identity.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from kdpipe.errors import KdpipeError

DEFAULT_CACHE_ENV = "KDPIPE_CACHE"


def default_cache_path() -> Path:
    """$KDPIPE_CACHE, else $XDG_CACHE_HOME/kdpipe/teacher.sqlite (~/.cache/kdpipe/...)."""
    if os.environ.get(DEFAULT_CACHE_ENV):
        return Path(os.environ[DEFAULT_CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "kdpipe" / "teacher.sqlite"


def request_key(model: str, messages: list[dict], params: dict[str, Any], sample_index: int,
                namespace: str | None = None) -> str:
    """The cache key of one sample: sha256 of canonical JSON of what determines it; `namespace`
    (a loopback server's identity) keeps a stand-in server's answers apart from the real model's."""
    what = {"model": model, "messages": messages, "params": params, "sample": sample_index}
    if namespace:
        what["server"] = namespace
    canonical = json.dumps(
        what,
        sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """Key -> stored response (a JSON object: text, finish_reason, usage, model)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed row survives the process being killed.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses ("
                " key TEXT PRIMARY KEY, model TEXT NOT NULL, created REAL NOT NULL, response TEXT NOT NULL)"
            )
        except sqlite3.Error as e:
            raise KdpipeError(f"{self.path}: cannot open the response cache: {e}") from None

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The stored responses among `keys`, in one query per 500 keys."""
        found = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            rows = self._db.execute(
                f"SELECT key, response FROM responses WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put(self, key: str, model: str, response: dict[str, Any]) -> None:
        """Store one response and commit it (autocommit mode) before returning."""
        self._db.execute(
            "INSERT OR REPLACE INTO responses (key, model, created, response) VALUES (?, ?, ?, ?)",
            (key, model, time.time(), json.dumps(response, ensure_ascii=False)),
        )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def recent(self, model: str, limit: int) -> list[dict[str, Any]]:
        """The model's `limit` most recently stored responses (for observed answer lengths)."""
        rows = self._db.execute(
            "SELECT response FROM responses WHERE model = ? ORDER BY created DESC LIMIT ?", (model, limit))
        return [json.loads(raw) for (raw,) in rows]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
