"""Offline batches on someone else's engine: OpenAI batch JSONL out, its output file in.

`export_batch` writes the samples the cache lacks as OpenAI batch input lines (what
`vllm run-batch` and the OpenAI Batch API read; Ray Data LLM maps the same rows), one
line per run of consecutive missing samples of a request, with `n` for the run. Its
custom_id is the cache key of the run's first sample, so `import_batch` needs no
bookkeeping between the two: given the same requests (the same command, options and
prompts) it finds each output line's request and sample again and stores the answers
under the keys the online client and the Batch API path use, after which the normal
command is answered from the cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Iterator

from kdpipe.errors import KdpipeError
from kdpipe.outputs import atomic_file
from kdpipe.teacher.cache import ResponseCache, plain_aliases, request_key
from kdpipe.teacher.client import ChatRequest, Stats, TeacherConfig, request_body
from kdpipe.teacher.identity import cache_namespace
from kdpipe.teacher.response import completions_from

ENDPOINT = "/v1/chat/completions"


def _sample_keys(config: TeacherConfig, requests: list[ChatRequest]) -> list[list[str]]:
    """Each request's cache keys, sample by sample (keyed as the online client keys them)."""
    params = config.sampling_params()
    namespace = cache_namespace(config.resolved_base_url())
    return [[request_key(config.model, req.messages, params, i, namespace)
             for i in range(req.first_sample, req.first_sample + req.n)] for req in requests]


def export_batch(config: TeacherConfig, requests: list[ChatRequest], cache: ResponseCache,
                 path: str | Path) -> tuple[int, int]:
    """Write the missing samples of `requests` to `path` as OpenAI batch JSONL; returns
    (lines, samples). Nothing is sent; a sample asked twice is written once."""
    keys = _sample_keys(config, requests)
    cached = cache.get_many([k for ks in keys for k in ks])
    seen: set[str] = set()
    lines = samples = 0
    with atomic_file(path) as fp:
        for req, ks in zip(requests, keys):
            runs: list[list[str]] = []
            previous = False
            for k in ks:
                missing = k not in cached and k not in seen
                seen.add(k)
                if missing and previous:
                    runs[-1].append(k)
                elif missing:
                    runs.append([k])
                previous = missing
            for run in runs:
                row = {"custom_id": run[0], "method": "POST", "url": ENDPOINT,
                       "body": request_body(config, req.messages, len(run))}
                fp.write(json.dumps(row, ensure_ascii=False) + "\n")
                lines, samples = lines + 1, samples + len(run)
    return lines, samples


def batch_output_entries(lines: Iterable[bytes | str],
                         bad_line: Callable[[int, ValueError], Exception]) -> Iterator[dict]:
    """The JSON objects of a batch output file's lines, blank lines skipped; the first line that is not
    one raises `bad_line(line number, error)`.

    Not records.parse_json_line: that reader refuses what no input file may hold (a lone surrogate),
    while a teacher's answer is kept as received and marked malformed (response.py)."""
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            raise bad_line(number, e) from None
        yield entry


def import_batch(config: TeacherConfig, requests: list[ChatRequest], cache: ResponseCache,
                 path: str | Path) -> dict[str, int]:
    """Store the answers of a batch output file (OpenAI / vLLM run-batch format) for
    `requests` in the cache; returns counts: answers stored, lines that failed, lines for
    other requests. A file that answers none of them is refused in one line."""
    path = Path(path)
    if not path.is_file():
        raise KdpipeError(f"--import-batch {path}: no such file")
    keys = _sample_keys(config, requests)
    if config.logprobs:
        cache.alias_on_put(plain_aliases(config.model, requests, config.sampling_params(),
                                         cache_namespace(config.resolved_base_url())))
    where = {k: (r, j) for r, ks in enumerate(keys) for j, k in enumerate(ks)}
    counts = {"answers": 0, "failed": 0, "other": 0}
    stats = Stats()
    with open(path, "rb") as fp:
        for entry in batch_output_entries(fp, lambda number, e: KdpipeError(
                f"{path}:{number}: not a batch output line ({e}); nothing after it was imported")):
            start = where.get(entry.get("custom_id")) if isinstance(entry.get("custom_id"), str) else None
            if start is None:
                counts["other"] += 1
                continue
            response = entry.get("response") if isinstance(entry.get("response"), dict) else {}
            body = response.get("body")
            if response.get("status_code") != 200 or not isinstance(body, dict):
                counts["failed"] += 1  # left out of the cache: the normal command asks it again
                continue
            r, j = start
            run = keys[r][j:]
            for c, stored in completions_from(body, list(range(len(run))), stats, bool(config.logprobs)):
                cache.put(run[c.index], config.model, stored)
                counts["answers"] += 1
    if counts["answers"] == 0 and counts["other"]:
        raise KdpipeError(f"--import-batch {path}: none of its {counts['other']} lines answers this run's "
                          "requests (exported with other options, prompts or input?)")
    return counts
