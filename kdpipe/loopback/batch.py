"""The loopback teacher's Files and Batch API: /v1/files and /v1/batches, as OpenAI serves them.

    POST /v1/files                 multipart (purpose, file) -> file object
    GET  /v1/files[?purpose=&after=&limit=]  list, paged;  GET /v1/files/{id};  GET /v1/files/{id}/content
    POST /v1/batches               {input_file_id, endpoint, completion_window, metadata} -> batch
    GET  /v1/batches[?after=&limit=]  list, newest first, paged;  GET /v1/batches/{id}
    POST /v1/batches/{id}/cancel

A batch is validated (each line JSON with a unique custom_id, method POST,
the batch's url and a body; else the batch "failed"), then answered line by
line in the background (`batch_latency` seconds a line) with the same answers,
usage and faults as /v1/chat/completions: a line drawn rate_limit,
server_error, malformed or hang goes to the error file with its HTTP status;
truncated and empty change the text. The first `expire_batches` batches
expire half way: the lines not reached go to the error file with code
"batch_expired", as OpenAI does when the completion window closes.

Every answered choice, online or in a batch, is billed in `teacher.paid`
(prompt digest -> choices billed, see loopback.replies.bill), so tests can check
nothing was paid twice.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time

from kdpipe.loopback.replies import answered, chat_completion, json_reply

TERMINAL = ("completed", "expired", "failed", "cancelled")
PAGE_SIZE = 20  # most items per list page (OpenAI allows up to 100 for batches)
LINE_FAILURES = {"rate_limit": 429, "server_error": 500, "malformed": 500, "hang": 504}


class BatchEndpoints:
    """The files and batches one loopback server holds, and its /v1/files and /v1/batches routes."""

    def __init__(self, teacher):  # the LoopbackTeacher whose answers and bill the batches share
        self.teacher = teacher
        self.files: dict[str, dict] = {}  # id -> {"object": file fields, "content": bytes}
        self.batches: dict[str, dict] = {}  # id -> batch object (dicts keep creation order)
        self._tasks: set = set()
        self._ids = itertools.count(1)

    async def handle(self, method: str, path: str, headers: dict, body: bytes, query: str = ""):
        """One request under /v1/files or /v1/batches -> (status, headers, body)."""
        t = self.teacher
        if t.api_key is not None and headers.get("authorization") != f"Bearer {t.api_key}":
            return json_reply(401, {"error": {"message": "Incorrect API key provided"}})
        parts = path.rstrip("/").split("/")[2:]  # ["files", id, "content"], ["batches", id, "cancel"]
        route = (method, parts[0], len(parts), parts[-1] if len(parts) == 3 else None)
        item = parts[1] if len(parts) > 1 else None
        if route == ("POST", "files", 1, None):
            return self._upload(headers, body)
        if route == ("GET", "files", 1, None):
            return json_reply(200, _listing([f["object"] for f in self.files.values()], query))
        if route[:3] == ("GET", "files", 2) or route == ("GET", "files", 3, "content"):
            f = self.files.get(item)
            if f is None:
                return _not_found("file")
            if len(parts) == 2:
                return json_reply(200, f["object"])
            t.stats["files_downloaded"] += 1
            return 200, {}, f["content"]
        if route == ("POST", "batches", 1, None):
            return self._create(body)
        if route == ("GET", "batches", 1, None):
            return json_reply(200, _listing(list(self.batches.values()), query))
        if route[:3] == ("GET", "batches", 2) or route == ("POST", "batches", 3, "cancel"):
            b = self.batches.get(item)
            if b is None:
                return _not_found("batch")
            if len(parts) == 3 and b["status"] not in TERMINAL:
                b["status"] = "cancelling"
            t.stats["batch_polls"] += len(parts) == 2
            return json_reply(200, b)
        return json_reply(404, {"error": {"message": f"no route {method} {path}"}})

    def _new_file(self, name: str, purpose: str, content: bytes) -> dict:
        fid = f"file-{next(self._ids):06d}"
        obj = {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
               "filename": name, "purpose": purpose, "status": "processed"}
        self.files[fid] = {"object": obj, "content": content}
        self.teacher.stats["files_uploaded" if purpose == "batch" else "files_written"] += 1
        return obj

    def _upload(self, headers: dict, body: bytes):
        form = _multipart(headers.get("content-type", ""), body)
        if "file" not in form:
            return json_reply(400, {"error": {"message": "send multipart/form-data with a 'file' part"}})
        filename, content = form["file"]
        purpose = form.get("purpose", (None, b"batch"))[1].decode()
        return json_reply(200, self._new_file(filename or "upload.jsonl", purpose, content))

    def _create(self, raw: bytes):
        try:
            body = json.loads(raw)
        except ValueError:
            return json_reply(400, {"error": {"message": "body is not JSON"}})
        source = self.files.get(body.get("input_file_id"))
        if source is None:
            return _not_found("input file")
        bid = f"batch_{next(self._ids):06d}"
        batch = {"id": bid, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                 "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window", "24h"),
                 "status": "validating", "output_file_id": None, "error_file_id": None,
                 "created_at": int(time.time()), "metadata": body.get("metadata"),
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        self.batches[bid] = batch
        self.teacher.stats["batches_created"] += 1
        task = asyncio.get_running_loop().create_task(self._process(batch, source["content"]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return json_reply(200, batch)

    async def _process(self, batch: dict, content: bytes) -> None:
        teacher = self.teacher
        await asyncio.sleep(0)
        lines, problem = _parse_input(content, batch["endpoint"])
        if problem:
            batch.update(status="failed", failed_at=int(time.time()),
                         errors={"object": "list", "data": [{"code": "invalid_input", "message": problem}]})
            return
        counts = batch["request_counts"]
        counts["total"] = len(lines)
        batch.update(status="in_progress", in_progress_at=int(time.time()))
        expire_at = len(lines)
        if teacher.expire_batches > 0:
            teacher.expire_batches -= 1
            expire_at = len(lines) // 2
        output, errors = [], []
        for k, line in enumerate(lines):
            if batch["status"] == "cancelling" or k >= expire_at:
                code = "batch_cancelled" if batch["status"] == "cancelling" else "batch_expired"
                errors.append({"id": f"batch_req_{k}", "custom_id": line["custom_id"], "response": None,
                               "error": {"code": code, "message": "This request could not be executed before "
                                                                  "the completion window expired."}})
                counts["failed"] += 1
                continue
            if teacher.batch_latency:
                await asyncio.sleep(teacher.batch_latency)
            entry = _answer_line(teacher, line, k)
            (output if entry["response"]["status_code"] == 200 else errors).append(entry)
            counts["completed" if entry["response"]["status_code"] == 200 else "failed"] += 1
        cancelled = batch["status"] == "cancelling"
        batch["status"] = "finalizing"
        await asyncio.sleep(0)
        now = int(time.time())
        if output:
            batch["output_file_id"] = self._new_file(f"{batch['id']}_output.jsonl", "batch_output",
                                                     _jsonl(output))["id"]
        if errors:
            batch["error_file_id"] = self._new_file(f"{batch['id']}_error.jsonl", "batch_output",
                                                    _jsonl(errors))["id"]
        if expire_at < len(lines):
            batch.update(status="expired", expired_at=now)
        elif cancelled:
            batch.update(status="cancelled", cancelled_at=now)
        else:
            batch.update(status="completed", completed_at=now)


def _listing(items: list[dict], query: str = "") -> dict:
    """A list response, newest first, paged as OpenAI pages them: `limit` items (default
    PAGE_SIZE, small so that clients are seen to page) after the id `after`."""
    from urllib.parse import parse_qs

    params = {k: v[-1] for k, v in parse_qs(query).items()}
    newest_first = items[::-1]
    if params.get("purpose"):
        newest_first = [i for i in newest_first if i.get("purpose", params["purpose"]) == params["purpose"]]
    start = 0
    if params.get("after"):
        ids = [i["id"] for i in newest_first]
        start = ids.index(params["after"]) + 1 if params["after"] in ids else len(ids)
    try:
        limit = max(1, min(int(params.get("limit") or PAGE_SIZE), PAGE_SIZE))
    except ValueError:
        limit = PAGE_SIZE
    page = newest_first[start:start + limit]
    return {"object": "list", "data": page, "has_more": start + limit < len(newest_first)}


def _not_found(what: str):
    return json_reply(404, {"error": {"message": f"No such {what}"}})


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The parts of a multipart/form-data body: name -> (filename, bytes)."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        return {}
    parts = {}
    for chunk in body.split(b"--" + m.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        disposition = head.decode("utf-8", "replace")
        name = re.search(r'name="([^"]*)"', disposition)
        filename = re.search(r'filename="([^"]*)"', disposition)
        if name:
            parts[name.group(1)] = (filename.group(1) if filename else None, data[:-2] if data.endswith(b"\r\n")
                                    else data)
    return parts


def _parse_input(content: bytes, endpoint: str) -> tuple[list[dict], str | None]:
    """The lines of a batch input file, or the reason the whole batch fails validation."""
    lines, seen = [], set()
    for n, raw in enumerate(content.decode("utf-8", "replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            return [], f"line {n}: not JSON"
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str) \
                or line.get("method") != "POST" or line.get("url") != endpoint or not isinstance(line.get("body"), dict):
            return [], f"line {n}: needs custom_id, method POST, url {endpoint} and a body"
        if line["custom_id"] in seen:
            return [], f"line {n}: duplicate custom_id {line['custom_id']!r}"
        seen.add(line["custom_id"])
        lines.append(line)
    return lines, (None if lines else "empty input file")


def _answer_line(teacher, line: dict, k: int) -> dict:
    """One batch line answered as /v1/chat/completions would answer it."""
    body = dict(line["body"])
    entry = {"id": f"batch_req_{k}", "custom_id": line["custom_id"], "error": None}
    if teacher.models is not None and body.get("model") not in teacher.models:
        entry["response"] = {"status_code": 404, "request_id": f"req_{k}", "body": {
            "error": {"message": f"model {body.get('model')!r} does not exist"}}}
        return entry
    if teacher.reject_n and int(body.get("n") or 1) > 1:
        entry["response"] = {"status_code": 400, "request_id": f"req_{k}", "body": {
            "error": {"message": "n must be 1"}}}
        return entry
    if teacher.max_n is not None:
        body["n"] = min(int(body.get("n") or 1), teacher.max_n)
    fault = teacher.draw_fault()
    if fault:
        teacher.stats[f"batch_{fault}"] += 1
    if fault in LINE_FAILURES:
        entry["response"] = {"status_code": LINE_FAILURES[fault], "request_id": f"req_{k}", "body": {
            "error": {"message": f"injected {fault}", "type": "server_error"}}}
        return entry
    texts, finish, _ = answered(teacher, body, fault)
    teacher.stats["batch_answered"] += 1
    entry["response"] = {"status_code": 200, "request_id": f"req_{k}",
                         "body": chat_completion(f"chatcmpl-batch-{k}", body, texts, finish)}
    return entry


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
