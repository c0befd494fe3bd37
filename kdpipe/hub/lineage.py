"""How a kdpipe file was made, read back from the `.meta.json` files of the stages behind it.

Every stage writes `<out>.meta.json` naming its inputs with their digests; following those
inputs from an SFT file or a filtered file finds the seed source, the teacher and its
prompts, the filter's drop counts and the format style. Cards are written from this.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdpipe.outputs import meta_path


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The `.meta.json` beside `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(meta_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def lineage(path: str | Path) -> dict[str, Any]:
    """The facts of the stages behind `path` (itself included), newest first as found:
    {"stages": [...], "teachers": [...], "prompts": {...}, "sources": [...], "filter": {...}|None,
    "format": {...}|None}. A stage whose meta is missing is simply not listed."""
    stages: list[dict[str, Any]] = []
    seen: set[str] = set()
    todo = [Path(path)]
    while todo:
        p = todo.pop(0)
        key = str(p.resolve())
        if key in seen:
            continue
        seen.add(key)
        meta = read_meta(p)
        if meta is None:
            continue
        stages.append({"stage": meta.get("stage"), "file": p.name, "digest": meta.get("output_digest"),
                       "params": meta.get("params") or {}, "counts": meta.get("counts") or {},
                       "prompts": meta.get("prompts") or {}, "usage": meta.get("usage"),
                       "inputs": [Path(i).name for i in meta.get("inputs") or {}]})
        # The filter's contamination set (--against) is an input but not where the data came from.
        against = {str(Path(a).resolve()) for a in (meta.get("params") or {}).get("against") or []}
        todo += [Path(i) for i in meta.get("inputs") or {} if str(Path(i).resolve()) not in against]
    return summarize(stages)


def summarize(stages: list[dict[str, Any]]) -> dict[str, Any]:
    teachers, prompts, sources = [], {}, []
    filter_, format_ = None, None
    for s in stages:
        params = s["params"]
        if s["stage"] == "generate":
            teacher = {"model": params.get("model"), "mode": params.get("mode"),
                       "samples": params.get("samples"), "temperature": params.get("temperature"),
                       "batch": params.get("batch"), "records": s["counts"].get("records")
                       or s["counts"].get("written"),
                       "cost_usd": (s["usage"] or {}).get("cost_usd")}
            teachers.append(teacher)
            prompts.update(s["prompts"])
        elif s["stage"] == "seed":
            src = params.get("source") or {"kind": "file", "source": ", ".join(s["inputs"]) or s["file"]}
            sources.append({**src, "written": s["counts"].get("written")})
        elif s["stage"] == "filter" and filter_ is None:
            c = s["counts"]
            filter_ = {"input": c.get("input"), "kept": c.get("kept"), "samples_input": c.get("samples_input"),
                       "samples_kept": c.get("samples_kept"),
                       "rules": [r for r in c.get("rules") or [] if r.get("records") or r.get("samples")],
                       "against": params.get("against") or []}
        elif s["stage"] == "format" and format_ is None:
            format_ = {"style": params.get("style"), "chat": params.get("chat"), "rows": s["counts"].get("rows"),
                       "train": s["counts"].get("train"), "val": s["counts"].get("val")}
    # A teacher model once per model and mode (expand and label are two uses of one teacher).
    unique = list({(t["model"], t["mode"]): t for t in teachers}.values())
    return {"stages": [{"stage": s["stage"], "file": s["file"], "digest": s["digest"]} for s in stages],
            "teachers": unique, "prompts": prompts, "sources": sources, "filter": filter_, "format": format_}
