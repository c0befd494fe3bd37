"""Open-ended instructions: Self-Instruct / Alpaca rows imported with no options, labelled by the
loopback teacher with the instruction prompt, the whole response kept as the answer."""

import json

from kdpipe.generate import GenerateOptions, run_generate
from kdpipe.loopback import ScriptLine, running
from kdpipe.records import load_records
from kdpipe.seed import run_seed


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_alpaca_rows_import_as_instructions_with_input_and_reference(tmp_path):
    src = write_jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "Give three tips for staying healthy.", "input": "", "output": "1. Eat well."},
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Write a haiku about rain.", "input": "", "output": ""},
    ])
    r = run_seed(src, tmp_path / "seeds.jsonl")
    assert r.task == "instruction" and r.written == 3
    recs = load_records(tmp_path / "seeds.jsonl")
    assert [x.task for x in recs] == ["instruction"] * 3
    assert recs[0].question == "Give three tips for staying healthy." and recs[0].gold == "1. Eat well."
    assert recs[1].question == "Translate to French.\nGood morning" and recs[1].gold == "Bonjour"
    assert recs[2].gold is None


def test_self_instruct_seed_tasks_one_record_per_instance(shared_data, tmp_path):
    src = shared_data / "self-instruct" / "seed_tasks.jsonl"
    rows = [json.loads(line) for line in open(src)]
    r = run_seed(src, tmp_path / "seeds.jsonl")
    recs = load_records(tmp_path / "seeds.jsonl")
    assert r.task == "instruction" and r.read == 175
    assert len(recs) + r.duplicates == sum(len(row["instances"]) for row in rows)
    first = recs[0]
    assert first.id == "seed_task_0" and first.question == rows[0]["instruction"]
    assert first.gold == rows[0]["instances"][0]["output"].strip()
    assert first.meta["name"] == "breakfast_suggestion"
    held = run_seed(shared_data / "self-instruct" / "user_oriented_instructions.jsonl", tmp_path / "eval.jsonl")
    assert held.task == "instruction" and held.written == 252


def test_a_self_instruct_task_with_several_instances_gives_one_record_each(tmp_path):
    src = write_jsonl(tmp_path / "tasks.jsonl", [
        {"id": "t1", "instruction": "Classify the sentiment.", "is_classification": True,
         "instances": [{"input": "I love it", "output": "positive"}, {"input": "Awful", "output": "negative"}]},
        {"id": "t2", "instruction": "Tell a joke.", "instances": [{"input": "", "output": "Knock knock."}]},
    ])
    run_seed(src, tmp_path / "seeds.jsonl")
    recs = load_records(tmp_path / "seeds.jsonl")
    assert [(x.id, x.question, x.gold) for x in recs] == [
        ("t1-1", "Classify the sentiment.\nI love it", "positive"),
        ("t1-2", "Classify the sentiment.\nAwful", "negative"), ("t2", "Tell a joke.", "Knock knock.")]
    assert recs[0].meta == {"is_classification": True}


def test_label_mode_keeps_the_whole_response_and_marks_refusals(tmp_path):
    src = write_jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "Name a primary color.", "input": "", "output": "Red."},
        {"instruction": "Explain how to pick a lock.", "input": "", "output": ""},
        {"instruction": "Say nothing at all.", "input": "", "output": ""},
    ])
    run_seed(src, tmp_path / "seeds.jsonl")
    script = [ScriptLine("Name a primary color.", ["Blue is a primary color.\n\nSo are red and yellow."]),
              ScriptLine("Explain how to pick a lock.", ["I'm sorry, but I can't help with that."]),
              ScriptLine("Say nothing at all.", ["<think>ok</think>  "])]
    with running(script) as srv:
        res = run_generate(tmp_path / "seeds.jsonl", tmp_path / "out.jsonl",
                           GenerateOptions(model="loopback", base_url=srv.base_url, cache=tmp_path / "c.sqlite"))
    assert res.exit_code == 0
    color, lock, nothing = load_records(tmp_path / "out.jsonl")
    s = color.samples[0]
    assert s.ok and s.answer == "Blue is a primary color.\n\nSo are red and yellow." and s.rationale is None
    assert color.provenance["teacher"]["prompt"] == "instruction.txt"
    assert lock.samples[0].error == "refusal"
    assert nothing.samples[0].error == "unparseable"  # a reasoning block and nothing after it


def test_format_response_rows_carry_the_whole_response(tmp_path, cli):
    from kdpipe.records import Record, Sample

    response = "Blue.\n\nOn a clear day the sky scatters blue light most."
    recs = [Record(id="i1", question="What color is the sky?\nAnswer in two sentences.", task="instruction",
                   samples=[Sample(index=0, text=response, answer=response),
                            Sample(index=1, text="", error="empty")]),
            Record(id="n1", question="What is 3 + 4?", task="numeric", gold="7",
                   samples=[Sample(index=0, rationale="3 + 4 = 7.", answer="7")])]
    inp = write_jsonl(tmp_path / "in.jsonl", [r.to_dict() for r in recs])
    code, _, err = cli("format", inp, "-o", tmp_path / "sft.jsonl", "--style", "response", "--val-frac", "0")
    assert code == 0, err
    (row,) = [json.loads(line) for line in open(tmp_path / "sft.jsonl")]
    assert row["id"] == "i1" and row["task"] == "answer"
    assert row["prompt"] == [{"role": "user", "content": recs[0].question}]
    assert row["completion"] == [{"role": "assistant", "content": response}]
    assert "numeric record (style response is for instruction records)" in err
    code, _, err = cli("format", inp, "-o", tmp_path / "cot.jsonl", "--style", "cot", "--val-frac", "0")
    assert code == 0 and "instruction record (use --style response)" in err


def test_a_truncated_response_is_marked_truncated(tmp_path):
    src = write_jsonl(tmp_path / "alpaca.jsonl", [{"instruction": "Describe autumn.", "input": "", "output": ""}])
    run_seed(src, tmp_path / "seeds.jsonl")
    with running([ScriptLine("Describe autumn.", ["Leaves turn red and gold, and the air cools."])],
                 faults={"truncated": 1.0}) as srv:
        run_generate(tmp_path / "seeds.jsonl", tmp_path / "out.jsonl",
                     GenerateOptions(model="loopback", base_url=srv.base_url, cache=tmp_path / "c.sqlite"))
    (s,) = load_records(tmp_path / "out.jsonl")[0].samples
    assert s.error == "truncated" and s.answer is None and s.finish_reason == "length"


def test_expansion_writes_new_instructions_with_their_inputs(tmp_path):
    src = write_jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well."},
    ])
    run_seed(src, tmp_path / "seeds.jsonl")
    script = [ScriptLine("Sort these numbers in ascending order.\n3, 1, 2", ["1, 2, 3"], expand=True),
              ScriptLine("Suggest a name for a bakery.", ["Rise & Shine"], expand=True)]
    with running(script) as srv:
        res = run_generate(tmp_path / "seeds.jsonl", tmp_path / "new.jsonl",
                           GenerateOptions(model="loopback", base_url=srv.base_url, cache=tmp_path / "c.sqlite",
                                           mode="expand", num_new=2))
    assert res.exit_code == 0
    new = load_records(tmp_path / "new.jsonl")
    assert sorted(r.question for r in new) == ["Sort these numbers in ascending order.\n3, 1, 2",
                                               "Suggest a name for a bakery."]
    assert {r.task for r in new} == {"instruction"}
    assert {r.provenance["teacher"]["prompt"] for r in new} == {"expand_instruction.txt"}
