"""Sharded label runs: `generate --shard I/N` and `kdpipe merge`.

A record belongs to shard I of N by a hash of its id (kdpipe/shards.py, shared with eval). Each shard's .meta.json names
the shard, the input (path and digest) and a digest of what decides the records' bytes
(the run), so `merge` can refuse shards that were not cut from one run, and put the
records back in input order: the file an unsharded run would have written.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from kdpipe.errors import KdpipeError, UsageError
from kdpipe.outputs import (
    atomic_file,
    check_outputs_differ,
    file_digest,
    meta_path,
    write_meta,
)
from kdpipe.records import read_records
from kdpipe.shards import check_shard_set, parse_shard, shard_of  # noqa: F401  (parse_shard: generate's)
# What decides a labelled record's bytes besides its input; not the endpoint, cache or concurrency,
# which each machine sets for itself.
SUMMED_USAGE = ("prompt_tokens", "completion_tokens", "cost_usd", "requests", "retries", "cached_samples",
                "not_sent_samples", "responses_without_usage", "duplicate_samples")
RUN_FIELDS = ("mode", "model", "samples", "temperature", "max_tokens", "stop", "seed", "logprobs")


def run_digest(params: dict[str, Any], prompts: dict[str, str], input_digest: str) -> str:
    """The digest shards of one run share: the input, the prompts and RUN_FIELDS."""
    key = {"input": input_digest, "prompts": prompts, **{k: params.get(k) for k in RUN_FIELDS}}
    return "sha256:" + hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def shard_meta(seeds: Path, index: int, count: int, params: dict[str, Any], prompts: dict[str, str],
               written: int) -> dict[str, Any]:
    digest = file_digest(seeds)
    return {"index": index, "count": count, "input": str(seeds), "input_digest": digest,
            "run": run_digest(params, prompts, digest), "records": written}


def _shard_info(path: Path) -> tuple[dict, dict]:
    mp = meta_path(path)
    if not path.is_file():
        raise KdpipeError(f"merge: {path}: no such file")
    try:
        meta = json.loads(mp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise KdpipeError(f"merge: {path}: no readable {mp.name} beside it (written by generate --shard)") from None
    info = meta.get("shard") if isinstance(meta, dict) else None
    if not isinstance(info, dict) or not {"index", "count", "run", "input", "input_digest"} <= set(info):
        raise KdpipeError(f"merge: {path} is not a shard (its {mp.name} has no shard; run generate --shard I/N)")
    if meta.get("output_digest") not in (None, file_digest(path)):
        raise KdpipeError(f"merge: {path} was changed after generate wrote it (its digest differs from "
                          f"{mp.name})")
    return meta, info


def _lines(path: Path):
    with open(path, "rb") as fp:
        for raw in fp:
            if raw.strip():
                yield raw if raw.endswith(b"\n") else raw + b"\n"


def _id(raw: bytes):
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    return obj.get("id") if isinstance(obj, dict) else None


def merge_shards(shards: list[Path], out: Path, seeds: Path | None = None) -> dict[str, Any]:
    """Join the shard outputs of one `generate --shard` run into `out` (+ .meta.json), in the
    order of the input they were cut from (`seeds`, default: the path their .meta.json names).
    Returns the summed counts."""
    shards = [Path(s) for s in shards]
    if not shards:
        raise UsageError("merge needs the shard outputs")
    metas, infos = zip(*(_shard_info(p) for p in shards))
    count = check_shard_set(shards, list(infos))
    seeds = Path(seeds or infos[0]["input"])
    if not seeds.is_file():
        raise KdpipeError(f"merge: the input the shards were cut from, {seeds}, is not there; give it with --seeds")
    if file_digest(seeds) != infos[0]["input_digest"]:
        raise KdpipeError(f"merge: {seeds} is not the input the shards were cut from (its digest differs)")
    check_outputs_differ([seeds, *shards], [out, meta_path(out)])
    by_index = {info["index"]: path for path, info in zip(shards, infos)}
    readers = {i: _lines(by_index[i]) for i in by_index}
    with atomic_file(out, "wb") as fp:
        for n, record in enumerate(read_records(seeds), start=1):
            i = shard_of(record.id, count)
            raw = next(readers[i], None)
            if raw is None or _id(raw) != record.id:
                raise KdpipeError(f"merge: {by_index[i]} does not follow its input at record {n} "
                                  f"(id {record.id!r}); it is not this input's shard {i}/{count}")
            fp.write(raw)
        for i, reader in readers.items():
            if next(reader, None) is not None:
                raise KdpipeError(f"merge: {by_index[i]} holds more records than its share of {seeds}")
    counts: Counter = Counter()
    usage: Counter = Counter()
    for meta in metas:
        counts.update({k: v for k, v in meta.get("counts", {}).items() if isinstance(v, (int, float))})
        usage.update({k: v for k, v in (meta.get("usage") or {}).items() if k in SUMMED_USAGE and
                      isinstance(v, (int, float)) and not isinstance(v, bool)})
    write_meta(out, stage="merge", params={"shards": [str(s) for s in shards], "count": count},
               inputs=[seeds, *shards], counts=dict(counts),
               extra={"usage": dict(usage), "run": infos[0]["run"], "generate_params": metas[0].get("params")})
    return dict(counts)
