"""Shards of one job (`generate --shard I/N`, `eval --shard I/N`) and the checks `kdpipe merge` makes of a
set of them: the rules both stages share.

A record belongs to shard I of N by a hash of its id, so every machine given the same input and the same N
cuts the same shares without talking to the others, and a record keeps its shard however the input is
reordered or grown.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from kdpipe.errors import KdpipeError, UsageError

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(spec: str) -> tuple[int, int]:
    """"I/N" -> (I, N), 1 <= I <= N; UsageError otherwise."""
    m = _SPEC.match(spec or "")
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise UsageError(f"--shard must be I/N with 1 <= I <= N (e.g. 2/8), got {spec!r}")
    return int(m.group(1)), int(m.group(2))


def shard_of(record_id: str, count: int) -> int:
    """The shard (1..count) a record id belongs to."""
    h = hashlib.sha256(record_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(h[:8], "big") % count + 1


def check_shard_set(shards: list[Path], infos: list[dict]) -> int:
    """The shard count, once every shard of one run is given exactly once ("run", "count", "index" of each
    shard's metadata); KdpipeError naming the first shard that is from another run, given twice, or missing."""
    first = infos[0]
    for path, info in zip(shards, infos):
        if (info["run"], info["count"]) != (first["run"], first["count"]):
            raise KdpipeError(f"merge: {path} is from a different run than {shards[0]} (other input, options, "
                              "prompt or shard count)")
    count, seen = first["count"], {}
    for path, info in zip(shards, infos):
        if info["index"] in seen:
            raise KdpipeError(f"merge: shard {info['index']}/{count} given twice: {seen[info['index']]} and {path}")
        seen[info["index"]] = path
    missing = [str(i) for i in range(1, count + 1) if i not in seen]
    if missing:
        raise KdpipeError(f"merge: shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} of {count} "
                          "missing")
    return count
