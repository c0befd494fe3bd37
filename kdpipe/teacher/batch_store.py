"""Where a Batch API job stands, in the response cache's SQLite file (see batch.py).

batch_jobs: one row per job (its step, file and batch ids, the batch's status);
batch_lines: the custom ids of its input lines and the cache keys each answers.
Each change is committed at once, so a killed run resumes from its last step.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass, fields
from pathlib import Path


@dataclass
class Job:
    job: str
    model: str
    state: str = "new"
    file_id: str | None = None
    batch_id: str | None = None
    status: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    problem: str | None = None  # why a batch failed as a whole


class BatchStore:
    """Batch jobs and their lines, in the response cache's SQLite file."""

    def __init__(self, path: Path):
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS batch_jobs (job TEXT PRIMARY KEY, model TEXT NOT NULL, state TEXT NOT NULL,"
            " file_id TEXT, batch_id TEXT, status TEXT, output_file_id TEXT, error_file_id TEXT, problem TEXT,"
            " created REAL NOT NULL, updated REAL NOT NULL)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS batch_lines (job TEXT NOT NULL, custom_id TEXT NOT NULL, keys TEXT NOT NULL,"
            " PRIMARY KEY (job, custom_id))")

    def open_jobs(self, model: str) -> list[Job]:
        cols = ", ".join(f.name for f in fields(Job))
        rows = self._db.execute(f"SELECT {cols} FROM batch_jobs WHERE model = ? AND state NOT IN ('joined', "
                                "'dropped') ORDER BY created", (model,))
        return [Job(*row) for row in rows]

    def lines(self, job: str) -> dict[str, list[str]]:
        rows = self._db.execute("SELECT custom_id, keys FROM batch_lines WHERE job = ?", (job,))
        return {cid: json.loads(keys) for cid, keys in rows}

    def create(self, model: str, lines: dict[str, list[str]]) -> Job:
        digest = hashlib.sha256(json.dumps([model, sorted(lines.items())]).encode()).hexdigest()[:12]
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            same = self._db.execute("SELECT COUNT(*) FROM batch_jobs WHERE job LIKE ?", (f"kd-{digest}-%",))
            job = Job(f"kd-{digest}-{same.fetchone()[0]}", model)
            self._db.execute("INSERT INTO batch_jobs (job, model, state, created, updated) VALUES (?, ?, 'new', ?, ?)",
                             (job.job, model, now, now))
            self._db.executemany("INSERT INTO batch_lines (job, custom_id, keys) VALUES (?, ?, ?)",
                                 [(job.job, cid, json.dumps(keys)) for cid, keys in lines.items()])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return job

    def update(self, job: Job, **changes) -> None:
        for name, value in changes.items():
            setattr(job, name, value)
        sets = ", ".join(f"{name} = ?" for name in changes)
        self._db.execute(f"UPDATE batch_jobs SET {sets}, updated = ? WHERE job = ?",
                         (*changes.values(), time.time(), job.job))

    def close(self) -> None:
        self._db.close()
