"""Property tests: whatever a user's file or a server's response holds, no traceback.

Readers either give records or reject with one InputError line naming the file
(and line); the answer parser and the arithmetic evaluator always return; the
response recorder turns any response into cache entries and Completions, and
what it stores reads back the same.
"""

import json
import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdpipe import answers
from kdpipe.errors import InputError, KdpipeError
from kdpipe.records import TASKS, parse_json_line, record_at, write_records
from kdpipe.seed import SeedOptions, run_seed
from kdpipe.teacher.cache import ResponseCache
from kdpipe.teacher.response import Completion, entries_from, from_stored

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
# Objects shaped like records, with any value in any field: the schema checks are what is tested.
record_like = st.fixed_dictionaries(
    {"id": json_values, "question": json_values},
    optional={"task": st.sampled_from(TASKS) | json_values, "choices": json_values, "gold": json_values,
              "samples": st.lists(st.dictionaries(st.sampled_from(["index", "text", "answer", "error", "usage",
                                                                   "cached", "detail", "bogus"]), json_values),
                                  max_size=2) | json_values,
              "provenance": json_values, "meta": json_values, "vote_share": json_values})


def one_line(e: Exception, where: str) -> None:
    assert str(e).startswith(where) and "\n" not in str(e), str(e)


@FAST
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_line_is_an_object_blank_or_one_line_error(raw):
    path = Path("in.jsonl")
    try:
        obj = parse_json_line(path, 7, raw)
    except InputError as e:
        one_line(e, "in.jsonl:7: ")
    else:
        assert obj is None or isinstance(obj, dict)


@FAST
@given(obj=record_like)
def test_any_object_is_a_writable_record_or_one_line_error(tmp_path, obj):
    raw = json.dumps(obj).encode()  # escapes: lone surrogates and NaN reach the reader as a file has them
    try:
        record = record_at("in.jsonl", 3, parse_json_line(Path("in.jsonl"), 3, raw))
    except InputError as e:
        one_line(e, "in.jsonl:3: ")
        return
    write_records(tmp_path / "out.jsonl", [record])  # what was accepted can be written
    back = json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8"))
    assert back["id"] == record.id and back["question"] == record.question


csv_cells = st.text(alphabet=st.sampled_from(list('ab1 ,"\n\r\t;') + ["é"]), max_size=12)


@FAST
@given(header=st.sampled_from(["question,answer", "question", "input,label,id", "x,y"]),
       rows=st.lists(csv_cells, max_size=6), suffix=st.sampled_from([".csv", ".jsonl", ".json"]))
def test_any_source_file_seeds_or_fails_in_one_line(tmp_path, header, rows, suffix):
    src = tmp_path / f"src{suffix}"
    body = header + "\n" + "\n".join(rows) if suffix == ".csv" else "\n".join(rows)
    src.write_text(body, encoding="utf-8")
    try:
        run_seed(src, tmp_path / "out.jsonl", SeedOptions())
    except KdpipeError as e:
        one_line(e, str(src))


arith = st.recursive(st.integers(-10 ** 7, 10 ** 7).map(str) | st.floats(allow_nan=False).map(repr),
                     lambda e: st.tuples(e, st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "^"]), e)
                     .map(lambda t: f"({t[0]} {t[1]} {t[2]})"), max_leaves=6)
answer_like = st.tuples(st.text(max_size=60), st.sampled_from(["The answer is ", "Answer: ", "#### ", "\\boxed{", "("]),
                        arith | st.text(max_size=20) | st.sampled_from(["A", "(Z)", "999999**64", "1e400"])
                        ).map("".join)


@FAST
@given(text=st.none() | st.text(max_size=300) | answer_like, task=st.sampled_from(TASKS),
       choices=st.none() | st.lists(st.text(max_size=8), max_size=30))
def test_the_answer_parser_always_returns(text, task, choices):
    parsed = answers.parse_completion(text, task, choices if task == "choice" else None)
    assert parsed.answer is None or isinstance(parsed.answer, str)


@FAST
@given(expr=arith | st.text(max_size=40))
def test_the_arithmetic_evaluator_always_returns_a_finite_number_or_none(expr):
    value = answers.safe_eval(expr)
    # An integer result stays an exact int (it may be past float's range); anything else is a finite float.
    assert value is None or isinstance(value, int) or math.isfinite(value)


def test_the_evaluator_keeps_big_powers_exact_and_declines_huge_ones():
    # Integers stay exact (numbers.py); a value past the size bound is no answer, never an OverflowError.
    assert answers.safe_eval("999999**64") == 999999 ** 64
    assert answers.safe_eval("9**9**9") is None


usage = st.none() | json_values | st.fixed_dictionaries({"prompt_tokens": json_values,
                                                          "completion_tokens": json_values})
choice = json_values | st.fixed_dictionaries(
    {"message": json_values | st.fixed_dictionaries({"content": json_values | st.text(max_size=20)}),
     "finish_reason": json_values})
response = json_values | st.fixed_dictionaries({"choices": json_values | st.lists(choice, max_size=3),
                                                "usage": usage})


@FAST
@given(body=response, count=st.integers(1, 3), surrogate=st.booleans())
def test_the_response_recorder_takes_any_response_and_rereads_it_the_same(tmp_path, body, count, surrogate):
    if surrogate and isinstance(body, dict) and isinstance(body.get("choices"), list) and body["choices"] \
            and isinstance(body["choices"][0], dict) and isinstance(body["choices"][0].get("message"), dict):
        body["choices"][0]["message"]["content"] = "x\ud800"
    entries, _ = entries_from(body, count)
    assert len(entries) <= count
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        for k, entry in enumerate(entries):
            cache.put(f"key{k}", "m", entry)
        stored = cache.get_many([f"key{k}" for k in range(len(entries))])
    for k, entry in enumerate(entries):
        fresh, again = from_stored(k, entry), from_stored(k, stored[f"key{k}"], cached=True)
        assert isinstance(fresh, Completion) and (fresh.error is None) == (again.error is None)
        assert fresh.text == again.text and fresh.usage == again.usage
        if fresh.text is not None:
            fresh.text.encode("utf-8")  # writable as UTF-8: no lone surrogate left
