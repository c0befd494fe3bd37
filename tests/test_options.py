"""Every option is declared once, on its stage's options dataclass, and the command line is built from it."""

import dataclasses

import pytest
import typer.main

from kdpipe.cli import app
from kdpipe.errors import UsageError
from kdpipe.evaluate import EvalOptions
from kdpipe.filter import FilterOptions
from kdpipe.format import FormatOptions
from kdpipe.generate import GenerateOptions
from kdpipe.hub.export import ExportOptions
from kdpipe.loopback.options import ServeOptions
from kdpipe.loop_report import LoopReportOptions
from kdpipe.probe import ProbeOptions
from kdpipe.seed import SeedOptions
from kdpipe.teacher.options import TeacherOptions
from kdpipe.tiny_student import TinyOptions
from kdpipe.train import TrainOptions

OPTIONS = {"seed": SeedOptions, "generate": GenerateOptions, "filter": FilterOptions, "format": FormatOptions,
           "train": TrainOptions, "eval": EvalOptions, "tiny-student": TinyOptions, "teacher serve": ServeOptions,
           "export-dataset": ExportOptions, "probe": ProbeOptions,
           "loop-report": LoopReportOptions}
# What a command takes besides its options class: inputs, outputs, --quiet.
OWN = {"seed": ["src", "-o/--out"], "generate": ["seeds", "-o/--out"],
       "filter": ["inp", "-o/--out", "--rejected", "--report"], "format": ["inp", "-o/--out"],
       "train": ["sft", "-o/--out"], "eval": ["eval_file", "-o/--out"], "tiny-student": ["out", "--corpus"],
       "teacher serve": [], "export-dataset": ["inp", "-o/--out"], "probe": ["seeds", "-o/--out"], "loop-report": ["work"]}
# The flags of each command, in help order, as they were before the command line was built from the
# options classes (eval has gained --prices, generate --expect-new and --expand-prompt); a change here is
# a change users see.
FLAGS = {
    "seed": ["src", "-o/--out", "--eval-out", "--eval-frac", "--seed", "--task", "--question-field",
             "--answer-field", "--choices-field", "--id-field", "--split", "--config", "--revision", "--limit",
             "--quiet/-q"],
    "generate": ["seeds", "-o/--out", "--mode", "--model", "--base-url", "--api-key-env", "--concurrency",
                 "--samples", "--temperature", "--max-tokens", "--stop", "--seed", "--cache", "--prompt",
                 "--logprobs", "--num-new", "--seeds-per-prompt", "--price-in", "--price-out", "--timeout", "--retries",
                 "--transport", "--dry-run", "--expect-new", "--expand-prompt", "--max-usd", "--batch", "--prices",
                 "--tokenizer", "--poll-interval", "--shard", "--export-batch",
                 "--import-batch", "--adaptive", "--rpm", "--tpm", "--round", "--spend-ledger", "--quiet/-q"],
    "filter": ["inp", "-o/--out", "--rejected", "--report", "--against", "--drop-errors/--keep-errors",
               "--decomposition/--no-decomposition", "--gold/--no-gold", "--drop-rationalized/--keep-rationalized",
               "--check-counterfactual/--no-check-counterfactual", "--rel-tol", "--vote/--no-vote", "--min-agreement", "--length/--no-length",
               "--min-question-words", "--max-question-words", "--min-rationale-words", "--max-rationale-words",
               "--restated/--no-restated", "--dedup/--no-dedup", "--near-dup/--no-near-dup", "--near-threshold",
               "--shingle", "--ngram", "--workers", "--judge", "--min-score", "--judge-prompt", "--judge-base-url",
               "--judge-api-key-env", "--cache", "--concurrency", "--judge-max-tokens", "--max-usd", "--price-in",
               "--price-out", "--prices", "--batch", "--quiet/-q"],
    "format": ["inp", "-o/--out", "--style", "--chat/--no-chat", "--val-frac", "--seed", "--label-prefix",
               "--rationale-prefix", "--answer-sentence", "--icl-shots", "--socratic-roles", "--icl-pool",
               "--quiet/-q"],
    "train": ["sft", "-o/--out", "--student", "--lora-r", "--lora-alpha", "--lora-dropout", "--lora-targets",
              "--full", "--qlora", "--rationale-weight", "--kd-alpha", "--kd-temperature", "--kd-top-k",
              "--learning-rate/--lr", "--lr-scheduler", "--warmup-ratio", "--epochs", "--max-steps", "--batch-size",
              "--grad-accum", "--gradient-checkpointing", "--max-length", "--packing", "--log-every", "--report-to",
              "--push-to-hub", "--private", "--eval-every", "--save-every", "--seed", "--resume", "--resume-from",
              "--overwrite",
              "--merge", "--trust-remote-code", "--teacher-model", "--kd", "--divergence", "--beta",
              "--on-policy-frac", "--teacher-4bit", "--teacher-device", "--quiet/-q"],
    "eval": ["eval_file", "--model", "-o/--out", "--baseline", "--batch-size", "--max-new-tokens", "--limit",
             "--predictions", "--shard", "--teacher", "--base-url", "--api-key-env", "--cache", "--teacher-prompt",
             "--teacher-max-tokens", "--concurrency", "--price-in", "--price-out", "--prices", "--max-usd",
             "--spend-ledger", "--judge",
             "--judge-base-url", "--judge-api-key-env", "--judge-cache", "--judge-max-tokens", "--judge-price-in",
             "--judge-price-out", "--quiet/-q"],
    "tiny-student": ["out", "--corpus", "--vocab-size", "--layers", "--hidden", "--heads",
                     "--split-digits/--no-split-digits", "--seed", "--quiet/-q"],
    "export-dataset": ["inp", "-o/--out", "--name", "--license", "--overwrite", "--push-to-hub", "--private",
                       "--quiet/-q"],
    "teacher serve": ["--host", "--port", "--script", "--latency", "--fault-rate", "--retry-after",
                      "--fault-seed", "--hostile", "--unauthorized-after", "--hang-after", "--rate-limit",
                      "--token-limit", "--limit-headers/--no-limit-headers", "--ready-file",
                      "--model"],
    "probe": ["seeds", "-o/--out", "--model", "--against", "--pool", "--max", "--easy-share", "--seed", "--round",
              "--batch-size", "--max-new-tokens", "--judge", "--judge-base-url", "--judge-api-key-env",
              "--judge-cache", "--judge-concurrency", "--judge-max-tokens", "--judge-max-usd", "--judge-price-in",
              "--judge-price-out", "--judge-prices", "--judge-spend-ledger", "--min-score", "--judge-prompt",
              "--quiet/-q"],
    "loop-report": ["work", "--rounds", "--spend-ledger", "--max-usd", "--quiet/-q"],
}


def click_command(name: str):
    cmd = typer.main.get_command(app)
    for part in name.split():
        cmd = cmd.commands[part]
    return cmd


def shown(p) -> str:
    return "/".join(p.opts + p.secondary_opts) if p.param_type_name == "option" else p.name


def field_flags(cls, block=None) -> dict[str, tuple]:
    """flag -> (default, help) of every command-line field of `cls`, read from the dataclass alone."""
    block = block or {}
    out = {}
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True) or (block.get("offered") and f.name not in block["offered"]):
            continue
        if "block" in f.metadata:
            out.update(field_flags(TeacherOptions, f.metadata["block"]))
            continue
        flag = block.get("renamed", {}).get(f.name) or "/".join(f.metadata["flags"] or ()) or (
            "--" + f.name.replace("_", "-"))
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        help_ = block.get("helps", {}).get(f.name, f.metadata["help"]) or None
        out[flag] = (default, help_)
    return out


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_the_flags_of_a_command_are_the_fields_of_its_options_class(name):
    params = [p for p in click_command(name).params if p.name not in ("help", "quiet")]
    own = [shown(p) for p in params if shown(p) in OWN[name]]
    assert own == OWN[name]
    offered = {shown(p): p for p in params if shown(p) not in OWN[name]}
    fields = field_flags(OPTIONS[name])
    assert set(offered) == set(fields)  # no field missing from the command line, no flag without a field
    for flag, (default, help_) in fields.items():
        p = offered[flag]
        assert p.help == help_, flag
        if not p.required:
            assert p.default == default or (p.default, default) in ((None, ""), ((), [])), flag


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_every_command_keeps_its_flags_and_their_order(name):
    assert [shown(p) for p in click_command(name).params if p.name != "help"] == FLAGS[name]


def test_a_command_that_leaves_out_an_option_is_refused_when_built():
    from kdpipe.cli.build import command, fields

    with pytest.raises(TypeError, match=r"options left off the command line: \['workers'\]"):
        command(FilterOptions, lambda opts: None, [p for p in fields(FilterOptions) if p.name != "workers"])


def test_the_command_line_fills_the_options_object(cli, tmp_path):
    """Values given as flags arrive on the options class the stage reads: eval's teacher block included."""
    ev = tmp_path / "eval.jsonl"
    ev.write_text('{"id": "a", "question": "1+1?", "answer": "2", "task": "numeric"}\n')
    code, _, err = cli("eval", ev, "--model", tmp_path / "nothing-here", "--teacher", "m", "--base-url",
                       "ftp://x", "--teacher-max-tokens", "0", "--concurrency", "0", "--price-out", "-2",
                       "--batch-size", "0")
    assert code == 2 and err.count("\n") == 1
    # Every problem at once, each named by the flag the user typed (eval's --teacher-max-tokens, not --max-tokens).
    for problem in ("--batch-size must be positive", "--price-out must not be negative",
                    "--concurrency must be at least 1", "--teacher-max-tokens must be at least 1",
                    "--base-url must be an http(s) URL"):
        assert problem in err
    assert "--max-tokens must" not in err and "--model" not in err


def test_options_problems_are_listed_and_raised_together():
    opts = SeedOptions(task="poem", eval_frac=1.5, limit=0)
    assert opts.problems() == ["--task must be one of numeric, choice, text, instruction, got 'poem'",
                               "--eval-frac must be between 0 and 1 (exclusive), got 1.5",
                               "--limit must be at least 1"]
    with pytest.raises(UsageError) as e:
        opts.validate()
    assert str(e.value) == "; ".join(opts.problems())


def test_eval_names_its_teacher_flags_and_refuses_a_dry_run():
    bad = EvalOptions(model="run", teacher=TeacherOptions(model="", base_url="http://127.0.0.1:9/v1"))
    assert bad.problems() == []  # no --teacher: the teacher options are not looked at
    opts = EvalOptions(model="run", teacher=TeacherOptions(model="m", base_url="http://127.0.0.1:9/v1",
                                                           max_tokens=0, dry_run=True))
    assert opts.problems() == ["--teacher-max-tokens must be at least 1",
                               "eval --teacher cannot dry-run: a teacher scored on answers never asked would score 0"]
    gen = GenerateOptions(model="", base_url="http://127.0.0.1:9/v1", max_tokens=0, price_in=-1, price_out=-1)
    assert gen.problems() == ["--price-in must not be negative", "--price-out must not be negative",
                              "--model is required", "--max-tokens must be at least 1"]


def test_eval_asks_the_teacher_through_the_backend_generate_uses(tmp_path):
    """With the Batch API switched on, eval's teacher questions go through /v1/batches (the
    factory's batch backend), and come back as the answers the online backend gives."""
    from kdpipe.evaluate.teacher import ask_teacher, prepare_teacher
    from kdpipe.loopback import ScriptLine, running
    from kdpipe.records import Record

    records = [Record(id=f"q{i}", question=f"What is {i} plus {i}?", task="numeric", gold=str(2 * i))
               for i in range(6)]
    script = [ScriptLine(r.question, [f"Twice {i} is {2 * i}. The answer is {2 * i}."])
              for i, r in enumerate(records)]
    answers = {}
    for backend in ("online", "batch"):
        with running(script) as srv:
            setup = prepare_teacher(TeacherOptions(model="loopback", base_url=srv.base_url, price_in=2.0,
                                                   price_out=8.0, cache=tmp_path / f"{backend}.sqlite",
                                                   batch=backend == "batch", poll_interval=0.02))
            answers[backend], _, cost, tokens = ask_teacher(setup, records)
            assert tokens["spent_completion_tokens"] > 0 and cost > 0
            if backend == "batch":
                assert srv.stats["batches_created"] == 1 and srv.stats["requests"] == 0
            else:
                assert srv.stats["batches_created"] == 0 and srv.stats["requests"] == len(records)
    assert answers["batch"] == answers["online"] == [f"Twice {i} is {2 * i}. The answer is {2 * i}."
                                                     for i in range(6)]
