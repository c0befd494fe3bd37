"""`kdpipe eval`: scoring rules, the scorecard files, and trained students against their baselines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import support_tiny as st  # noqa: E402

from kdpipe.evaluate import EvalOptions, read_answer, run_eval, wilson_interval  # noqa: E402
from kdpipe.records import Record  # noqa: E402

FAST = ["--max-steps", "40", "--batch-size", "8", "--max-length", "96", "--lr", "3e-3", "-q"]


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 0.0)


def test_answers_read_with_the_filter_rules():
    num = Record(id="n", question="?", task="numeric", gold="12")
    assert read_answer("Half of 24 is 12. The answer is 12.", "cot", num) == ("12", None)
    assert read_answer("It is twelve, I think", "cot", num)[1] == "unparseable"
    assert read_answer("$12.00", "label", num) == ("12", None)
    choice = Record(id="c", question="?", task="choice", choices=["red", "blue"], gold="blue")
    assert read_answer("(b)", "label", choice) == ("blue", None)
    assert read_answer("So it must be blue. The answer is (b).", "cot", choice) == ("blue", None)
    assert read_answer("", "label", choice) == (None, "empty")
    assert read_answer("green", "label", choice) == (None, "unparseable")


def test_answer_only_completions_must_be_the_answer_itself():
    """A random model's garbage that happens to hold one number is not an answer (it was read as 26)."""
    from kdpipe.prompt_format import PromptFormat

    fmt = PromptFormat(style="label")
    num = Record(id="n", question="?", task="numeric", gold="26")
    assert read_answer("arore them Gus andYu … 26 frien", "answer", num, fmt) == (None, "unparseable")
    assert read_answer("3 apples and 26", "label", num, fmt) == (None, "unparseable")
    for text in ("26", " 26.\n", "$26.00", "(13 * 2)", "The answer is 26."):
        assert read_answer(text, "answer", num, fmt) == ("26", None), text
    choice = Record(id="c", question="?", task="choice", choices=["red", "blue"], gold="blue")
    for text in ("(b)", "(b) blue", "blue.", "The answer is (b) blue."):
        assert read_answer(text, "label", choice, fmt) == ("blue", None), text
    assert read_answer("I think blue", "label", choice, fmt) == (None, "unparseable")


@pytest.mark.parametrize("sentence", ["Therefore: {answer}", "The answer is {answer}.", "So it is {answer}!",
                                      "Final: <{answer}>"])
def test_cot_answers_read_with_the_stored_answer_sentence(sentence):
    """Whatever `format --answer-sentence` wrote the training completions with, eval reads the answer back."""
    from kdpipe.prompt_format import PromptFormat, render_completion

    fmt = PromptFormat(style="cot", answer_sentence=sentence)
    choice = Record(id="c", question="?", task="choice", choices=["red", "blue", "green"], gold="blue")
    num = Record(id="n", question="?", task="numeric", gold="2.5")
    for rec, answer in ((choice, "blue"), (choice, "green"), (num, "2.5"), (num, "-3")):
        text = render_completion(fmt, "cot", answer, rec.choices, "Some steps: 1 then 2.")
        assert read_answer(text, "cot", rec, fmt) == (answer, None), text
    # a completion without the student's sentence still gets the generic markers
    assert read_answer("Thinking. The answer is (b).", "cot", choice, fmt) == ("blue", None)


def test_cot_student_with_its_own_answer_sentence_is_scored(tmp_path):
    """A cot run trained with "Therefore: {answer}" scores its answers (it was read as unparseable)."""
    from kdpipe.evaluate import score
    from kdpipe.prompt_format import load_prompt_format

    recs = st.eval_records()
    fmt = load_prompt_format(dict(st.prompt_format("cot"), answer_sentence="Therefore: {answer}"), "test")
    texts = [f"Everyone has seen it. Therefore: ({chr(97 + st.CHOICES.index(r.gold))}) {r.gold}" for r in recs]
    s, preds = score("student", "run", recs, texts, "cot", "cot", 1.0, fmt)
    assert s.correct == len(recs) and s.unparsed == 0


SUMS = [(f"Compute {a} + {b}", str(a + b)) for a, b in ((12, 5), (3, 4), (40, 2), (7, 70))]


def _sum_records():
    return [Record(id=f"s{i}", question=q, task="numeric", gold=a) for i, (q, a) in enumerate(SUMS)]


@pytest.mark.parametrize("chat", [False, True])
def test_eval_prompt_is_the_training_prompt(tmp_path, chat):
    """TRL's own tokenization of each training row (SFTTrainer's train_dataset) starts with exactly the
    tokens of the prompt alone, its completion right after them, and eval asks with those same tokens.

    A plain-text prompt that ran straight into its completion ("Compute 12 + 5" + "17") would have
    its last tokens merged with the completion's first ones, and would fail here.
    """
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from kdpipe.format import FormatOptions, run_format
    from kdpipe.records import write_records
    from kdpipe.train.data import read_sft
    from kdpipe.prompt_format import inference_task, load_prompt_format, render_prompt
    from kdpipe.student import encode_prompt, load_tokenizer
    from kdpipe.tiny_student import build_tiny_student
    from kdpipe.train import dataset
    from kdpipe.train.trainers import pick

    # Text in which the end of a question runs into its answer ("+ 517", "?(a)"), as a real tokenizer's
    # training text would have it: BPE learns tokens across that boundary.
    joined = [q + a for q, a in SUMS] + [q + f"({chr(97 + st.CHOICES.index(a))}) {a}" for q, a in st.FACTS]
    student = build_tiny_student(tmp_path / "s", st.corpus_texts() + joined * 20)
    tokenizer = load_tokenizer(str(student))
    model = AutoModelForCausalLM.from_pretrained(student)
    sums = tmp_path / "sums.records.jsonl"
    write_records(sums, _sum_records())
    cases = [(st.write_sft(tmp_path / f"{style}.jsonl", style, chat=chat, repeats=1), st.CHOICES,
              lambda rid: st.FACTS[int(rid[1])][0]) for style in ("dss", "label", "cot", "gold")]
    run_format(sums, tmp_path / "sums.jsonl", FormatOptions(style="gold", chat=chat, val_frac=0))
    cases.append((tmp_path / "sums.jsonl", None, lambda rid: SUMS[int(rid[1:])][0]))
    for sft, choices, question_of in cases:
        data = read_sft(sft)
        fmt = load_prompt_format(data.prompt_format, sft.name)
        task = inference_task(fmt)
        args = SFTConfig(output_dir=str(tmp_path / "out"), bf16=False, report_to="none", max_length=512,
                         activation_checkpointing=False, dataloader_pin_memory=False, disable_tqdm=True, completion_only_loss=True)
        trained = SFTTrainer(model=model, args=args, train_dataset=dataset(data.train, pick(False)),
                             processing_class=tokenizer).train_dataset
        assert len(trained) == len(data.train)
        ids_of = [json.loads(x)["id"] for x in sft.read_text().splitlines() if json.loads(x)["split"] == "train"]
        for row, rid, example in zip(data.train, ids_of, trained):
            prompt_len = next(i for i, t in enumerate(example["labels"]) if t != -100)
            prompt_ids = list(example["input_ids"][:prompt_len])
            text = row["prompt"][-1]["content"] if chat else row["prompt"]
            assert encode_prompt(tokenizer, text, chat) == prompt_ids, (sft.name, text)
            if row["task"] == task:
                asked = encode_prompt(tokenizer, render_prompt(fmt, question_of(rid), choices, task), chat)
                assert asked == prompt_ids, (sft.name, text)


def test_eval_errors_are_one_line(cli, tmp_path):
    no_gold = tmp_path / "nogold.jsonl"
    no_gold.write_text('{"id": "a", "question": "why?"}\n')
    code, _, err = cli("eval", no_gold, "--model", tmp_path)
    assert code == 1 and err.strip() == f"kdpipe: error: {no_gold}: no record has a gold answer to score against"
    ev = st.write_eval(tmp_path / "eval.jsonl")
    code, _, err = cli("eval", ev, "--model", str(tmp_path / "missing-run"))
    assert code == 1 and err.strip() == f"kdpipe: error: {tmp_path / 'missing-run'}: no such model folder"
    code, _, err = cli("eval", ev, "--model", "x", "--batch-size", "0")
    assert code == 2 and "--batch-size must be positive" in err


@pytest.fixture(scope="module")
def label_pipeline(tmp_path_factory):
    """tiny-student -> train -> eval through the real CLI, label-style data."""
    from typer.testing import CliRunner

    from kdpipe.cli import app

    d = tmp_path_factory.mktemp("pipe")
    return _pipeline(CliRunner(), app, d, "label")


def _pipeline(runner, app, d: Path, style: str, extra: tuple = ()) -> Path:
    corpus = d / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in st.corpus_texts()))
    sft = st.write_sft(d / "sft.jsonl", style)
    ev = st.write_eval(d / "eval.jsonl")

    def ok(*args):
        r = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.stderr
        return r

    ok("tiny-student", d / "student", "--corpus", corpus, "--vocab-size", "400", "-q")
    ok("train", sft, "-o", d / "run", "--student", d / "student", "--merge", *FAST, *extra)
    r = ok("eval", ev, "--model", d / "run", "--baseline", d / "student", "-o", d / "eval.json", "-q")
    assert "| student |" in r.stdout and "| baseline |" in r.stdout
    return d


def _scores(d: Path) -> dict:
    return {m["role"]: m for m in json.loads((d / "eval.json").read_text())["models"]}


def test_label_pipeline_scorecard(label_pipeline):
    d = label_pipeline
    scores = _scores(d)
    assert set(scores) == {"student", "baseline"}
    assert scores["student"]["accuracy"] > scores["baseline"]["accuracy"]
    assert scores["student"]["asked_task"] == "answer" and scores["baseline"]["asked_task"] == "answer"
    s = scores["student"]
    assert s["n"] == len(st.FACTS) and s["ci95"][0] <= s["accuracy"] <= s["ci95"][1]
    assert s["examples_per_s"] > 0
    preds = [json.loads(x) for x in (d / "eval.predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 * len(st.FACTS)
    assert sum(p["correct"] for p in preds if p["model"] == "student") == s["correct"]
    md = (d / "eval.md").read_text()
    assert "| student |" in md and "95% CI" in md
    assert json.loads((d / "eval.json.meta.json").read_text())["stage"] == "eval"


def test_run_directory_reproduces_its_predictions(label_pipeline):
    """Adapter on base and merged model give the same greedy answers, run after run."""
    d = label_pipeline
    first = [json.loads(x) for x in (d / "eval.predictions.jsonl").read_text().splitlines()]
    student_first = [p["text"] for p in first if p["model"] == "student"]
    (d / "run" / "merged").rename(d / "merged-aside")  # force the adapter-on-base path
    try:
        again = run_eval(d / "eval.jsonl", EvalOptions(model=str(d / "run")))
    finally:
        (d / "merged-aside").rename(d / "run" / "merged")
    assert [p.text for p in again.predictions] == student_first


@pytest.mark.slow
@pytest.mark.parametrize("style", ["dss", "cot"])
def test_dss_and_cot_pipelines(style, tmp_path):
    from typer.testing import CliRunner

    from kdpipe.cli import app

    extra = ("--rationale-weight", "0.5") if style == "dss" else ("--max-steps", "60")
    d = _pipeline(CliRunner(), app, tmp_path, style, extra)
    scores = _scores(d)
    config = json.loads((d / "run" / "train_config.json").read_text())
    assert config["resolved"]["weighted_loss"] is (style == "dss")
    assert config["prompt_format"]["style"] == style
    assert scores["student"]["asked_task"] == {"cot": "cot", "dss": "label"}[style]
    assert scores["student"]["accuracy"] > scores["baseline"]["accuracy"]


# ------------------------------------------------------------------ --teacher, against the loopback server


def test_teacher_scored_side_by_side_with_cost_and_cache(label_pipeline, cli, tmp_path):
    from kdpipe.loopback import ScriptLine, running

    d = label_pipeline
    # The teacher gets every question right but the last, which it answers with another option.
    script = [ScriptLine(q, [f"It is the usual colour. So the answer is ({chr(97 + st.CHOICES.index(a))}) {a}."])
              for q, a in st.FACTS[:-1]]
    script.append(ScriptLine(st.FACTS[-1][0], ["Bananas are purple. So the answer is (a) blue."]))
    cache = tmp_path / "teacher.sqlite"
    with running(script) as server:
        args = ("eval", d / "eval.jsonl", "--model", d / "run", "--baseline", d / "student",
                "--teacher", "loopback-teacher", "--base-url", server.base_url, "--cache", cache,
                "--price-in", "1.0", "--price-out", "2.0", "-o", tmp_path / "eval.json", "-q")
        code, out, err = cli(*args)
        assert code == 0, err
        sent = server.stats["answered"]
        code, _, err = cli(*args)  # a rerun is served from the cache
        assert code == 0, err
        assert server.stats["answered"] == sent == len(st.FACTS)
    assert "| teacher |" in out and "| student |" in out and "| baseline |" in out
    report = json.loads((tmp_path / "eval.json").read_text())
    teacher = next(m for m in report["models"] if m["role"] == "teacher")
    assert teacher["correct"] == len(st.FACTS) - 1 and teacher["asked_task"] == "cot"
    tokens = teacher["tokens"]
    assert tokens["cached_answers"] == len(st.FACTS) and tokens["spent_prompt_tokens"] == 0
    expected = (tokens["prompt_tokens"] * 1.0 + tokens["completion_tokens"] * 2.0) / 1e6
    assert teacher["cost_usd"] == pytest.approx(expected) and teacher["cost_usd"] > 0
    preds = [json.loads(x) for x in (tmp_path / "eval.predictions.jsonl").read_text().splitlines()]
    wrong = [p for p in preds if p["model"] == "teacher" and not p["correct"]]
    assert [p["id"] for p in wrong] == [f"q{len(st.FACTS) - 1}"] and wrong[0]["answer"] == "blue"


def test_teacher_shares_the_spending_ledger_and_cap_with_generate(label_pipeline, cli, tmp_path):
    """One --max-usd for generate and eval --teacher: eval may spend only what the ledger's runs
    left, stops at the cap in one line (exit 3, like generate), appends what it paid, and the
    next generate counts it."""
    from kdpipe.generate import GenerateOptions, run_generate
    from kdpipe.loopback import ScriptLine, running

    d = label_pipeline
    script = [ScriptLine(q, [f"It is the usual colour. So the answer is ({chr(97 + st.CHOICES.index(a))}) {a}."])
              for q, a in st.FACTS]
    ledger = tmp_path / "spend.jsonl"

    def lines():
        return [json.loads(x) for x in ledger.read_text().splitlines()]

    with running(script) as server:
        def generate(cap):
            return run_generate(d / "eval.jsonl", tmp_path / "teacher.jsonl", GenerateOptions(
                model="loopback-teacher", base_url=server.base_url, cache=tmp_path / "generate.sqlite",
                price_in=1.0, price_out=2.0, max_usd=cap, spend_ledger=ledger))

        first = generate(10.0)
        assert first.exit_code == 0 and len(lines()) == 1
        answered = server.stats["answered"]

        def evaluate(cap):
            # Its own cache: every eval answer is paid for. --teacher-max-tokens 2000 makes one
            # request's worst case $0.0045 (each costs far less), so the cap below lets a few through.
            return cli("eval", d / "eval.jsonl", "--model", d / "run", "--teacher", "loopback-teacher",
                       "--base-url", server.base_url, "--cache", tmp_path / "eval.sqlite", "--concurrency", "1",
                       "--teacher-max-tokens", "2000", "--price-in", "1.0", "--price-out", "2.0",
                       "--spend-ledger", ledger, "--max-usd", str(cap), "-o", tmp_path / "eval.json", "-q")

        cap = first.cost_usd + 0.005
        code, _, err = evaluate(cap)
        assert code == 3 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert f"stopped at --max-usd {cap:g}" in err and "spent earlier (--spend-ledger)" in err
        assert not (tmp_path / "eval.json").exists()  # no teacher score is written from part of the answers
        paid = lines()
        sent = server.stats["answered"] - answered
        assert len(paid) == 2 and paid[1]["out"] == str(tmp_path / "eval.json") and paid[1]["usd"] > 0
        assert 0 < paid[1]["requests"] == sent < len(st.FACTS)
        assert sum(e["usd"] for e in paid) <= cap + 1e-9
        # A higher cap: only the questions not yet answered are asked, and their cost appended.
        code, _, err = evaluate(10.0)
        assert code == 0, err
        assert server.stats["answered"] - answered == len(st.FACTS) and len(lines()) == 3
        teacher = next(m for m in json.loads((tmp_path / "eval.json").read_text())["models"]
                       if m["role"] == "teacher")
        assert lines()[2]["usd"] == pytest.approx(teacher["cost_usd"] - paid[1]["usd"], abs=1e-8)
        # The next generate counts eval's lines: with the cap at what the ledger holds, it sends nothing.
        (tmp_path / "generate.sqlite").unlink()
        total = sum(e["usd"] for e in lines())
        stopped = generate(total)
        assert stopped.exit_code == 3 and stopped.extra["budget"].earlier == pytest.approx(total)
        assert len(lines()) == 3


def test_teacher_options_checked_before_any_model_loads(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ev = st.write_eval(tmp_path / "eval.jsonl")
    code, _, err = cli("eval", ev, "--model", tmp_path, "--teacher", "gpt-4o-mini", "--base-url",
                       "https://api.example.com/v1", "--price-in", "-1")
    assert code == 2
    assert "no API key: set OPENAI_API_KEY" in err and "--price-in must not be negative" in err


# ------------------------------------------------------------------ what a make log shows


@pytest.mark.slow
def test_progress_is_kdpipe_lines_only_and_quiet_is_silent(tmp_path):
    """Without -q, train/eval/tiny-student print only their own lines (one per logging step in train):
    no library progress bars, no deprecation warnings. With -q, nothing."""
    import os
    import subprocess

    def run(*args):
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
        p = subprocess.run([sys.executable, "-m", "kdpipe", *map(str, args)], capture_output=True, text=True,
                           env=env, timeout=600)
        assert p.returncode == 0, p.stderr
        return p.stderr.splitlines()

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in st.corpus_texts()))
    sft = st.write_sft(tmp_path / "sft.jsonl", "dss", repeats=1)
    ev = st.write_eval(tmp_path / "eval.jsonl")
    lines = run("tiny-student", tmp_path / "s", "--corpus", corpus, "--vocab-size", "400")
    lines += run("train", sft, "-o", tmp_path / "run", "--student", tmp_path / "s", "--max-steps", "10",
                 "--log-every", "5", "--eval-every", "10", "--batch-size", "4", "--max-length", "96")
    steps = [x for x in lines if x.startswith("train: step ")]
    training = [x for x in steps if "eval loss" not in x]
    assert [x.split()[2] for x in training] == ["5/10", "10/10"]
    assert all(" loss " in x and " lr " in x and "tokens/s" in x for x in training)
    assert any(x.startswith("train: step 10/10 eval loss ") for x in steps)
    lines += run("eval", ev, "--model", tmp_path / "run", "--limit", "2")
    progress = [x for x in lines if not x.startswith("|") and x.strip()]
    assert progress and all(x.split(":")[0] in ("tiny-student", "train", "eval") for x in progress), progress
    assert run("train", sft, "-o", tmp_path / "run", "--student", tmp_path / "s", "--max-steps", "2",
               "--max-length", "96", "--overwrite", "-q") == []
