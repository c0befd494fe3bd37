"""The persistent response cache: every teacher response, stored before it is used.

One SQLite file in WAL mode. Each response is committed before the event loop's turn
that received it ends (with the others of that turn and the next claim: one commit),
so a Ctrl-C or `kill -9` loses at most the requests still in flight; a rerun pays only for those.

The key is a digest of everything that determines a response: the model,
the messages, the sampling parameters and the sample index. It leaves out
how the run was made (concurrency, output path, base URL, API key), so
changing those reuses the cache. `n` is left out too: sample 2 of a question
is the same request whether 3 or 5 samples were asked for, so raising
`--samples` from 3 to 5 pays only for samples 3 and 4. The temperature is in
the key, though, and generate's default changes with the sample count (0 for
one sample, 0.7 for several): going from 1 sample to several without
--temperature asks for every sample anew.

An answer asked for with logprobs (`generate --logprobs K`) also answers the same request
without them (`eval --teacher`, `generate` without --logprobs): logprobs make the server
report each token's probabilities, not sample other tokens (at temperature 0 the same text;
above it a draw from the same distribution, as any cached sample is). `put` records the
plain request's key as an alias of the stored one (`alias_on_put`, `plain_aliases`), and
`get_many` falls back to the aliases. Never the other way: an answer without logprobs
cannot answer a request for them, nor one with K alternatives a request for another K.

The one exception to leaving the endpoint out: a kdpipe loopback server (a stand-in for
tests and the demo) names itself, and its answers are keyed under that name too, so they
can never be served later as a real model's answers (teacher/identity.py).

Several processes may use one cache. A writer waits for another's write at most
$KDPIPE_CACHE_WAIT seconds (default 30). Opening for a run checks that it can write
before anything is sent, and says which processes hold the cache if it cannot. An answer
that arrives while another process keeps the cache locked past that wait is appended to a
spill file beside it (`<cache>.pending-*`, fsynced) and moved into the cache by the next
process that opens it: an answer once received is never lost to a lock. Before sending, a
run claims its requests in a `claims` table (`claim`); another run that finds them claimed
by a live process waits for those answers instead of paying for them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from kdpipe.errors import KdpipeError
from kdpipe.teacher.cache_files import held_by

DEFAULT_CACHE_ENV = "KDPIPE_CACHE"
WAIT_ENV = "KDPIPE_CACHE_WAIT"
DEFAULT_WAIT_S = 30.0


def default_cache_path() -> Path:
    """$KDPIPE_CACHE, else $XDG_CACHE_HOME/kdpipe/teacher.sqlite (~/.cache/kdpipe/...)."""
    if os.environ.get(DEFAULT_CACHE_ENV):
        return Path(os.environ[DEFAULT_CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "kdpipe" / "teacher.sqlite"


def plain_aliases(model: str, requests: list, params: dict[str, Any], namespace: str | None) -> dict[str, str]:
    """Key of each sample of `requests` (with .messages, .first_sample, .n) asked with logprobs -> key of
    the same sample asked without them; empty when `params` asks for no logprobs."""
    if not params.get("logprobs"):
        return {}
    plain = {k: v for k, v in params.items() if k != "logprobs"}
    return {request_key(model, req.messages, params, i, namespace): request_key(model, req.messages, plain, i,
                                                                               namespace)
            for req in requests for i in range(req.first_sample, req.first_sample + req.n)}


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
    """Key -> stored response (a JSON object: text, finish_reason, usage, model).

    `write=True` (a run that will send requests) checks at once that the cache can be
    written, so that nothing is paid for that could not be stored."""

    def __init__(self, path: str | os.PathLike, write: bool = True):
        self.path = Path(path)
        self._spill = None  # this process's spill file, opened at the first answer a lock kept out
        self._spilled: dict[str, dict[str, Any]] = {}
        self._alias_of: dict[str, str] = {}  # key -> the plain key its answer also answers (alias_on_put)
        self._uncommitted: list[tuple[str, str, str]] = []  # rows put(commit=False) has not seen committed
        self._commit_due = False
        self._lost: KdpipeError | None = None  # what _commit_later could not store, nor spill
        self._released: list[str] = []  # keys whose claims put(commit=False) ended, for the commit
        self._claims = write  # a read-only open creates no claims table
        wait = _wait_seconds()
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=wait)
            self._db.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
            if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed row survives the process being killed.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses ("
                " key TEXT PRIMARY KEY, model TEXT NOT NULL, created REAL NOT NULL, response TEXT NOT NULL)"
            )
            if write:
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS claims ("
                    " key TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL, expires REAL NOT NULL)")
                self._db.execute("CREATE TABLE IF NOT EXISTS aliases (key TEXT PRIMARY KEY, target TEXT NOT NULL)")
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("ROLLBACK")
                self._merge_spills()
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise KdpipeError(f"{self.path}: the response cache is locked ({held_by(self.path)}); "
                                  f"waited {wait:g} s (${WAIT_ENV}); nothing was sent") from None
            raise KdpipeError(f"{self.path}: cannot open the response cache: {e}") from None
        except sqlite3.Error as e:
            raise KdpipeError(f"{self.path}: cannot open the response cache: {e}") from None

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The stored responses among `keys`, in one query per 500 keys. A row that is not
        JSON (a damaged cache) counts as absent: its request is asked again."""
        found = {k: self._spilled[k] for k in keys if k in self._spilled}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            try:
                rows = self._db.execute(
                    f"SELECT key, response FROM responses WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk).fetchall()
            except sqlite3.Error as e:
                raise KdpipeError(f"{self.path}: cannot read the response cache: {e}") from None
            for k, v in rows:
                with contextlib.suppress(ValueError, TypeError, RecursionError):
                    found[k] = json.loads(v)
        missing = [k for k in keys if k not in found]
        for start in range(0, len(missing), 500):
            chunk = missing[start:start + 500]
            try:
                rows = self._db.execute(
                    "SELECT a.key, r.response FROM aliases a JOIN responses r ON r.key = a.target "
                    f"WHERE a.key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            except sqlite3.OperationalError:
                break  # a cache written before aliases existed, opened read-only: no aliases
            except sqlite3.Error as e:
                raise KdpipeError(f"{self.path}: cannot read the response cache: {e}") from None
            for k, v in rows:
                with contextlib.suppress(ValueError, TypeError, RecursionError):
                    found[k] = _without_logprobs(json.loads(v))
        return found

    def version(self) -> int:
        """A number that changes whenever another connection commits to the cache (SQLite's
        data_version): while it stays the same, what this connection read still holds."""
        try:
            return self._db.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as e:
            raise KdpipeError(f"{self.path}: cannot read the response cache: {e}") from None

    def alias_on_put(self, aliases: dict[str, str]) -> None:
        """When an answer is stored later under a key of `aliases`, it also answers aliases[key]
        (`plain_aliases`: the same request without logprobs)."""
        self._alias_of.update(aliases)

    def put(self, key: str, model: str, response: dict[str, Any], release: bool = False,
            commit: bool = True) -> None:
        """Store one response and commit it; `release=True` also ends this process's claim on
        `key` in the same transaction; `commit=False` leaves it open for more (commit_soon()). While
        another process keeps the cache locked, append it to this process's spill file instead."""
        # ASCII JSON: a lone surrogate in a response is stored as received, as an escape.
        raw = json.dumps(response, ensure_ascii=True)
        db, release = self._db, release and self._claims
        try:
            if (release or not commit) and not db.in_transaction:
                db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO responses (key, model, created, response) VALUES (?, ?, ?, ?)",
                       (key, model, time.time(), raw))
            if release and commit:
                db.execute("DELETE FROM claims WHERE key = ? AND pid = ?", (key, os.getpid()))
            elif release:
                self._released.append(key)  # deleted by the commit, all at once
            self._uncommitted.append((key, model, raw))
            if commit:
                self.commit()
        except sqlite3.Error as e:
            self._spill_uncommitted(e, (key, model, raw))
            return
        except BaseException:
            self._spill_uncommitted(None, (key, model, raw))
            raise
        if key in self._alias_of and isinstance(response, dict) and response.get("logprobs") is not None:
            # after the answer: killed in between, the plain request is merely asked again
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("INSERT OR REPLACE INTO aliases (key, target) VALUES (?, ?)",
                                 (self._alias_of[key], key))

    def begin(self) -> None:
        """Take the write lock until the next commit: no other run's answer lands between a lookup and a claim."""
        if self._lost is not None:  # a commit_soon whose answers could not be kept: stop the run here
            raise self._lost
        if not self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # locked past the wait: claim() says so
                self._db.execute("BEGIN IMMEDIATE")

    def commit_soon(self) -> None:
        """Commit at the end of this turn of the running event loop (what begin, put and claim left open)."""
        if not self._commit_due:
            self._commit_due = True
            asyncio.get_running_loop().call_soon(self._commit_later)

    def _commit_later(self) -> None:
        try:
            self.commit()
        except KdpipeError as e:  # raised in a callback it would only be logged: begin() raises it
            self._lost = e

    def commit(self) -> None:
        """Commit what was left open; should that fail, its answers go to the spill file."""
        self._commit_due = False  # a commit_soon after this one schedules anew (in whichever loop runs then)
        if self._db.in_transaction:
            try:
                self._db.executemany("DELETE FROM claims WHERE key = ? AND pid = ?",
                                     [(k, os.getpid()) for k in self._released])
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._spill_uncommitted(e)
                return
        self._uncommitted.clear()
        self._released.clear()

    def _spill_uncommitted(self, error: sqlite3.Error | None, *more: tuple[str, str, str]) -> None:
        rows, self._uncommitted = self._uncommitted + [r for r in more if r not in self._uncommitted], []
        self._released.clear()  # those claims stay until this process ends or they expire
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
        for row in rows:  # error None: interrupted (Ctrl-C) between statements; kept all the same
            self._spill_row(*row, error or sqlite3.OperationalError("interrupted"))

    def put_rows(self, rows: list[tuple[str, str, float, str]]) -> None:
        """Store rows as another cache holds them (key, model, created, response JSON), in one
        transaction: a merge of caches (cache_merge.py) keeps when each answer was received."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR REPLACE INTO responses (key, model, created, response) "
                                 "VALUES (?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            raise KdpipeError(f"{self.path}: cannot write the response cache: {e}") from None

    def claim(self, keys: list[str], seconds: float, commit: bool = True) -> set[str]:
        """Claim `keys` for this process for `seconds` (it is about to send them); return those
        another live process has claimed: it is asking for them now, so wait for its answer
        rather than pay twice. A claim ends when its answer is stored, its process ends, or it expires.

        `commit=False` leaves the transaction open as put's does: until the caller commits, this
        process holds the write lock, so no other run can claim the keys meanwhile."""
        now, me = time.time(), os.getpid()
        try:
            if not self._db.in_transaction:
                self._db.execute("BEGIN IMMEDIATE")
            held = set()
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                rows = self._db.execute(f"SELECT key, pid, host, expires FROM claims WHERE key IN "
                                        f"({','.join('?' * len(chunk))})", chunk).fetchall()
                held |= {k for k, pid, host, expires in rows if pid != me and expires > now and _alive(pid, host)}
            self._db.executemany("INSERT OR REPLACE INTO claims (key, pid, host, expires) VALUES (?, ?, ?, ?)",
                                 [(k, me, _HOST, now + seconds) for k in keys if k not in held])
        except sqlite3.Error as e:
            # Rolled back with the answers put(commit=False) left open, which go to the spill file.
            self._spill_uncommitted(e)
            return set()  # locked past the wait or no claims table: send rather than stall
        except BaseException:
            self._spill_uncommitted(None)
            raise
        if commit:
            self.commit()
        return held

    def release(self, keys: list[str]) -> None:
        """End this process's claims on `keys` (answered, or failed: another run may ask)."""
        with contextlib.suppress(sqlite3.Error):
            self._db.executemany("DELETE FROM claims WHERE key = ? AND pid = ?", [(k, os.getpid()) for k in keys])

    def _spill_row(self, key: str, model: str, raw: str, error: sqlite3.Error) -> None:
        try:
            if self._spill is None:
                name = f"{self.path.name}.pending-{os.getpid()}-{secrets.token_hex(3)}.jsonl"
                self._spill = open(self.path.with_name(name), "a", encoding="utf-8")
                fcntl.flock(self._spill, fcntl.LOCK_EX)  # merged by others only once this process ends
            self._spill.write(json.dumps({"key": key, "model": model, "created": time.time(),
                                          "response": raw}) + "\n")
            self._spill.flush()
            os.fsync(self._spill.fileno())
        except OSError as e:
            raise KdpipeError(f"{self.path}: cannot store a response: {error}; nor in a spill file: "
                              f"{e.strerror or e}") from None
        self._spilled[key] = json.loads(raw)

    def _merge_spills(self) -> None:
        """Move the rows of spill files no live process holds into the cache."""
        for spill in sorted(self.path.parent.glob(f"{self.path.name}.pending-*.jsonl")):
            try:
                fp = open(spill, "r+", encoding="utf-8", errors="replace")
            except OSError:
                continue
            with fp:
                try:
                    fcntl.flock(fp, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its process still runs
                rows = []
                for line in fp:
                    with contextlib.suppress(ValueError, TypeError, KeyError):  # a line cut by a kill
                        row = json.loads(line)
                        rows.append((row["key"], row["model"], row["created"], row["response"]))
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR IGNORE INTO responses (key, model, created, response) "
                                     "VALUES (?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
                os.unlink(spill)

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def recent(self, model: str, limit: int) -> list[dict[str, Any]]:
        """The model's `limit` most recently stored responses (for observed answer lengths)."""
        rows = self._db.execute(
            "SELECT response FROM responses WHERE model = ? ORDER BY created DESC LIMIT ?", (model, limit))
        found = []
        for (raw,) in rows:
            with contextlib.suppress(ValueError, TypeError, RecursionError):
                found.append(json.loads(raw))
        return found

    def close(self) -> None:
        self.commit()
        if self._spill is not None:
            self._spill.close()
            with contextlib.suppress(sqlite3.Error):
                self._merge_spills()
        self._db.close()

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _without_logprobs(entry: Any) -> Any:
    """An aliased answer as the plain request gets it: the text, finish reason and usage, no logprobs."""
    return {k: v for k, v in entry.items() if k != "logprobs"} if isinstance(entry, dict) else entry


def _wait_seconds() -> float:
    try:
        wait = float(os.environ.get(WAIT_ENV) or DEFAULT_WAIT_S)
    except ValueError:
        raise KdpipeError(f"${WAIT_ENV} must be a number of seconds, got {os.environ[WAIT_ENV]!r}") from None
    if not 0 <= wait < 1e6:
        raise KdpipeError(f"${WAIT_ENV} must be between 0 and 1000000 seconds")
    return wait


_HOST = socket.gethostname()


def _alive(pid: int, host: str) -> bool:
    if host != _HOST:
        return True  # another machine's process: its claim lasts until it expires
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
