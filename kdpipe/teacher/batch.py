"""The OpenAI Batch API path: the same answers as the online client, at the batch price.

`complete_batch(config, requests, cache, ...)` returns what `complete` returns.
It sends only what the cache lacks, one input line per run of consecutive
missing samples of a request (custom_id "<record id>#<first sample>",
with `n` for the run), and walks a job through these steps, recording each in
the cache's SQLite file (tables batch_jobs, batch_lines) before the next:

    new         the lines and the cache keys they answer are recorded
    written     the input JSONL is on disk (<cache>.batches/<job>.input.jsonl)
    uploaded    POST /v1/files gave a file id
    created     POST /v1/batches gave a batch id (metadata kdpipe_job=<job>)
    downloaded  the batch ended (completed, expired, failed or cancelled) and its
                output and error files are on disk
    joined      every answer is stored in the response cache

Stopped at any point, a rerun finds the open job whose lines cover what it
needs and goes on from its last step: it never uploads twice what it
recorded, and it never creates a second batch: a batch created but not yet
recorded is found again by its metadata, a file by its name. Answers go into
the same cache as the online path's, so online and batch runs share them.
Lines that failed or expired are sent again in a new batch, up to
`submissions` batches per run; what never got an answer comes back as a
"transport" error with the Batch API's reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kdpipe.errors import KdpipeError
from kdpipe.teacher.budget import NOT_SENT
from kdpipe.teacher.cache import ResponseCache, plain_aliases, request_key
from kdpipe.teacher.identity import cache_namespace
from kdpipe.teacher.client import ChatRequest, Completion, Stats, TeacherConfig, request_body
from kdpipe.teacher.response import completions_from, from_stored
from kdpipe.teacher.batch_files import batch_output_entries
from kdpipe.teacher.batch_store import BatchStore, Job
from kdpipe.teacher.transport import TeacherFatalError, scrub_secret

ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "expired", "failed", "cancelled")


@dataclass
class BatchOptions:
    poll_interval: float = 30.0  # seconds between status checks
    completion_window: str = "24h"  # the only window OpenAI offers
    submissions: int = 3  # batches per run: the first, then resubmissions of what failed or expired
    work_dir: Path | None = None  # input and output files; None: <cache>.batches/


class BatchApi:
    """The Files and Batches endpoints through the official client (its own retries on)."""

    def __init__(self, config: TeacherConfig):
        import openai

        self._openai = openai
        self._url = config.resolved_base_url()
        self._key = config.api_key()
        self._client = openai.OpenAI(base_url=self._url, api_key=config.api_key(), timeout=config.timeout,
                                     max_retries=config.retries)

    def _call(self, what: str, fn, *args, **kwargs):
        openai = self._openai
        try:
            return fn(*args, **kwargs)
        except openai.APIStatusError as e:
            message = f"{self._url}: Batch API {what}: HTTP {e.status_code}: {scrub_secret(e.message, self._key)}"
            if e.status_code in (401, 403, 404):
                raise TeacherFatalError(message) from None
            raise KdpipeError(message + "; rerun the same command to resume") from None
        except openai.APIConnectionError as e:
            raise KdpipeError(f"{self._url}: Batch API {what}: {scrub_secret(str(e), self._key)}; "
                              "rerun the same command to resume") from None

    def find_file(self, name: str, size: int) -> str | None:
        # Iterating the page fetches the following pages (`after` the last id) as needed.
        return self._call("list files", lambda: next(
            (f.id for f in self._client.files.list(purpose="batch") if f.filename == name and f.bytes == size),
            None))

    def upload(self, path: Path, name: str) -> str:
        # Bytes, not a file object: the body then has a Content-Length, which every server takes.
        return self._call("upload", self._client.files.create, file=(name, path.read_bytes()), purpose="batch").id

    def find_batch(self, job: str):
        return self._call("list batches", lambda: next(
            (b for b in self._client.batches.list(limit=100) if (b.metadata or {}).get("kdpipe_job") == job),
            None))

    def create(self, file_id: str, job: str, window: str):
        return self._call("create batch", self._client.batches.create, input_file_id=file_id, endpoint=ENDPOINT,
                          completion_window=window, metadata={"kdpipe_job": job})

    def retrieve(self, batch_id: str):
        return self._call("poll batch", self._client.batches.retrieve, batch_id)

    def content(self, file_id: str) -> bytes:
        return self._call("download", self._client.files.content, file_id).content

    def close(self) -> None:
        self._client.close()


def complete_batch(config: TeacherConfig, requests: list[ChatRequest], cache: ResponseCache,
                   stats: Stats | None = None, on_progress: Callable[[Stats], None] | None = None, *,
                   budget=None, options: BatchOptions | None = None,
                   on_step: Callable[[str, str], None] | None = None) -> list[list[Completion]]:
    """For each request, its samples in order: from the cache, else through the Batch API.
    `on_step(job, message)` hears each step as it is recorded."""
    stats, options = stats or Stats(), options or BatchOptions()
    run = _BatchRun(config, requests, cache, stats, on_progress, budget, options, on_step or (lambda j, m: None))
    try:
        return run.complete()
    finally:
        run.close()


class _BatchRun:
    def __init__(self, config, requests, cache, stats, on_progress, budget, options, on_step):
        self.config, self.requests, self.cache, self.stats = config, requests, cache, stats
        self.on_progress, self.budget, self.options, self.on_step = on_progress, budget, options, on_step
        params = config.sampling_params()
        namespace = cache_namespace(config.resolved_base_url())  # keyed as online answers are
        cache.alias_on_put(plain_aliases(config.model, requests, params, namespace))
        self.where: dict[str, tuple[int, int]] = {}  # cache key -> (request, sample index)
        self.repeats: list[tuple[int, int, str]] = []  # the same sample asked again: sent once
        for r, req in enumerate(requests):
            for i in range(req.first_sample, req.first_sample + req.n):
                key = request_key(config.model, req.messages, params, i, namespace)
                if key in self.where:
                    self.repeats.append((r, i, key))
                else:
                    self.where[key] = (r, i)
        self.results: list[list[Completion | None]] = [[None] * req.n for req in requests]
        self.failures: dict[str, str] = {}  # key -> why its last batch line gave no answer
        self.one_by_one: set[str] = set()  # keys whose line with n > 1 was refused (HTTP 400)
        self.work_dir = Path(options.work_dir or f"{cache.path}.batches")
        self._store: BatchStore | None = None
        self._api: BatchApi | None = None

    # lazily: a run the cache answers whole touches neither the job tables nor the network
    @property
    def store(self) -> BatchStore:
        self._store = self._store or BatchStore(self.cache.path)
        return self._store

    @property
    def api(self) -> BatchApi:
        self._api = self._api or BatchApi(self.config)
        return self._api

    def close(self) -> None:
        if self._store:
            self._store.close()
        if self._api:
            self._api.close()

    def _set(self, key: str, c: Completion) -> None:
        r, i = self.where[key]
        self.results[r][i - self.requests[r].first_sample] = c

    def _pending(self) -> list[str]:
        return [k for k, (r, i) in self.where.items() if self.results[r][i - self.requests[r].first_sample] is None]

    def complete(self) -> list[list[Completion]]:
        self.stats.total += len(self.where)
        for key, hit in self.cache.get_many(list(self.where)).items():
            self._set(key, from_stored(self.where[key][1], hit, cached=True))
            self.stats.cached += 1
            self.stats.done += 1
        if self._pending():
            for job in self.store.open_jobs(self.config.model):  # a stopped run's batch, resumed
                covered = {k for keys in self.store.lines(job.job).values() for k in keys}
                if not set(self._pending()) & covered:
                    continue
                unwritten = job.state == "new" or (job.state == "written" and not self._input_path(job).exists())
                if unwritten and not covered <= set(self.where):
                    # Stopped before its input was uploaded, by a run asking other questions:
                    # nothing was paid, and this run cannot render its lines; make a new one.
                    self._step(job, "dropped", "dropped: never sent, asks for other requests")
                    continue
                self.on_step(job.job, f"resuming from step {job.state}")
                self._drive(job, {})
        for _ in range(self.options.submissions):
            pending = self._pending()
            if not pending or (self.budget and self.budget.stopped):
                break
            lines, reservations = self._lines(pending)
            if not lines:
                break
            self._drive(self.store.create(self.config.model, lines), reservations)
        for key in self._pending():
            r, i = self.where[key]
            if self.budget and self.budget.stopped and key not in self.failures:
                self._set(key, Completion(i, error=NOT_SENT, detail=self.budget.detail()))
                self.stats.not_sent += 1
            else:
                self._set(key, Completion(i, error="transport",
                                          detail=self.failures.get(key, "no answer from the Batch API")))
                self.stats.errors += 1
            self.stats.done += 1
        for r, i, key in self.repeats:
            fr, fi = self.where[key]
            c = self.results[fr][fi - self.requests[fr].first_sample]
            self.results[r][i - self.requests[r].first_sample] = Completion(i, c.text, c.finish_reason, {}, True,
                                                                            c.error, c.detail)
            self.stats.duplicates += 1
            self.stats.done += 1
        return self.results  # type: ignore[return-value]

    def _lines(self, pending: list[str]) -> tuple[dict[str, list[str]], dict[str, float]]:
        """One line per run of consecutive missing samples of a request; the budget admits each."""
        by_request: dict[int, list[tuple[int, str]]] = {}
        for key in pending:
            r, i = self.where[key]
            by_request.setdefault(r, []).append((i, key))
        lines, reservations = {}, {}
        for r in sorted(by_request):
            runs: list[list[tuple[int, str]]] = []
            for i, key in sorted(by_request[r]):
                if runs and runs[-1][-1][0] == i - 1 and key not in self.one_by_one:
                    runs[-1].append((i, key))
                else:
                    runs.append([(i, key)])
            name = self.requests[r].id or f"request-{r}"
            if len(name) > 48:
                name = hashlib.sha256(name.encode()).hexdigest()[:16]
            for run in runs:
                custom_id = f"{name}#{run[0][0]}"
                if self.budget:
                    reservation = self.budget.admit(self.requests[r].messages, len(run))
                    if reservation is None:
                        continue
                    reservations[custom_id] = reservation
                lines[custom_id] = [key for _, key in run]
        return lines, reservations

    # ---------------------------------------------------------------- one job, step by step

    def _drive(self, job: Job, reservations: dict[str, float]) -> None:
        lines = self.store.lines(job.job)
        name = f"kdpipe-{job.job}.jsonl"
        input_path = self._input_path(job)
        if job.state == "new" or (job.state == "written" and not input_path.exists()):
            self._write(input_path, self._input(lines))
            self._step(job, "written", f"wrote {len(lines)} requests to {input_path}")
        if job.state == "written":
            size = input_path.stat().st_size
            file_id = self.api.find_file(name, size) or self.api.upload(input_path, name)
            self._step(job, "uploaded", f"uploaded as {file_id}", file_id=file_id)
        if job.state == "uploaded":
            batch = self.api.find_batch(job.job) or self.api.create(job.file_id, job.job,
                                                                     self.options.completion_window)
            self.stats.requests += len(lines)
            self._step(job, "created", f"created batch {batch.id}", batch_id=batch.id, status=batch.status)
        if job.state == "created":
            batch = self._poll(job)
            problem = "; ".join(e.message or e.code or "" for e in (batch.errors.data or [])) \
                if batch.errors and batch.errors.data else None
            for kind, file_id in (("output", batch.output_file_id), ("errors", batch.error_file_id)):
                if file_id:
                    self._write(self.work_dir / f"{job.job}.{kind}.jsonl", self.api.content(file_id))
            counts = batch.request_counts
            self._step(job, "downloaded", f"{batch.status}: {counts.completed if counts else 0} answered, "
                                          f"{counts.failed if counts else 0} failed",
                       status=batch.status, output_file_id=batch.output_file_id,
                       error_file_id=batch.error_file_id, problem=problem)
        if job.state == "downloaded":
            for kind, file_id in (("output", job.output_file_id), ("errors", job.error_file_id)):
                if file_id and not (self.work_dir / f"{job.job}.{kind}.jsonl").exists():  # deleted by hand
                    self._write(self.work_dir / f"{job.job}.{kind}.jsonl", self.api.content(file_id))
            answered = self._join(job, lines, reservations)
            self._step(job, "joined", f"stored {answered} answers in the cache")

    def _input_path(self, job: Job) -> Path:
        return self.work_dir / f"{job.job}.input.jsonl"

    def _step(self, job: Job, state: str, message: str, **changes) -> None:
        self.store.update(job, state=state, **changes)
        self.on_step(job.job, message)

    def _input(self, lines: dict[str, list[str]]) -> bytes:
        rows = []
        for custom_id, keys in lines.items():
            r, _ = self.where[keys[0]]
            body = request_body(self.config, self.requests[r].messages, len(keys))
            rows.append(json.dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body},
                                   ensure_ascii=False))
        return ("\n".join(rows) + "\n").encode("utf-8")

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def _poll(self, job: Job):
        said = None
        while True:
            batch = self.api.retrieve(job.batch_id)
            counts = batch.request_counts
            message = f"{batch.status}" + (f", {counts.completed + counts.failed}/{counts.total} done, "
                                           f"{counts.failed} failed" if counts and counts.total else "")
            if message != said:
                self.store.update(job, status=batch.status)
                self.on_step(job.job, message)
                said = message
            if self.on_progress:
                self.on_progress(self.stats)
            if batch.status in TERMINAL:
                return batch
            time.sleep(self.options.poll_interval)

    def _join(self, job: Job, lines: dict[str, list[str]], reservations: dict[str, float]) -> int:
        """Store every answer of a finished batch in the cache; remember why the rest failed."""
        answered = 0
        for kind in ("output", "errors"):
            path = self.work_dir / f"{job.job}.{kind}.jsonl"
            if not path.exists():
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            for entry in batch_output_entries(text.splitlines(), lambda number, e: KdpipeError(
                    f"{path}:{number}: the downloaded Batch API {kind} file is corrupt ({e}); delete it and rerun "
                    "the same command to download it again")):
                keys = lines.get(entry.get("custom_id"))
                if keys is None:
                    continue
                response = entry.get("response") or {}
                if response.get("status_code") == 200:
                    answered += self._store_answers(keys, response.get("body") or {},
                                                    reservations.pop(entry["custom_id"], 0.0))
                else:
                    error = entry.get("error") or (response.get("body") or {}).get("error") or {}
                    reason = f"HTTP {response['status_code']}" if response.get("status_code") else error.get("code")
                    if response.get("status_code") == 400 and len(keys) > 1:
                        self.one_by_one.update(keys)  # some endpoints allow only n = 1: ask one by one
                    for key in keys:
                        self.failures[key] = f"Batch API: {reason}: {error.get('message', '')}".strip()
        for custom_id, keys in lines.items():
            for key in keys:
                if key not in self.failures and key in self.where and self._missing(key):
                    self.failures[key] = f"Batch API: batch {job.status}" + (f": {job.problem}" if job.problem else "")
        if self.budget:
            for reservation in reservations.values():  # lines that never ran cost nothing
                self.budget.settle(reservation, 0, 0)
        return answered

    def _missing(self, key: str) -> bool:
        r, i = self.where[key]
        return self.results[r][i - self.requests[r].first_sample] is None

    def _store_answers(self, keys: list[str], body: dict, reservation: float) -> int:
        before = (self.stats.prompt_tokens, self.stats.completion_tokens)
        no_usage = self.stats.no_usage
        got = completions_from(body, list(range(len(keys))), self.stats, bool(self.config.logprobs))
        for c, entry in got:
            key = keys[c.index]
            self.cache.put(key, self.config.model, entry)
            self.failures.pop(key, None)
            if key in self.where and self._missing(key):
                self._set(key, from_stored(self.where[key][1], entry))
                self.stats.done += 1
        for key in keys[len(got):]:
            self.failures[key] = "Batch API: the endpoint answered fewer samples than asked (n)"
        if self.budget:
            self.budget.settle(reservation, self.stats.prompt_tokens - before[0],
                               self.stats.completion_tokens - before[1], usage_known=self.stats.no_usage == no_usage)
        return len(got)
