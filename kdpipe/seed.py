"""`kdpipe seed`: import questions from a user's file or dataset into kdpipe records.

Reads JSONL, a JSON array, CSV, Parquet, a `datasets` folder saved with
`save_to_disk`, or a Hub dataset id or local dataset folder (hub/source.py); finds the question, answer and choices fields (or takes them
from flags); decides the task type; gives each question a stable id; removes
exact duplicates; and, when asked, holds out a deterministic eval split.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from kdpipe import answers
from kdpipe.errors import InputError, KdpipeError, UsageError
from kdpipe.instructions import flatten_instances, instruction_fields, instruction_shape
from kdpipe.hub.source import choose_split, is_dataset_source, is_saved_dataset, open_dataset
from kdpipe.options import Options, option
from kdpipe.keys import question_key, split_rank
from kdpipe.records import (
    TASKS, Record, atomic_file, check_outputs_differ, JsonlWriter, write_meta,
)

# Field names tried in order when no --*-field flag is given (compared case-insensitively).
QUESTION_FIELDS = ("question", "input", "prompt", "instruction", "query", "problem", "text", "sentence")
ANSWER_FIELDS = ("answer", "label", "output", "target", "gold", "solution", "response", "answerkey")
CHOICES_FIELDS = ("choices", "options", "answer_choices", "candidates")
ID_FIELDS = ("id", "uid", "qid", "idx", "question_id")
# A question split in two fields (SVAMP's Body + Question) is joined back together.
CONTEXT_FIELDS = ("body", "context", "passage")


@dataclass
class SeedOptions(Options):
    question_field: str | None = option(
        None, "Field(s) holding the question; several comma-separated fields are joined with a newline.")
    answer_field: str | None = option(None, "Field holding the gold answer.")
    choices_field: str | None = option(None, "Field holding the options of a multiple-choice question.")
    id_field: str | None = option(None, "Field holding an id (else ids are content hashes).")
    task: str | None = option(None, "numeric | choice | text | instruction (detected when omitted; rows with "
                                    "an instruction field and instances/input/output are instruction).")
    split: str | None = option(None, "Split of a saved DatasetDict or of a Hub dataset (default: train, or "
                                     "the only split).")
    config: str | None = option(None, "Configuration (subset) of a Hub dataset or dataset folder, e.g. main.")
    revision: str | None = option(None, "Branch, tag or commit of a Hub dataset (default: its main branch).")
    eval_out: Path | None = option(None, "Also hold out eval questions into this file.")
    eval_frac: float = option(0.1, "Share of questions held out.")
    seed: int = option(0, "Seed of the held-out split.")
    limit: int | None = option(None, "Read only the first N rows.")

    def problems(self) -> list[str]:
        problems = []
        if self.task is not None and self.task not in TASKS:
            problems.append(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if not (0.0 < self.eval_frac < 1.0):
            problems.append(f"--eval-frac must be between 0 and 1 (exclusive), got {self.eval_frac}")
        if self.limit is not None and self.limit < 1:
            problems.append("--limit must be at least 1")
        if not 0 <= self.seed < 2 ** 63:
            problems.append("--seed must be between 0 and 2**63 - 1")
        return problems


@dataclass
class SeedResult:
    read: int
    duplicates: int
    written: int
    held_out: int
    task: str
    fields: dict[str, Any]


# ------------------------------------------------------------------ reading sources


def read_rows(src: Path, split: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (location, row) from any supported source; location is a line or row number."""
    if not src.exists():
        raise InputError(src, "no such file or folder")
    if src.is_dir():
        yield from _read_saved_dataset(src, split)
        return
    suffix = src.suffix.lower()
    if suffix == ".csv" or suffix == ".tsv":
        yield from _read_csv(src, delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix in (".parquet", ".pq"):
        yield from _read_parquet(src)
    else:
        yield from _read_json(src)


def _read_json(src: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """A JSON array of objects, or JSON Lines (whatever the extension says)."""
    from kdpipe.records import iter_json_objects, loads

    with open(src, "rb") as fp:
        head = fp.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head:
        raise InputError(src, "empty file: no records")
    if not head.startswith(b"["):
        yield from iter_json_objects(src)
        return
    raw = src.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(src, "not valid UTF-8", line) from None
    try:
        data = loads(text)
    except json.JSONDecodeError as e:
        raise InputError(src, f"invalid JSON: {e.msg} (column {e.colno})", e.lineno) from None
    except ValueError as e:
        raise InputError(src, str(e)) from None
    if not data:
        raise InputError(src, "empty JSON array: no records")
    for i, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            raise InputError(src, f"item {i} of the array is not a JSON object")
        yield i, obj


def _read_csv(src: Path, delimiter: str) -> Iterator[tuple[int, dict[str, Any]]]:
    row_start = 1
    try:
        with open(src, newline="", encoding="utf-8-sig") as fp:
            # strict: an unterminated quote is an error, not one field swallowing every later row.
            reader = csv.DictReader(fp, delimiter=delimiter, strict=True)
            if not reader.fieldnames:
                raise InputError(src, "empty file: no header row")
            n = 0
            while True:
                row_start = reader.line_num + 1
                row = next(reader, None)
                if row is None:
                    break
                if None in row:
                    raise InputError(src, "more values than header columns", reader.line_num)
                n += 1
                yield reader.line_num, dict(row)
            if not n:
                raise InputError(src, "no rows below the header")
    except UnicodeDecodeError:
        raise InputError(src, "not valid UTF-8") from None
    except csv.Error as e:
        if "unexpected end of data" in str(e):
            raise InputError(src, "invalid CSV: a quote opened in this row is never closed", row_start) from None
        raise InputError(src, f"invalid CSV: {e}", row_start) from None


def _read_parquet(src: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(src)
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise InputError(src, f"not a readable Parquet file ({type(e).__name__}: {e})") from None
    if table.num_rows == 0:
        raise InputError(src, "empty Parquet file: no rows")
    for i, row in enumerate(table.to_pylist(), start=1):
        yield i, row


def _read_saved_dataset(src: Path, split: str | None) -> Iterator[tuple[int, dict[str, Any]]]:
    if not is_saved_dataset(src):
        raise InputError(src, "is a folder but not a dataset saved with save_to_disk")
    import datasets

    try:
        ds = datasets.load_from_disk(str(src))
    except Exception as e:  # datasets raises several types for a damaged folder
        raise InputError(src, f"cannot load saved dataset ({type(e).__name__}: {e})") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[choose_split(src, list(ds), split)]
    if len(ds) == 0:
        raise InputError(src, "empty dataset: no rows")
    for i, row in enumerate(ds, start=1):
        yield i, row


# ------------------------------------------------------------------ field mapping


def _find(keys: list[str], candidates: tuple[str, ...]) -> str | None:
    lower = {k.lower(): k for k in keys}
    for name in candidates:
        if name in lower:
            return lower[name]
    return None


def resolve_fields(src: Path, first_row: dict[str, Any], opts: SeedOptions) -> dict[str, Any]:
    """Decide which source fields hold the question, answer, choices and id."""
    keys = list(first_row)

    def given(flag: str, value: str | None) -> list[str] | None:
        if value is None:
            return None
        names = [v.strip() for v in value.split(",") if v.strip()]
        missing = [n for n in names if n not in first_row]
        if missing:
            raise InputError(src, f"{flag} names field(s) {', '.join(missing)} not in the data "
                                  f"(fields: {', '.join(keys)})")
        return names

    question = given("--question-field", opts.question_field)
    if question is None:
        q = _find(keys, QUESTION_FIELDS)
        if q is None:
            raise InputError(src, f"no question field found among {', '.join(keys)}; "
                                  "name it with --question-field")
        ctx = _find(keys, CONTEXT_FIELDS)
        question = [ctx, q] if ctx and ctx != q else [q]
    answer = given("--answer-field", opts.answer_field)
    answer = answer[0] if answer else _find(keys, ANSWER_FIELDS)
    choices = given("--choices-field", opts.choices_field)
    choices = choices[0] if choices else _find(keys, CHOICES_FIELDS)
    ident = given("--id-field", opts.id_field)
    ident = ident[0] if ident else _find(keys, ID_FIELDS)
    used = set(question) | {answer, choices, ident}
    return {"question": question, "answer": answer, "choices": choices, "id": ident,
            "extra": [k for k in keys if k not in used]}


def _choices_of(value: Any) -> list[str] | None:
    """Options as a list of strings; also the {"label": [...], "text": [...]} shape."""
    if value is None:
        return None
    if isinstance(value, dict) and "text" in value:
        value = value["text"]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, (list, tuple)) and value and all(isinstance(c, (str, int, float)) for c in value):
        return [str(c) for c in value]
    return None


def _is_number_like(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    return isinstance(value, str) and answers.to_number(value) is not None


def detect_task(rows: list[dict[str, Any]], fields: dict[str, Any]) -> str:
    if fields["choices"] is not None:
        return "choice"
    golds = [r.get(fields["answer"]) for r in rows] if fields["answer"] else []
    golds = [g for g in golds if g not in (None, "")]
    if golds and all(_is_number_like(g) for g in golds):
        return "numeric"
    return "text"


# ------------------------------------------------------------------ records


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def stable_id(question: str, choices: list[str] | None) -> str:
    h = hashlib.sha256(question.strip().encode("utf-8"))
    if choices:
        h.update(b"\0" + "\0".join(choices).encode("utf-8"))
    return "q" + h.hexdigest()[:12]


def build_record(src: Path, loc: int, row: dict[str, Any], fields: dict[str, Any], task: str) -> Record:
    parts = []
    for name in fields["question"]:
        value = row.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InputError(src, f"field '{name}' must be text, got {type(value).__name__}", loc)
        if value.strip():
            parts.append(value.strip())
    if not parts:
        raise InputError(src, f"empty question (field {'+'.join(fields['question'])})", loc)
    question = "\n".join(parts)

    choices = None
    if fields["choices"] is not None:
        choices = _choices_of(row.get(fields["choices"]))
        if not choices:
            raise InputError(src, f"field '{fields['choices']}' is not a list of options", loc)
        if answers.choices_problem(choices):
            raise InputError(src, f"field '{fields['choices']}' has {answers.choices_problem(choices)}", loc)

    gold = None
    raw = row.get(fields["answer"]) if fields["answer"] else None
    if raw not in (None, ""):
        if task == "choice" and isinstance(raw, str) and raw.strip().isdigit() and choices:
            raw = int(raw.strip())
        gold = answers.canonical_answer(raw if isinstance(raw, (int, float)) else str(raw), task, choices)
        if gold is None:
            want = {"numeric": "a number or arithmetic expression", "choice": "one of the options"}.get(task, "text")
            raise InputError(src, f"answer {raw!r} is not {want}", loc)

    ident = row.get(fields["id"]) if fields["id"] else None
    ident = str(ident).strip() if ident not in (None, "") else stable_id(question, choices)
    meta = {k: _json_safe(row[k]) for k in fields["extra"] if k in row}
    if raw not in (None, "") and str(raw) != gold:
        meta["answer_raw"] = _json_safe(raw)
    return Record(id=ident, question=question, task=task, choices=choices, gold=gold,
                  provenance={"source": src.name, "line": loc}, meta=meta)


def run_seed(src: str | Path, out: str | Path, opts: SeedOptions | None = None) -> SeedResult:
    opts = opts or SeedOptions()
    opts.validate()
    src, out = Path(src), Path(out)
    check_outputs_differ([src], [out, opts.eval_out])
    if opts.eval_out is not None and Path(opts.eval_out).resolve() == out.resolve():
        raise UsageError("--eval-out must differ from -o")
    started = time.time()

    hub = open_dataset(src, opts.config, opts.split, opts.revision, opts.limit) if is_dataset_source(src) else None
    if hub is None and (opts.config or opts.revision):
        raise UsageError(f"--config and --revision apply to a Hub dataset or dataset folder, not to {src}")
    rows = list(hub.numbered() if hub else read_rows(src, opts.split))
    if opts.limit:
        rows = rows[: opts.limit]
    if opts.task in (None, "instruction") and not opts.question_field and instruction_shape(rows[0][1]):
        rows = flatten_instances(rows)
        fields, task = instruction_fields(rows[0][1]), "instruction"
    else:
        fields = resolve_fields(src, rows[0][1], opts)
        task = opts.task or detect_task([r for _, r in rows], fields)
    if task == "choice" and fields["choices"] is None:
        raise InputError(src, "task 'choice' needs a choices field; name it with --choices-field")

    records, seen_keys, seen_ids = [], set(), {}
    duplicates = 0
    for loc, row in rows:
        rec = build_record(src, loc, row, fields, task)
        if hub:
            rec.provenance = {**hub.provenance(), "row": loc}
        key = question_key(rec.question, rec.choices)
        if key in seen_keys:
            duplicates += 1
            continue
        seen_keys.add(key)
        if rec.id in seen_ids:
            raise InputError(src, f"id {rec.id!r} is used by two different questions "
                                  f"(first at {seen_ids[rec.id]})", loc)
        seen_ids[rec.id] = loc
        records.append(rec)

    held: list[Record] = []
    if opts.eval_out is not None:
        n_eval = max(1, round(len(records) * opts.eval_frac))
        if n_eval >= len(records):
            raise KdpipeError(f"{src}: {len(records)} records are too few to hold out {opts.eval_frac:.0%}")
        ranked = sorted(records, key=lambda r: split_rank(r.id, opts.seed))
        held_ids = {r.id for r in ranked[:n_eval]}
        held = [r for r in records if r.id in held_ids]
        records = [r for r in records if r.id not in held_ids]

    params = {k: v for k, v in asdict(opts).items()}
    params["fields"] = {k: v for k, v in fields.items() if k != "extra"}
    params["task"] = task
    if hub:
        params["source"] = hub.describe()
    counts = {"read": len(rows), "duplicates": duplicates, "written": len(records), "held_out": len(held),
              "tasks": dict(Counter(r.task for r in records)),
              "with_gold": sum(r.gold is not None for r in records)}
    # Both outputs are complete in temp files before either is renamed into place.
    with atomic_file(out) as fp_train:
        JsonlWriter(fp_train).write_all(records)
        if opts.eval_out is not None:
            with atomic_file(opts.eval_out) as fp_eval:
                JsonlWriter(fp_eval).write_all(held)
    write_meta(out, stage="seed", params=params, inputs=[src] if src.is_file() else [], counts=counts,
               started=started)
    if opts.eval_out is not None:
        write_meta(opts.eval_out, stage="seed", params=params, inputs=[src] if src.is_file() else [],
                   counts={**counts, "written": len(held)}, started=started)
    return SeedResult(read=len(rows), duplicates=duplicates, written=len(records), held_out=len(held),
                      task=task, fields=params["fields"])
