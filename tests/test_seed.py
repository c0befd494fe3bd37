import csv
import json
import subprocess
import sys

import pytest

from kdpipe.records import load_records, meta_path
from support_filter import unwritable_outputs


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [
    {"question": "What is 2 + 3?", "answer": "5"},
    {"question": "What is 10 / 4?", "answer": "2.5"},
    {"question": "what is  2 + 3?", "answer": "5"},  # duplicate after normalization
    {"question": "What is 6 * 7?", "answer": "( 6.0 * 7.0 )"},
]


def test_seed_jsonl_detects_numeric_and_removes_duplicates(tmp_path, cli):
    src = write_jsonl(tmp_path / "src.jsonl", ROWS)
    code, _, err = cli("seed", src, "-o", tmp_path / "seeds.jsonl")
    assert code == 0, err
    recs = load_records(tmp_path / "seeds.jsonl")
    assert [r.gold for r in recs] == ["5", "2.5", "42"]
    assert all(r.task == "numeric" for r in recs)
    meta = json.loads(meta_path(tmp_path / "seeds.jsonl").read_text())
    assert meta["counts"]["duplicates"] == 1 and meta["counts"]["written"] == 3
    assert "1 duplicates removed" in err


def test_ids_are_stable_across_runs_and_formats(tmp_path, cli):
    src = write_jsonl(tmp_path / "src.jsonl", ROWS)
    cli("seed", src, "-o", tmp_path / "a.jsonl")
    cli("seed", src, "-o", tmp_path / "b.jsonl")
    with open(tmp_path / "src.csv", "w", newline="") as fp:
        w = csv.DictWriter(fp, fieldnames=["question", "answer"])
        w.writeheader()
        w.writerows(ROWS)
    cli("seed", tmp_path / "src.csv", "-o", tmp_path / "c.jsonl")
    ids = [[r.id for r in load_records(tmp_path / f"{n}.jsonl")] for n in "abc"]
    assert ids[0] == ids[1] == ids[2]
    assert len(set(ids[0])) == 3


def test_parquet_and_saved_dataset(tmp_path, cli):
    import datasets

    ds = datasets.Dataset.from_list([{"prompt": "Capital of France?", "output": "Paris"},
                                     {"prompt": "Capital of Italy?", "output": "Rome"}])
    ds.to_parquet(str(tmp_path / "d.parquet"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved"))
    for src in ("d.parquet", "saved"):
        code, _, err = cli("seed", tmp_path / src, "-o", tmp_path / f"{src}.jsonl")
        assert code == 0, err
        recs = load_records(tmp_path / f"{src}.jsonl")
        assert [(r.question, r.gold, r.task) for r in recs] == [
            ("Capital of France?", "Paris", "text"), ("Capital of Italy?", "Rome", "text")]


def test_field_flags_and_choice_letters(tmp_path, cli):
    src = write_jsonl(tmp_path / "mc.jsonl", [
        {"stem": "Sky colour?", "opts": ["red", "blue"], "key": "B"},
        {"stem": "Grass colour?", "opts": ["green", "pink"], "key": "green"},
    ])
    code, _, err = cli("seed", src, "-o", tmp_path / "s.jsonl", "--question-field", "stem",
                       "--choices-field", "opts", "--answer-field", "key")
    assert code == 0, err
    recs = load_records(tmp_path / "s.jsonl")
    assert [(r.task, r.gold) for r in recs] == [("choice", "blue"), ("choice", "green")]


def test_heldout_split_is_deterministic_and_disjoint(tmp_path, cli):
    rows = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(50)]
    src = write_jsonl(tmp_path / "src.jsonl", rows)
    for run in ("1", "2"):
        code, _, err = cli("seed", src, "-o", tmp_path / f"train{run}.jsonl",
                           "--eval-out", tmp_path / f"eval{run}.jsonl", "--eval-frac", "0.2", "--seed", "7")
        assert code == 0, err
    train = load_records(tmp_path / "train1.jsonl")
    held = load_records(tmp_path / "eval1.jsonl")
    assert len(held) == 10 and len(train) == 40
    assert not {r.question for r in train} & {r.question for r in held}
    assert (tmp_path / "eval1.jsonl").read_text() == (tmp_path / "eval2.jsonl").read_text()
    cli("seed", src, "-o", tmp_path / "t3.jsonl", "--eval-out", tmp_path / "e3.jsonl",
        "--eval-frac", "0.2", "--seed", "8")
    assert (tmp_path / "e3.jsonl").read_text() != (tmp_path / "eval1.jsonl").read_text()


@pytest.mark.parametrize("name, content, message", [
    ("bad.jsonl", b'{"question": "a", "answer": "1"}\n{"question": "b"\n', "bad.jsonl:2: invalid JSON"),
    ("bad.jsonl", b'{"question": "a", "answer": "1"}\n"just a string"\n', "bad.jsonl:2: expected a JSON object"),
    ("bad.jsonl", b"", "bad.jsonl: empty file"),
    ("bad.jsonl", b'{"question": "a"}\n{"question": "\xc3\x28"}\n', "bad.jsonl:2: not valid UTF-8"),
    ("bad.jsonl", b'{"question": "a", "answer": "1"}\n{"question": "", "answer": "2"}\n',
     "bad.jsonl:2: empty question"),
    ("bad.jsonl", b'{"question": 5, "answer": "1"}\n', "bad.jsonl:1: field 'question' must be text"),
    ("bad.jsonl", b'{"text_in": "a", "answer": "1"}\n', "no question field found among text_in"),
    ("bad.json", b'[{"question": "a"}, 3]', "bad.json: item 2 of the array is not a JSON object"),
    ("bad.csv", b"question,answer\nq1,1\nq2,2,extra\n", "bad.csv:3: more values than header columns"),
    ("bad.parquet", b"PAR1 not really", "bad.parquet: not a readable Parquet file"),
])
def test_bad_input_is_one_line_with_no_output(tmp_path, cli, name, content, message):
    src = tmp_path / name
    src.write_bytes(content)
    out = tmp_path / "seeds.jsonl"
    code, _, err = cli("seed", src, "-o", out)
    assert code != 0
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and not meta_path(out).exists()


def test_bad_input_keeps_existing_output(tmp_path, cli):
    out = tmp_path / "seeds.jsonl"
    out.write_text("previous\n")
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    code, _, _ = cli("seed", tmp_path / "bad.jsonl", "-o", out)
    assert code != 0 and out.read_text() == "previous\n"


def test_missing_source_and_bad_flags(tmp_path, cli):
    code, _, err = cli("seed", tmp_path / "nope.jsonl", "-o", tmp_path / "o.jsonl")
    assert code != 0 and "nope.jsonl: no such file" in err
    src = write_jsonl(tmp_path / "s.jsonl", ROWS)
    code, _, err = cli("seed", src, "-o", tmp_path / "o.jsonl", "--task", "poem", "--eval-frac", "2")
    assert code == 2 and "--task must be one of" in err and "--eval-frac" in err
    code, _, err = cli("seed", src, "-o", tmp_path / "o.jsonl", "--answer-field", "ans")
    assert code != 0 and "--answer-field names field(s) ans not in the data" in err


def test_unwritable_output_is_one_line(tmp_path, cli):
    src = write_jsonl(tmp_path / "src.jsonl", ROWS)
    for out, why in unwritable_outputs(tmp_path):
        for args in (("-o", out), ("-o", tmp_path / "ok.jsonl", "--eval-out", out, "--eval-frac", "0.3")):
            code, _, err = cli("seed", src, *args)
            assert code == 1 and err.strip() == f"kdpipe: error: {out}: cannot write: {why}", err
            assert sorted(p.name for p in tmp_path.iterdir()) == ["notdir", "src.jsonl"]


def test_traceback_only_with_debug(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    plain = subprocess.run([sys.executable, "-m", "kdpipe", "seed", str(bad), "-o", str(tmp_path / "o")],
                           capture_output=True, text=True)
    debug = subprocess.run([sys.executable, "-m", "kdpipe", "--debug", "seed", str(bad), "-o",
                            str(tmp_path / "o")], capture_output=True, text=True)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "InputError" in debug.stderr


# ------------------------------------------------------------------ the shared public data


def test_svamp_original_json_array(shared_data, tmp_path, cli):
    code, _, err = cli("seed", shared_data / "dss/svamp/SVAMP.json", "-o", tmp_path / "s.jsonl")
    assert code == 0, err
    recs = load_records(tmp_path / "s.jsonl")
    assert len(recs) == 1000 and all(r.task == "numeric" for r in recs)
    first = recs[0]
    assert first.id == "chal-1" and first.gold == "51"
    assert first.question.startswith("Each pack of dvds costs 76 dollars.")
    assert first.question.endswith("How much do you have to pay to buy each pack?")
    assert first.meta["Equation"] == "( 76.0 - 25.0 )"


def test_svamp_train_jsonl_with_equation_labels(shared_data, tmp_path, cli):
    code, _, err = cli("seed", shared_data / "dss/svamp/svamp_train.json", "-o", tmp_path / "s.jsonl")
    assert code == 0, err
    recs = load_records(tmp_path / "s.jsonl")
    assert len(recs) == 800 and all(r.task == "numeric" for r in recs)
    assert recs[0].gold == "42"  # "( 84.0 / 2.0 )"
    assert recs[0].meta["answer_raw"] == "( 84.0 / 2.0 )"


def test_svamp_both_sources_agree_on_questions_and_answers(shared_data, tmp_path, cli):
    cli("seed", shared_data / "dss/svamp/SVAMP.json", "-o", tmp_path / "a.jsonl")
    cli("seed", shared_data / "dss/svamp/svamp_train.json", "-o", tmp_path / "b.jsonl")
    by_question = {r.question: r.gold for r in load_records(tmp_path / "a.jsonl")}
    train = load_records(tmp_path / "b.jsonl")
    matched = [r for r in train if r.question in by_question]
    assert len(matched) == 800
    # One SVAMP row's own Answer (1.0) disagrees with its Equation ((4 - 2) + 3); all others agree.
    mismatched = [r for r in matched if by_question[r.question] != r.gold]
    assert [r.meta["answer_raw"] for r in mismatched] == ["( ( 4.0 - 2.0 ) + 3.0 )"]


def test_cqa_multiple_choice(shared_data, tmp_path, cli):
    code, _, err = cli("seed", shared_data / "dss/cqa/cqa_train.json", "-o", tmp_path / "c.jsonl",
                       "--eval-out", tmp_path / "e.jsonl", "--eval-frac", "0.1")
    assert code == 0, err
    recs = load_records(tmp_path / "c.jsonl") + load_records(tmp_path / "e.jsonl")
    assert len(recs) == 9741 and all(r.task == "choice" and len(r.choices) == 5 for r in recs)
    assert all(r.gold in r.choices for r in recs)
    assert recs[0].gold == "math problem"
