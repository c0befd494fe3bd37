import json
import os
import stat

import pytest

from kdpipe.errors import InputError
from kdpipe.records import (
    Record, Sample, atomic_file, load_records, meta_path, read_records, write_meta, write_records,
)


def test_records_round_trip(tmp_path):
    recs = [
        Record(id="a", question="2+2?", task="numeric", gold="4",
               samples=[Sample(index=0, text="2+2=4. The answer is 4.", rationale="2+2=4.", answer="4")],
               provenance={"source": "x.jsonl", "line": 1}),
        Record(id="b", question="Pick one", task="choice", choices=["x", "y"], gold="y"),
    ]
    out = tmp_path / "r.jsonl"
    assert write_records(out, recs) == 2
    back = load_records(out)
    assert back == recs
    # Empty optional fields are left out of the file.
    assert "samples" not in json.loads(out.read_text().splitlines()[1])


@pytest.mark.parametrize(
    "content, message, line",
    [
        (b'{"id": "a", "question": "q"}\n{not json\n', "invalid JSON", 2),
        (b'{"id": "a", "question": "q"}\n[1, 2]\n', "expected a JSON object, got an array", 2),
        (b'{"question": "q"}\n', "missing field 'id'", 1),
        (b'{"id": 3, "question": "q"}\n', "field 'id' must be str, got int", 1),
        (b'{"id": "a", "question": "q", "task": "poem"}\n', "field 'task' must be one of", 1),
        (b'{"id": "a", "question": "q"}\n{"id": "b", "question": "\xff\xfe"}\n', "not valid UTF-8", 2),
        (b"", "empty file", None),
        (b"\n\n", "empty file", None),
        (b'{"id": "a", "question": "q"}\n{"id": "a", "question": "r"}\n', "duplicate id 'a'", 2),
        (b'{"id": "a", "question": "q", "samples": [{"txt": 1}]}\n', "unknown field(s) txt", 1),
        (b'{"id": "a", "question": "q", "samples": [{"answer": "4"}, {"answer": 4}]}\n',
         "samples[1]: field 'answer' must be str or null, got int", 1),
        (b'{"id": "a", "question": "q", "samples": [{"rationale": ["x"]}]}\n',
         "samples[0]: field 'rationale' must be str or null, got list", 1),
        (b'{"id": "a", "question": "q", "samples": [{"usage": "x"}]}\n',
         "samples[0]: field 'usage' must be dict, got str", 1),
        (b'{"id": "a", "question": "q", "samples": [{"index": true}]}\n',
         "samples[0]: field 'index' must be int, got bool", 1),
        (b'{"id": "a", "question": "q", "samples": [{"cached": 1}]}\n',
         "samples[0]: field 'cached' must be bool, got int", 1),
        (b'{"id": "a", "question": "q", "samples": [{"error": "oops"}]}\n',
         "samples[0]: field 'error' must be one of unparseable", 1),
        (b'{"id": "a", "question": "q", "vote_share": true}\n', "field 'vote_share' must be int or float", 1),
    ],
)
def test_bad_records_file_names_file_and_line(tmp_path, content, message, line):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        load_records(path)
    text = str(err.value)
    assert message in text
    assert text.startswith(f"{path}:{line}:" if line else f"{path}:")


def test_read_records_is_lazy_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id":"a","question":"q"}\n\n{"id":"b","question":"r"}\n')
    assert [r.id for r in read_records(path)] == ["a", "b"]


def test_atomic_file_leaves_old_output_when_interrupted(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(out) as fp:
            fp.write("half")
            raise KeyboardInterrupt
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_meta_records_digests_and_never_secrets(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id":"a","question":"q"}\n')
    out = tmp_path / "out.jsonl"
    write_records(out, load_records(src))
    write_meta(out, stage="test", inputs=[src], counts={"written": 1},
               params={"model": "m", "api_key": "sk-abcdefghijklmnop", "headers": {"Authorization": "x"},
                       "note": "key sk-abcdefghijklmnop here"})
    meta = json.loads(meta_path(out).read_text())
    assert meta["stage"] == "test" and meta["counts"] == {"written": 1}
    assert meta["inputs"][str(src)].startswith("sha256:")
    assert meta["output_digest"].startswith("sha256:")
    assert "sk-abcdefghijklmnop" not in meta_path(out).read_text()
    assert meta["params"]["model"] == "m" and "api_key" not in meta["params"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id":"a","question":"q"}\n')
    out = tmp_path / "out.jsonl"
    old = os.umask(umask)
    try:
        write_records(out, load_records(src))
        write_meta(out, stage="test", params={})
        write_records(out, load_records(src))  # replacing an output gives the same mode
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == mode
    assert stat.S_IMODE(meta_path(out).stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl", "out.jsonl.meta.json"]
