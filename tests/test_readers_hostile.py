"""Hostile input files and option values: one line naming the file (and line) each, never a traceback."""

import json
import struct

import pytest

from kdpipe.errors import KdpipeError
from kdpipe.teacher.options import TeacherOptions
from kdpipe.evaluate.teacher import ask_teacher, prepare_teacher
from kdpipe.loopback import ScriptLine, running
from kdpipe.records import Record

GOOD = json.dumps({"id": "a", "question": "What is 1 plus 1?", "task": "numeric", "gold": "2"})


def one_line_error(cli, *args) -> str:
    code, _, stderr = cli(*args)
    assert code != 0, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    return stderr


def test_a_csv_with_an_unterminated_quote_names_its_line(tmp_path, cli):
    src = tmp_path / "q.csv"
    src.write_text('question,answer\nWhat is 1 plus 1?,2\n"What is 2 plus 2?,4\nWhat is 3 plus 3?,6\n')
    err = one_line_error(cli, "seed", src, "-o", tmp_path / "out.jsonl")
    assert f"{src}:3:" in err and "never closed" in err
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("line, message", [
    ('{"id": "a", "question": ' + "[" * 100000 + "]" * 100000 + "}", "nested too deeply"),
    ('{"id": "a", "question": "q", "meta": {"n": ' + "9" * 5000 + "}}", "digits"),
    ('{"id": "a", "question": "What is \\ud800?"}', "lone surrogate"),
])
def test_json_the_syntax_allows_but_no_stage_can_use_is_one_line(tmp_path, cli, line, message):
    for name, text in (("in.jsonl", GOOD + "\n" + line + "\n"), ("in.json", "[" + GOOD + ",\n" + line + "]")):
        src = tmp_path / name
        src.write_text(text)
        err = one_line_error(cli, "seed", src, "-o", tmp_path / "out.jsonl")
        assert message in err and str(src) in err
    # A stage reading records (not seed) says the same, naming the line.
    (tmp_path / "r.jsonl").write_text(GOOD + "\n" + line + "\n")
    err = one_line_error(cli, "format", tmp_path / "r.jsonl", "-o", tmp_path / "sft.jsonl")
    assert f"{tmp_path / 'r.jsonl'}:2:" in err and message in err


def test_a_prompt_file_that_is_not_utf8_is_one_line(tmp_path, cli):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(GOOD + "\n")
    prompt = tmp_path / "p.txt"
    prompt.write_bytes(b"Q: {question}\nA:\n\xff\xfe bad\n")
    with running([ScriptLine("What is 1 plus 1?", ["2. The answer is 2."])]) as srv:
        err = one_line_error(cli, "generate", seeds, "-o", tmp_path / "out.jsonl", "--model", "m",
                             "--base-url", srv.base_url, "--prompt", prompt, "--cache", tmp_path / "c.sqlite")
        assert srv.stats["requests"] == 0
    assert f"{prompt}:3: the prompt template is not valid UTF-8" in err


def _model_dir(tmp_path, config: str, weights: bytes):
    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "config.json").write_text(config)
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def _safetensors(data_len: int, actual: int) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [data_len // 4], "data_offsets": [0, data_len]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * actual


@pytest.mark.parametrize("config, weights, message", [
    ('{"model_type": "llama"', _safetensors(64, 64), "not a valid model config"),
    ('{"model_type": "llama"}', _safetensors(64, 10), "damaged weights file: truncated"),
    ('{"model_type": "llama"}', b"\x01\x02", "damaged weights file"),
])
def test_a_damaged_student_folder_is_one_line_before_any_library_loads_it(tmp_path, cli, config, weights, message):
    ev = tmp_path / "ev.jsonl"
    ev.write_text(GOOD + "\n")
    folder = _model_dir(tmp_path, config, weights)
    err = one_line_error(cli, "eval", ev, "--model", folder, "-o", tmp_path / "e.json")
    assert message in err and str(folder) in err


@pytest.mark.parametrize("args, message", [
    (["--lr", "nan"], "--learning-rate must be a finite number"),
    (["--epochs", "nan"], "--epochs must be a finite number"),
    (["--seed", "-1"], "--seed must be between 0"),
])
def test_train_option_values_that_are_no_numbers_are_one_line(tmp_path, cli, args, message):
    sft = tmp_path / "sft.jsonl"
    sft.write_text(json.dumps({"prompt": "Q", "completion": "A"}) + "\n")
    err = one_line_error(cli, "train", sft, "--student", "some/model", "-o", tmp_path / "run", *args)
    assert message in err


def test_generate_option_values_that_are_no_numbers_are_one_line(tmp_path, cli):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(GOOD + "\n")
    err = one_line_error(cli, "generate", seeds, "-o", tmp_path / "o.jsonl", "--model", "m", "--base-url",
                         "http://127.0.0.1:9/v1", "--max-usd", "nan", "--price-in", "nan", "--price-out", "1",
                         "--timeout", "nan")
    assert "--max-usd must be positive" in err and "--price-in" in err and "--timeout" in err


def test_eval_calls_a_teacher_that_gave_no_answer_an_error_not_a_wrong_answer(tmp_path):
    records = [Record(id=f"q{i}", question=f"What is {i} plus {i}?", task="numeric", gold=str(2 * i))
               for i in range(4)]
    script = [ScriptLine(r.question, [f"The answer is {r.gold}."]) for r in records]
    with running(script, hostile=["null_choice"]) as srv:
        teacher = TeacherOptions(model="loopback", base_url=srv.base_url, cache=tmp_path / "c.sqlite")
        with pytest.raises(KdpipeError, match="the teacher gave no answer to 4 of 4 questions"):
            ask_teacher(prepare_teacher(teacher), records)


def test_a_choice_question_with_more_options_than_letters_is_one_line(tmp_path, cli):
    row = {"id": "a", "question": "Pick one", "task": "choice", "choices": [f"o{i}" for i in range(30)], "gold": "o3"}
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps(row) + "\n")
    err = one_line_error(cli, "generate", records, "-o", tmp_path / "g.jsonl", "--model", "m", "--base-url",
                         "http://127.0.0.1:9/v1", "--dry-run")
    assert f"{records}:1:" in err and "more than the 26 letters" in err
    source = tmp_path / "src.jsonl"
    source.write_text(json.dumps({"question": "Pick one", "choices": row["choices"], "answer": "o3"}) + "\n")
    err = one_line_error(cli, "seed", source, "-o", tmp_path / "s.jsonl")
    assert f"{source}:1:" in err and "more than the 26 letters" in err
