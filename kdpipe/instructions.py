"""Open-ended instructions (Self-Instruct, Alpaca, Dolly field shapes) as kdpipe records.

An instruction record is task "instruction": its question is the instruction, with the
instance's input (when there is one) on the lines below; its gold is the reference output,
when the source has one (kept verbatim: it is compared by a judge or ROUGE-L, never by
exact match). The shapes import with no options:

    Self-Instruct  {"id", "instruction", "instances": [{"input", "output"}, ...], ...}
                   one record per instance; ids "<id>-<k>" when a task has several
    Alpaca         {"instruction", "input", "output"}
    Dolly          {"instruction", "context", "response", "category"}
"""

from __future__ import annotations

from typing import Any

INPUT_FIELDS = ("input", "context")
OUTPUT_FIELDS = ("output", "response")


def instruction_shape(first_row: dict[str, Any]) -> bool:
    """Whether a source row has an instruction field beside instances, an input or an output."""
    keys = {k.lower() for k in first_row}
    return "instruction" in keys and bool(keys & {"instances", *INPUT_FIELDS, *OUTPUT_FIELDS})


def flatten_instances(rows: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    """Self-Instruct rows (a list of instances each) as one Alpaca-shaped row per instance;
    rows without `instances` pass unchanged. A malformed instance list is left for the
    record builder to report (it reads `input`/`output` as given)."""
    out = []
    for loc, row in rows:
        instances = row.get("instances")
        if not isinstance(instances, list) or not instances or not all(isinstance(i, dict) for i in instances):
            out.append((loc, row))
            continue
        base = {k: v for k, v in row.items() if k != "instances"}
        for k, inst in enumerate(instances, start=1):
            flat = {**base, "input": inst.get("input"), "output": inst.get("output")}
            if len(instances) > 1 and base.get("id") not in (None, ""):
                flat["id"] = f"{base['id']}-{k}"
            out.append((loc, flat))
    return out


def instruction_fields(first_row: dict[str, Any]) -> dict[str, Any]:
    """The fields of an instruction row: question = instruction (+ input), answer = the reference."""
    lower = {k.lower(): k for k in first_row}
    question = [lower["instruction"]] + [lower[f] for f in INPUT_FIELDS if f in lower][:1]
    answer = next((lower[f] for f in OUTPUT_FIELDS if f in lower), None)
    ident = lower.get("id")
    used = {*question, answer, ident}
    return {"question": question, "answer": answer, "choices": None, "id": ident,
            "extra": [k for k in first_row if k not in used]}
