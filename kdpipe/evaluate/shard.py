"""`eval --shard I/N` and the merge of eval shards by `kdpipe merge`.

Each machine scores its share of the questions (by id, kdpipe/shards.py: the share `generate --shard`
cuts) and writes a shard eval.json, its predictions and its metadata naming the shard and the run. The
merge rebuilds what one unsharded eval writes:

- the predictions: every line as its shard wrote it, put back in the unsharded order (per model, the
  questions in input order), so the file is the unsharded one byte for byte;
- the scorecard: recomputed from counts, never averaged. Correct answers, questions, unparsed answers,
  teacher tokens and cost add up; accuracy and its Wilson interval are computed again from the summed
  counts (an interval does not combine from intervals). Seconds add up to machine-seconds, so
  examples/s is the rate of one machine, not of the sharded job.

Instruction records are not sharded: the judge's verdicts and ROUGE-L are aggregated over the whole set.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdpipe.errors import KdpipeError, UsageError
from kdpipe.intervals import wilson_interval
from kdpipe.outputs import check_outputs_differ, file_digest, meta_path
from kdpipe.records import Record, load_records
from kdpipe.shards import check_shard_set, parse_shard, shard_of

# What decides the predictions besides the questions: the models asked and how; not --predictions, the
# teacher's endpoint, cache or concurrency, which each machine sets for itself.
RUN_FIELDS = ("model", "baseline", "batch_size", "max_new_tokens", "limit", "teacher_prompt")
TEACHER_FIELDS = ("model", "max_tokens")
SUMMED = ("n", "correct", "unparsed")


def take_shard(records: list[Record], eval_path: Path, params: dict[str, Any]) -> tuple[list[Record], dict]:
    """(this shard's questions, the shard record for the metadata); `params`: the eval options as a dict."""
    index, count = parse_shard(params["shard"])
    if any(r.task == "instruction" for r in records):
        raise UsageError("--shard does not apply to instruction records (the judge's scores are taken over the "
                         "whole set): run that eval unsharded")
    digest = file_digest(eval_path)
    return [r for r in records if shard_of(r.id, count) == index], {
        "index": index, "count": count, "input": str(eval_path), "input_digest": digest,
        "run": run_digest(params, digest)}


def run_digest(params: dict[str, Any], input_digest: str) -> str:
    """The digest the shards of one eval share: the questions, RUN_FIELDS, and the models' own files."""
    teacher = params.get("teacher") or {}
    key = {"input": input_digest, **{k: params.get(k) for k in RUN_FIELDS},
           "teacher": {k: teacher.get(k) for k in TEACHER_FIELDS},
           "models": {role: _model_digest(params.get(role)) for role in ("model", "baseline")}}
    return "sha256:" + hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _model_digest(spec: str | None) -> str | None:
    """A local run directory or model folder, by the file that names what it is (a retrained run differs)."""
    if not spec:
        return None
    for name in ("train_config.json", "config.json"):
        if (Path(spec) / name).is_file():
            return file_digest(Path(spec) / name)
    return None


def is_eval_shard(path: Path) -> bool:
    """Whether `path` was written by `eval --shard` (its metadata says so)."""
    try:
        meta = json.loads(meta_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("stage") == "eval" and isinstance(meta.get("shard"), dict)


@dataclass
class Merged:
    eval_path: str
    n: int
    skipped_no_gold: int
    models: list[dict[str, Any]]
    predictions: list[dict[str, Any]]  # in the unsharded order
    params: dict[str, Any]  # the eval options, the shard and its predictions path taken out


def merge_parts(shards: list[Path], outputs: list[Path], seeds: Path | None = None) -> Merged:
    """Read and check the shards of one `eval --shard` run; their predictions and scorecard joined."""
    metas, infos = zip(*(_read_meta(p) for p in shards))
    check_shard_set(shards, list(infos))
    source = Path(seeds or infos[0]["input"])
    if not source.is_file():
        raise KdpipeError(f"merge: the questions the shards were cut from, {source}, are not there; give them "
                          "with --seeds")
    if file_digest(source) != infos[0]["input_digest"]:
        raise KdpipeError(f"merge: {source} is not the eval file the shards were cut from (its digest differs)")
    pred_files = [_predictions_file(p, m) for p, m in zip(shards, metas)]
    check_outputs_differ([source, *shards, *pred_files], outputs)
    cards = [_read_json(p) for p in shards]
    roles = [m["role"] for m in cards[0]["models"]]
    by_key: dict[tuple[str, str], dict] = {}
    for path, card, preds in zip(shards, cards, pred_files):
        if [m["role"] for m in card["models"]] != roles:
            raise KdpipeError(f"merge: {path} scores other models than {shards[0]}")
        for line_no, line in enumerate(preds.read_text(encoding="utf-8").splitlines(), start=1):
            p = json.loads(line)
            if (p["model"], p["id"]) in by_key:
                raise KdpipeError(f"merge: {preds}:{line_no}: question {p['id']!r} of the {p['model']} is in "
                                  "two shards")
            by_key[p["model"], p["id"]] = p
    asked = {i for _, i in by_key}
    order = [r.id for r in load_records(source) if r.id in asked]
    predictions = []
    for role in roles:
        for rid in order:
            if (role, rid) not in by_key:
                raise KdpipeError(f"merge: no shard holds the {role}'s answer to question {rid!r}")
            predictions.append(by_key.pop((role, rid)))
    params = {**metas[0]["params"], "shard": None, "predictions": None}
    return Merged(str(source), sum(c["n"] for c in cards), cards[0]["skipped_no_gold"],
                  [_merge_scores([c["models"][k] for c in cards]) for k in range(len(roles))], predictions, params)


def _merge_scores(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One model's scorecard entry from its entries in every shard."""
    merged = dict(parts[0])
    for key in SUMMED:
        merged[key] = sum(p[key] for p in parts)
    n, correct = merged["n"], merged["correct"]
    merged["accuracy"] = correct / n if n else 0.0
    merged["ci95"] = list(wilson_interval(correct, n))
    merged["seconds"] = round(sum(p["seconds"] for p in parts), 3)
    merged["examples_per_s"] = round(n / merged["seconds"], 2) if merged["seconds"] > 0 else 0.0
    costs = [p.get("cost_usd") for p in parts]
    merged["cost_usd"] = None if None in costs else sum(costs)
    tokens = [p.get("tokens") for p in parts]
    merged["tokens"] = None if None in tokens else {k: sum(t.get(k, 0) for t in tokens) for k in tokens[0]}
    return merged


def _read_meta(path: Path) -> tuple[dict, dict]:
    if not path.is_file():
        raise KdpipeError(f"merge: {path}: no such file")
    if not is_eval_shard(path):
        raise KdpipeError(f"merge: {path} is not an eval shard (no {meta_path(path).name} from eval --shard "
                          "beside it)")
    meta = _read_json(meta_path(path))
    if meta.get("output_digest") not in (None, file_digest(path)):
        raise KdpipeError(f"merge: {path} was changed after eval wrote it (its digest differs from "
                          f"{meta_path(path).name})")
    return meta, meta["shard"]


def _predictions_file(path: Path, meta: dict) -> Path:
    named = meta.get("params", {}).get("predictions")
    found = Path(named) if named else path.with_name(path.stem + ".predictions.jsonl")
    if not found.is_file():
        raise KdpipeError(f"merge: {path}: its predictions {found} are not there")
    return found


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise KdpipeError(f"merge: {path}: missing or not JSON") from None
    if not isinstance(obj, dict):
        raise KdpipeError(f"merge: {path}: not a JSON object")
    return obj
