"""`kdpipe train`, `kdpipe eval` and `kdpipe tiny-student`: flags in, a stage function called, a summary out.

Each command's options are built from its options class (TrainOptions, EvalOptions with the teacher
block of TeacherOptions, TinyOptions); only inputs, outputs and --quiet are declared here.

Part of the command line (assembled in cli/__init__.py): torch and transformers are imported only when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdpipe.cli.build import QUIET_PARAM, command, fields, param
from kdpipe.cli.common import say

# ------------------------------------------------------------------ train and eval

from kdpipe.evaluate import EvalOptions  # (light: heavy imports are inside functions)
from kdpipe.tiny_student import TinyOptions
from kdpipe.train import TrainOptions


def _train(opts, sft: Path, out: Path, quiet: bool) -> None:
    """Fine-tune the student on SFT rows (LoRA by default); loss on the completion only."""
    from kdpipe.train import run_train

    r = run_train(sft, out, opts, progress=lambda m: say(quiet, m))
    quiet = quiet or not r.main_process  # one report for a launched run, from the process that wrote it
    for note in r.notes:
        say(quiet, f"train: note: {note}")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    say(quiet, f"train: {r.steps} steps in {r.seconds:.1f} s, train loss {fmt(r.train_loss)}, "
               f"validation loss {fmt(r.eval_loss)}, "
               f"{'-' if r.tokens_per_s is None else f'{r.tokens_per_s:.0f}'} tokens/s; run in {out}")


train = command(TrainOptions, _train, [
    param("sft", Path, typer.Argument(..., help="SFT rows written by `kdpipe format`.", show_default=False)),
    param("out", Path, typer.Option(..., "-o", "--out", help="Run directory to write.", show_default=False)),
    *fields(TrainOptions),
    QUIET_PARAM])


def _eval(opts, eval_file: Path, out: Optional[Path], quiet: bool) -> None:
    """Score the student greedily against gold answers (instruction records: --judge pairwise and ROUGE-L);
    print a Markdown scorecard."""
    from kdpipe.evaluate import markdown, run_eval

    report = run_eval(eval_file, opts, out, progress=lambda m: say(quiet, m))
    typer.echo(markdown(report))
    if out is not None:
        say(quiet, f"eval: wrote {out} and its predictions and Markdown table beside it")


eval_ = command(EvalOptions, _eval, [
    param("eval_file", Path, typer.Argument(..., help="Records with gold answers (e.g. `seed --eval-out`).",
                                            show_default=False)),
    *fields(EvalOptions, "model"),
    param("out", Optional[Path], typer.Option(None, "-o", "--out", help="eval.json to write (with "
                                              "<out>.predictions.jsonl and <out>.md beside it).")),
    *fields(EvalOptions, "baseline", "batch_size", "max_new_tokens", "limit", "predictions", "shard", "teacher.model",
            "teacher.base_url", "teacher.api_key_env", "teacher.cache", "teacher_prompt", "teacher.max_tokens",
            "teacher.concurrency", "teacher.price_in", "teacher.price_out", "teacher.prices", "teacher.max_usd",
            "teacher.spend_ledger", "judge.model",
            "judge.base_url", "judge.api_key_env", "judge.cache", "judge.max_tokens", "judge.price_in",
            "judge.price_out"),
    QUIET_PARAM])


def _tiny_student(opts, out: Path, corpus: Path, quiet: bool) -> None:
    """Build a tiny RANDOMLY INITIALISED student (a small Llama) for offline demos and tests.

    It is not a pretrained model and knows nothing: it exists so that `train` and `eval` can run
    end to end without a model hub. Use a real model id or folder for real work.
    """
    from kdpipe.libraries import quiet_libraries
    from kdpipe.tiny_student import build_tiny_student, corpus_texts

    quiet_libraries()
    path = build_tiny_student(out, corpus_texts(corpus), opts)
    say(quiet, f"tiny-student: wrote a random {opts.layers}-layer Llama of width {opts.hidden_size} and its "
               f"tokenizer to {path}")


tiny_student = command(TinyOptions, _tiny_student, [
    param("out", Path, typer.Argument(..., help="Folder to write the model and tokenizer to.", show_default=False)),
    param("corpus", Path, typer.Option(..., "--corpus", help="JSONL whose string fields train the tokenizer.",
                                       show_default=False)),
    *fields(TinyOptions),
    QUIET_PARAM])


# ------------------------------------------------------------------ probe

from kdpipe.probe import ProbeOptions  # (light: the student loads when it runs)


def _probe(opts, seeds: Path, out: Path, quiet: bool) -> None:
    """Find the training questions the student gets wrong; write them (with its answers and the reason, and a
    share of easy ones) as seeds for `generate --mode expand` (a Lion-style loop round)."""
    from kdpipe.probe import run_probe

    r = run_probe(seeds, out, opts)
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(r.reasons.items()))
    say(quiet, f"probe: {r.probed} of {r.read} questions probed ({r.in_eval} also in --against, "
               f"{r.no_reference} without a gold or teacher answer left out"
               + (f", {r.no_judge} instruction records left out: no --judge" if r.no_judge else "")
               + (f", {r.unjudged} the judge gave no score left out" if r.unjudged else "")
               + f"); {r.wrong} wrong" + (f" ({reasons})" if reasons else "")
               + f"; wrote {r.hard} hard and {r.easy} easy to {out}")
    if r.judge_cost is not None:
        c = r.judge_cost
        say(quiet, f"probe: judge {c['model']}: {c['replies']} scores ({c['cached']} from the cache), "
                   + (f"${c['spent_usd']:.4f} spent now" if c["spent_usd"] is not None else "cost unknown (no price)"))


probe = command(ProbeOptions, _probe, [
    param("seeds", Path, typer.Argument(..., help="Training records (seed records with gold, or filtered teacher "
                                                  "records).", show_default=False)),
    param("out", Path, typer.Option(..., "-o", "--out", help="Seed records (JSONL) to write.", show_default=False)),
    *fields(ProbeOptions),
    QUIET_PARAM])


from kdpipe.loop_report import LoopReportOptions  # (light: json only)


def _loop_report(opts, work: Path, quiet: bool) -> None:
    """Print the scorecard of `make loop`: per round, student accuracy with its interval, hard questions
    found, new questions kept, teacher tokens and dollars (from the files the rounds wrote)."""
    from kdpipe.loop_report import scorecard

    typer.echo(scorecard(work, opts.rounds, opts.spend_ledger, opts.max_usd))


loop_report = command(LoopReportOptions, _loop_report, [
    param("work", Path, typer.Argument(..., help="The loop's WORK folder (round 0 in it, round N in round-N/).",
                                       show_default=False)),
    *fields(LoopReportOptions),
    QUIET_PARAM])
