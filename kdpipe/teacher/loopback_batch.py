"""The loopback teacher's Files and Batch API: /v1/files and /v1/batches, as OpenAI serves them.

    POST /v1/files                 multipart (purpose, file) -> file object
    GET  /v1/files[?purpose=]      list;  GET /v1/files/{id};  GET /v1/files/{id}/content
    POST /v1/batches               {input_file_id, endpoint, completion_window, metadata} -> batch
    GET  /v1/batches               list, newest first;  GET /v1/batches/{id}
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
(prompt digest -> choices billed), so tests can check nothing was paid twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time

from kdpipe.teacher.loopback import LoopbackTeacher, _usage

TERMINAL = ("completed", "expired", "failed", "cancelled")
LINE_FAILURES = {"rate_limit": 429, "server_error": 500, "malformed": 500, "hang": 504}


def bill(teacher: LoopbackTeacher, body: dict, choices: int) -> None:
    """Record that `choices` answers to this model and these messages were paid for."""
    digest = hashlib.sha256(json.dumps([body.get("model"), body.get("messages")], sort_keys=True)
                            .encode()).hexdigest()[:16]
    teacher.paid[digest] += choices


def add_batch_routes(app, teacher: LoopbackTeacher) -> None:
    from aiohttp import web

    files: dict[str, dict] = {}  # id -> {"object": file fields, "content": bytes}
    batches: dict[str, dict] = {}  # id -> batch object (dicts keep creation order)
    tasks: set = set()
    ids = itertools.count(1)

    def refused(request):
        if teacher.api_key is not None and request.headers.get("Authorization") != f"Bearer {teacher.api_key}":
            return web.json_response({"error": {"message": "Incorrect API key provided"}}, status=401)
        return None

    def not_found(what):
        return web.json_response({"error": {"message": f"No such {what}"}}, status=404)

    def new_file(name: str, purpose: str, content: bytes) -> dict:
        fid = f"file-{next(ids):06d}"
        obj = {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
               "filename": name, "purpose": purpose, "status": "processed"}
        files[fid] = {"object": obj, "content": content}
        teacher.stats["files_uploaded" if purpose == "batch" else "files_written"] += 1
        return obj

    async def upload(request):
        if (r := refused(request)) is not None:
            return r
        form = await request.post()
        field = form.get("file")
        if field is None or not hasattr(field, "file"):
            return web.json_response({"error": {"message": "missing file"}}, status=400)
        return web.json_response(new_file(field.filename, form.get("purpose", "batch"), field.file.read()))

    async def list_files(request):
        if (r := refused(request)) is not None:
            return r
        purpose = request.query.get("purpose")
        data = [f["object"] for f in files.values() if purpose in (None, f["object"]["purpose"])]
        return web.json_response({"object": "list", "data": data[::-1], "has_more": False})

    async def get_file(request):
        if (r := refused(request)) is not None:
            return r
        f = files.get(request.match_info["id"])
        return web.json_response(f["object"]) if f else not_found("file")

    async def file_content(request):
        if (r := refused(request)) is not None:
            return r
        f = files.get(request.match_info["id"])
        if f is None:
            return not_found("file")
        teacher.stats["files_downloaded"] += 1
        return web.Response(body=f["content"], content_type="application/jsonl")

    async def create_batch(request):
        if (r := refused(request)) is not None:
            return r
        body = await request.json()
        source = files.get(body.get("input_file_id"))
        if source is None:
            return not_found("input file")
        bid = f"batch_{next(ids):06d}"
        batch = {"id": bid, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                 "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window", "24h"),
                 "status": "validating", "output_file_id": None, "error_file_id": None,
                 "created_at": int(time.time()), "metadata": body.get("metadata"),
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        batches[bid] = batch
        teacher.stats["batches_created"] += 1
        task = asyncio.get_running_loop().create_task(process(batch, source["content"]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return web.json_response(batch)

    async def list_batches(request):
        if (r := refused(request)) is not None:
            return r
        return web.json_response({"object": "list", "data": list(batches.values())[::-1], "has_more": False})

    async def get_batch(request):
        if (r := refused(request)) is not None:
            return r
        teacher.stats["batch_polls"] += 1
        b = batches.get(request.match_info["id"])
        return web.json_response(b) if b else not_found("batch")

    async def cancel_batch(request):
        if (r := refused(request)) is not None:
            return r
        b = batches.get(request.match_info["id"])
        if b is None:
            return not_found("batch")
        if b["status"] not in TERMINAL:
            b["status"] = "cancelling"
        return web.json_response(b)

    async def process(batch: dict, content: bytes) -> None:
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
            batch["output_file_id"] = new_file(f"{batch['id']}_output.jsonl", "batch_output", _jsonl(output))["id"]
        if errors:
            batch["error_file_id"] = new_file(f"{batch['id']}_error.jsonl", "batch_output", _jsonl(errors))["id"]
        if expire_at < len(lines):
            batch.update(status="expired", expired_at=now)
        elif cancelled:
            batch.update(status="cancelled", cancelled_at=now)
        else:
            batch.update(status="completed", completed_at=now)

    app.router.add_post("/v1/files", upload)
    app.router.add_get("/v1/files", list_files)
    app.router.add_get("/v1/files/{id}", get_file)
    app.router.add_get("/v1/files/{id}/content", file_content)
    app.router.add_post("/v1/batches", create_batch)
    app.router.add_get("/v1/batches", list_batches)
    app.router.add_get("/v1/batches/{id}", get_batch)
    app.router.add_post("/v1/batches/{id}/cancel", cancel_batch)


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


def _answer_line(teacher: LoopbackTeacher, line: dict, k: int) -> dict:
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
    texts, _ = teacher.answer(body)
    finish = ["stop"] * len(texts)
    if fault == "truncated":
        texts, finish = [t[: len(t) // 2] for t in texts], ["length"] * len(texts)
    elif fault == "empty":
        texts = [""] * len(texts)
    bill(teacher, body, len(texts))
    teacher.stats["batch_answered"] += 1
    entry["response"] = {"status_code": 200, "request_id": f"req_{k}", "body": {
        "id": f"chatcmpl-batch-{k}", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "loopback"),
        "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": f}
                    for i, (t, f) in enumerate(zip(texts, finish))],
        "usage": _usage(body.get("messages") or [], texts)}}
    return entry


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
