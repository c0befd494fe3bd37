"""The record schema, and reading and writing it as JSONL.

One record is one question on its way from seed to eval. Every stage reads
records and writes records (or, for `format`, training examples built from
them), so the fields below are the whole contract between stages:

    id          stable id given by `seed`, carried unchanged to eval
    question    the question text the teacher and the student see
    task        "numeric" | "choice" | "text" | "instruction" (open-ended; see instructions.py)
    choices     the options of a multiple-choice question, else None
    gold        the gold answer in canonical form (see answers.py), or None
    samples     teacher outputs, one per sampled completion (see Sample)
    provenance  where the record came from: source file and line for seeds,
                the seeds that inspired an expanded question, the teacher call
                (model, prompt template digest, sampling parameters); "rationalized"
                (generate --mode rationalize: the call that wrote the samples marked
                `rationalized`) and "counterfactual" (generate --mode counterfactual:
                the source record, the intended and the source answer)
    reason      the filter rule that rejected the record (filter --rejected), else None
    reason_detail  what that rule found ("same question as q12"), when it says more
    vote_share  self-consistency agreement of the kept samples, else None
    meta        source fields kdpipe does not interpret, kept for the user

Writing goes through `atomic_file` (outputs.py, re-exported here): a
temporary file beside the target, renamed into place only when the stage
finished, with `<out>.meta.json` beside it (stage, parameters, input
digests, counts, version, time).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from kdpipe.answers import choices_problem
from kdpipe.errors import InputError
from kdpipe.token_logprobs import problem as logprobs_problem
# Output files: re-exported here, where every stage has always imported them from.
from kdpipe.outputs import (  # noqa: F401
    atomic_file, cannot_write, check_outputs_differ, file_digest, meta_path, prepare_output, scrub,
    text_digest, write_meta,
)

TASKS = ("numeric", "choice", "text", "instruction")

# Reason codes for a teacher sample that gave no usable answer. `generate`
# sets them, `filter` drops on them, reports count them. "not_sent": the
# request was never sent because `generate --max-usd` was reached; rerunning
# with a higher cap sends it (what was answered comes from the cache).
# "malformed": the server answered (and billed) with a response of unexpected
# shape; it is cached as received, so a rerun does not pay for it again.
SAMPLE_ERRORS = ("unparseable", "empty", "truncated", "refusal", "transport", "not_sent", "malformed")


@dataclass
class Sample:
    """One teacher completion for one question."""

    index: int = 0
    text: str | None = None  # the raw completion
    rationale: str | None = None
    answer: str | None = None  # canonical answer parsed from text
    finish_reason: str | None = None
    error: str | None = None  # one of SAMPLE_ERRORS, or None when usable
    detail: str | None = None  # human-readable detail for `error`
    usage: dict[str, int] = field(default_factory=dict)
    cached: bool = False
    reason: str | None = None  # the filter rule that dropped this sample
    reason_detail: str | None = None  # what the rule found, when it says more (omitted when None)
    judge: dict[str, Any] | None = None  # filter --judge: {"model", "score" (1-10 or null), "reason"}
    # generate --logprobs: per token the teacher's logprob and top-K alternatives (token_logprobs.py)
    logprobs: dict[str, list] | None = None
    # generate --mode rationalize: asked with the gold answer given (STaR), so not the teacher's own answer
    rationalized: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.answer is not None


@dataclass
class Record:
    id: str
    question: str
    task: str = "text"
    choices: list[str] | None = None
    gold: str | None = None
    samples: list[Sample] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    reason_detail: str | None = None
    vote_share: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # New dicts for the record and its samples, their values shared: only serialised, never
        # changed. (asdict deep-copies every value, a tenth of a large generate run's CPU.)
        d = {name: getattr(self, name) for name in self.__dataclass_fields__}
        d["samples"] = [{name: getattr(s, name) for name in s.__dataclass_fields__} for s in self.samples]
        # What a server wrote (error details, reasons) is scrubbed of secrets like metadata is.
        for s in d["samples"]:
            if s["detail"]:
                s["detail"] = scrub(s["detail"])
        # Omit empty optional fields so files stay readable by eye.
        for key in ("choices", "gold", "reason", "reason_detail", "vote_share"):
            if d[key] is None:
                del d[key]
        for s in d["samples"]:
            for key in ("reason_detail", "judge", "logprobs"):
                if s[key] is None:
                    del s[key]
            if not s["rationalized"]:
                del s["rationalized"]
        for key in ("samples", "provenance", "meta"):
            if not d[key]:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> "Record":
        """Build a record from a parsed JSON object; raise ValueError on a bad one."""
        unknown = set(obj) - _RECORD_FIELDS
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
        for name in ("id", "question"):
            if name not in obj:
                raise ValueError(f"missing field '{name}'")
        _expect_types(obj, _RECORD_TYPES)
        if not obj["id"]:
            raise ValueError("field 'id' is empty")
        if not obj["question"].strip():
            raise ValueError("field 'question' is empty")
        task = obj.get("task", "text")
        if task not in TASKS:
            raise ValueError(f"field 'task' must be one of {', '.join(TASKS)}, got {task!r}")
        choices = obj.get("choices")
        if choices is not None and (
            not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)
        ):
            raise ValueError("field 'choices' must be a list of strings")
        if task == "choice" and not choices:
            raise ValueError("a 'choice' record needs a non-empty 'choices' list")
        if choices_problem(choices):
            raise ValueError(f"field 'choices' has {choices_problem(choices)}")
        samples = []
        for i, s in enumerate(obj.get("samples") or []):
            if not isinstance(s, dict):
                raise ValueError(f"samples[{i}] is not an object")
            unknown = set(s) - _SAMPLE_FIELDS
            if unknown:
                raise ValueError(f"samples[{i}]: unknown field(s) {', '.join(sorted(unknown))}")
            try:
                _expect_types(s, _SAMPLE_TYPES)
            except ValueError as e:
                raise ValueError(f"samples[{i}]: {e}") from None
            if s.get("error") is not None and s["error"] not in SAMPLE_ERRORS:
                raise ValueError(f"samples[{i}]: field 'error' must be one of {', '.join(SAMPLE_ERRORS)} "
                                 f"or null, got {s['error']!r}")
            if s.get("logprobs") is not None and logprobs_problem(s["logprobs"]):
                raise ValueError(f"samples[{i}]: field 'logprobs' {logprobs_problem(s['logprobs'])}")
            samples.append(Sample(**s))
        return cls(
            id=obj["id"],
            question=obj["question"],
            task=task,
            choices=choices,
            gold=obj.get("gold"),
            samples=samples,
            provenance=obj.get("provenance") or {},
            reason=obj.get("reason"),
            reason_detail=obj.get("reason_detail"),
            vote_share=obj.get("vote_share"),
            meta=obj.get("meta") or {},
        )


_RECORD_FIELDS = {f for f in Record.__dataclass_fields__}
_SAMPLE_FIELDS = {f for f in Sample.__dataclass_fields__}
_OPTIONAL_STR = (str, type(None))
# The JSON types of each field (checked on every record read, so by a dict lookup); a wrong one
# would surface later as a crash deep in a stage.
_RECORD_TYPES = {"id": (str,), "question": (str,), "task": (str,), "choices": (list, type(None)),
                 "gold": _OPTIONAL_STR, "samples": (list,), "provenance": (dict,), "reason": _OPTIONAL_STR,
                 "reason_detail": _OPTIONAL_STR,
                 "vote_share": (int, float, type(None)), "meta": (dict,)}
_SAMPLE_TYPES = {"index": (int,), "text": _OPTIONAL_STR, "rationale": _OPTIONAL_STR, "answer": _OPTIONAL_STR,
                 "finish_reason": _OPTIONAL_STR, "error": _OPTIONAL_STR, "detail": _OPTIONAL_STR,
                 "usage": (dict,), "cached": (bool,), "reason": _OPTIONAL_STR,
                 "reason_detail": _OPTIONAL_STR, "judge": (dict, type(None)), "logprobs": (dict, type(None)),
                 "rationalized": (bool,)}
assert set(_SAMPLE_TYPES) == _SAMPLE_FIELDS and set(_RECORD_TYPES) == _RECORD_FIELDS


def _expect_types(obj: dict, types: dict[str, tuple[type, ...]]) -> None:
    """Check the type of each field of `obj` (all known names); exact types first, as that is fast."""
    for name, value in obj.items():
        if type(value) not in types[name]:
            _expect(obj, name, types[name])


def _expect(obj: dict, name: str, types: type | tuple[type, ...]) -> None:
    if name not in obj:
        return
    types = types if isinstance(types, tuple) else (types,)
    value = obj[name]
    # JSON true/false parse as bool, a subclass of int: not a number here.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise ValueError(f"field '{name}' must be {names}, got {_type_name(value)}")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# ---------------------------------------------------------------- reading


def iter_json_objects(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSONL file.

    Raises InputError naming the file and line for anything that is not a JSON
    object on one UTF-8 line, and for a file with no objects at all.
    """
    path = check_input_file(path)
    seen = 0
    with open(path, "rb") as fp:
        for lineno, raw in enumerate(fp, start=1):
            obj = parse_json_line(path, lineno, raw)
            if obj is not None:
                seen += 1
                yield lineno, obj
    if not seen:
        raise InputError(path, "empty file: no records")


def check_input_file(path: str | os.PathLike) -> Path:
    """The path of an input file that exists and is not a folder, else InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, expected a JSONL file")
    return path


def parse_json_line(path: Path, lineno: int, raw: bytes) -> dict[str, Any] | None:
    """The object on one raw JSONL line, None for a blank line; InputError naming file:line otherwise.

    Split out of iter_json_objects so that a stage can parse lines in worker processes.
    """
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(path, f"not valid UTF-8 (byte {e.start + 1} of the line)", lineno) from None
    if lineno == 1 and line.startswith("\ufeff"):
        line = line[1:]
    if not line.strip():
        return None
    try:
        obj = loads(line)
    except json.JSONDecodeError as e:
        raise InputError(path, f"invalid JSON: {e.msg} (column {e.colno})", lineno) from None
    except ValueError as e:
        raise InputError(path, str(e), lineno) from None
    if not isinstance(obj, dict):
        raise InputError(path, f"expected a JSON object, got {_json_type(obj)}", lineno)
    return obj


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def loads(text: str) -> Any:
    """json.loads for input files: JSONDecodeError for bad syntax, and a one-line ValueError for
    what the syntax allows but no stage can use (nesting past Python's stack, an integer over
    Python's 4,300-digit limit, a lone surrogate, which no UTF-8 file can hold)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except ValueError as e:  # int() refusing a number of more than 4,300 digits
        raise ValueError(f"invalid JSON: {str(e).split(';')[0]}") from None
    if _SURROGATE_ESCAPE.search(text):
        stack = [obj]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                stack += [*item.keys(), *item.values()]
            elif isinstance(item, list):
                stack += item
            elif isinstance(item, str) and _LONE_SURROGATE.search(item):
                raise ValueError("a string holds a lone surrogate (\\ud800-\\udfff escape): not valid Unicode")
    return obj


def record_at(path: str | os.PathLike, lineno: int, obj: dict[str, Any]) -> Record:
    """The record of the object on line `lineno` of `path`; InputError naming file:line if it is not one."""
    try:
        return Record.from_dict(obj)
    except (ValueError, TypeError) as e:
        raise InputError(path, str(e), lineno) from None


def read_records(path: str | os.PathLike) -> Iterator[Record]:
    """Yield the records of a JSONL file, failing on the first bad line."""
    for lineno, obj in iter_json_objects(path):
        yield record_at(path, lineno, obj)


def load_records(path: str | os.PathLike) -> list[Record]:
    """Read a whole records file, also rejecting duplicate ids."""
    records, lines = [], {}
    for lineno, obj in iter_json_objects(path):
        rec = record_at(path, lineno, obj)
        if rec.id in lines:
            raise InputError(path, f"duplicate id {rec.id!r} (first on line {lines[rec.id]})", lineno)
        lines[rec.id] = lineno
        records.append(rec)
    return records


def _json_type(obj: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number",
            bool: "a boolean", type(None): "null"}.get(type(obj), type(obj).__name__)


# ---------------------------------------------------------------- writing


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def record_line(obj: Record | dict[str, Any]) -> str:
    """The line (newline included) a record or plain object is written as."""
    return dumps(obj.to_dict() if isinstance(obj, Record) else obj) + "\n"


class JsonlWriter:
    """Writes one JSON object per line to an open text file."""

    def __init__(self, fp):
        self._fp = fp
        self.count = 0

    def write(self, obj: Record | dict[str, Any]) -> None:
        self._fp.write(record_line(obj))
        self.count += 1

    def write_all(self, objs: Iterable[Record | dict[str, Any]]) -> None:
        for obj in objs:
            self.write(obj)


def write_records(
    out: str | os.PathLike, records: Iterable[Record | dict[str, Any]]
) -> int:
    """Write records (or plain objects) to `out` atomically; return the count."""
    with atomic_file(out) as fp:
        writer = JsonlWriter(fp)
        writer.write_all(records)
    return writer.count


def write_lines(out: str | os.PathLike, lines: list[str]) -> int:
    """Write lines made by record_line to `out` atomically; return the count."""
    with atomic_file(out) as fp:
        fp.writelines(lines)
    return len(lines)
