"""The `kdpipe` command line: parse flags, call a stage function, report.

Only Typer is imported at start-up; each command imports its stage module
when it runs, so `kdpipe --help` stays fast and the data stages never load
torch. Defaults live on each stage's options dataclass, not here.

This module holds the app, its error reporting and the data commands (seed,
filter, format); cli_teacher.py adds generate and `teacher serve`, and
cli_student.py adds train, eval and tiny-student.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional

import typer

from kdpipe import __version__
from kdpipe.errors import KdpipeError

app = typer.Typer(
    name="kdpipe",
    help="Black-box knowledge distillation of LLMs, one JSONL file per stage:\n\n"
    "seed -> generate -> filter -> format -> train -> eval",
    no_args_is_help=True,
    add_completion=False,
    # A rich traceback with locals could print an API key; plain tracebacks only.
    pretty_exceptions_enable=False,
    # Plain Click help: rendering it with rich costs more start-up time than the rest of the CLI.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEBUG_ENV = "KDPIPE_DEBUG"


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"kdpipe: error: {message}", err=True)
    raise typer.Exit(code)


def reports_errors(fn):
    """Turn a stage's KdpipeError, or a file system error about a named path, into one line on
    stderr and a non-zero exit (KDPIPE_DEBUG=1 or --debug: the traceback instead)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KdpipeError as e:
            if _debug():
                raise
            fail(str(e), e.exit_code)
        except OSError as e:
            # A path the user gave that the file system refused; any other OSError is a bug.
            if _debug() or not _about_a_path(e):
                raise
            fail(f"{e.filename}: {e.strerror}")
        except KeyboardInterrupt:
            if _debug():
                raise
            typer.echo("kdpipe: interrupted; finished work is kept, rerun the same command to resume",
                       err=True)
            raise typer.Exit(130)

    return wrapper


def _about_a_path(e: OSError) -> bool:
    return isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)) and (
        e.filename is not None and e.strerror is not None)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kdpipe {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help=f"Show tracebacks (same as {DEBUG_ENV}=1)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


def say(quiet: bool, message: str) -> None:
    if not quiet:
        typer.echo(message, err=True)


QUIET = typer.Option(False, "--quiet", "-q", help="Print nothing but errors.")


# ------------------------------------------------------------------ seed

from kdpipe.seed import SeedOptions as _Seed  # noqa: E402  (light: no heavy imports)


@app.command()
@reports_errors
def seed(
    src: Path = typer.Argument(..., help="JSONL, JSON array, CSV, Parquet, or a folder saved with "
                                         "datasets' save_to_disk.", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Seed records (JSONL) to write.", show_default=False),
    eval_out: Optional[Path] = typer.Option(_Seed.eval_out, "--eval-out",
                                            help="Also hold out eval questions into this file."),
    eval_frac: float = typer.Option(_Seed.eval_frac, "--eval-frac", help="Share of questions held out."),
    seed_: int = typer.Option(_Seed.seed, "--seed", help="Seed of the held-out split."),
    task: Optional[str] = typer.Option(_Seed.task, "--task",
                                       help="numeric | choice | text (detected when omitted)."),
    question_field: Optional[str] = typer.Option(
        _Seed.question_field, "--question-field",
        help="Field(s) holding the question; several comma-separated fields are joined with a newline."),
    answer_field: Optional[str] = typer.Option(_Seed.answer_field, "--answer-field",
                                               help="Field holding the gold answer."),
    choices_field: Optional[str] = typer.Option(_Seed.choices_field, "--choices-field",
                                                help="Field holding the options of a multiple-choice question."),
    id_field: Optional[str] = typer.Option(_Seed.id_field, "--id-field",
                                           help="Field holding an id (else ids are content hashes)."),
    split: Optional[str] = typer.Option(_Seed.split, "--split", help="Split of a saved DatasetDict."),
    limit: Optional[int] = typer.Option(_Seed.limit, "--limit", help="Read only the first N rows."),
    quiet: bool = QUIET,
) -> None:
    """Import questions (and gold answers) into seed records with stable ids."""
    from kdpipe.seed import SeedOptions, run_seed

    opts = SeedOptions(question_field=question_field, answer_field=answer_field,
                       choices_field=choices_field, id_field=id_field, task=task, split=split,
                       eval_out=eval_out, eval_frac=eval_frac, seed=seed_, limit=limit)
    r = run_seed(src, out, opts)
    q = "+".join(r.fields["question"])
    say(quiet, f"seed: {r.read} read, {r.duplicates} duplicates removed, {r.written} written to {out}"
               + (f", {r.held_out} held out to {eval_out}" if eval_out else "")
               + f" (task {r.task}; question: {q}, answer: {r.fields['answer'] or '-'}"
               + (f", choices: {r.fields['choices']}" if r.fields["choices"] else "") + ")")


# ------------------------------------------------------------------ generate and the loopback teacher

from kdpipe import cli_teacher  # noqa: E402,F401  (registers generate and `teacher serve`, in this order)


# ------------------------------------------------------------------ filter and format

from kdpipe.filter import FilterOptions as _Filter  # noqa: E402  (light: numpy only)
from kdpipe.format import FormatOptions as _Format  # noqa: E402


@app.command("filter")
@reports_errors
def filter_(
    inp: Path = typer.Argument(..., help="Teacher records (JSONL) from `generate`, or seed records.",
                               show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Kept records (JSONL) to write.", show_default=False),
    rejected: Optional[Path] = typer.Option(None, "--rejected",
                                            help="Write every dropped record here, with its reason."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the counts per rule here (JSON)."),
    against: list[Path] = typer.Option([], "--against", help="Eval records to decontaminate against "
                                       "(repeatable)."),
    drop_errors: bool = typer.Option(_Filter.drop_errors, "--drop-errors/--keep-errors",
                                     help="Rule 1: drop samples `generate` marked as errors."),
    gold: bool = typer.Option(_Filter.gold, "--gold/--no-gold",
                              help="Rule 2: drop samples whose answer disagrees with the gold answer."),
    rel_tol: float = typer.Option(_Filter.rel_tol, "--rel-tol", help="Relative tolerance of numeric answers."),
    vote: bool = typer.Option(_Filter.vote, "--vote/--no-vote",
                              help="Rule 3: majority vote over the samples of records without gold."),
    min_agreement: float = typer.Option(_Filter.min_agreement, "--min-agreement",
                                        help="Share of samples the majority answer needs."),
    length: bool = typer.Option(_Filter.length, "--length/--no-length",
                                help="Rule 4: word bounds on question and rationale."),
    min_question_words: int = typer.Option(_Filter.min_question_words, "--min-question-words"),
    max_question_words: int = typer.Option(_Filter.max_question_words, "--max-question-words"),
    min_rationale_words: int = typer.Option(_Filter.min_rationale_words, "--min-rationale-words"),
    max_rationale_words: int = typer.Option(_Filter.max_rationale_words, "--max-rationale-words"),
    restated: bool = typer.Option(_Filter.restated, "--restated/--no-restated",
                                  help="Rule 4: drop a rationale that only restates the answer."),
    dedup: bool = typer.Option(_Filter.dedup, "--dedup/--no-dedup",
                               help="Rule 6: drop exact duplicate questions (normalized)."),
    near_dup: bool = typer.Option(_Filter.near_dup, "--near-dup/--no-near-dup",
                                  help="Rule 7: drop a question near an earlier kept one (MinHash-LSH "
                                       "proposes pairs, so may miss one near the threshold; exact "
                                       "Jaccard decides)."),
    near_threshold: float = typer.Option(_Filter.near_threshold, "--near-threshold",
                                         help="Jaccard similarity of word shingles from which a question "
                                              "is a near-duplicate."),
    shingle: int = typer.Option(_Filter.shingle, "--shingle", help="Words per shingle."),
    ngram: int = typer.Option(_Filter.ngram, "--ngram",
                              help="Length in words of a span shared with an eval question that "
                                   "counts as contamination."),
    workers: int = typer.Option(_Filter.workers, "--workers",
                                help="Processes for the record rules (0: one per CPU on a large input)."),
    quiet: bool = QUIET,
) -> None:
    """Drop wrong, broken, duplicate and contaminated teacher output; report counts per rule.

    Rules in this order, each one switchable: 1 teacher errors, 2 gold agreement, 3 self-consistency
    vote (no gold, several samples), 4 question/rationale length and restated answers,
    5 contamination (--against), 6 exact duplicates, 7 near-duplicates of a kept question.
    The first rule that removes a record is its reason in --rejected.
    """
    from kdpipe.filter import FilterOptions, run_filter

    opts = FilterOptions(drop_errors=drop_errors, gold=gold, rel_tol=rel_tol, vote=vote,
                         min_agreement=min_agreement, length=length, min_question_words=min_question_words,
                         max_question_words=max_question_words, min_rationale_words=min_rationale_words,
                         max_rationale_words=max_rationale_words, restated=restated, dedup=dedup,
                         near_dup=near_dup, near_threshold=near_threshold, shingle=shingle,
                         against=list(against), ngram=ngram, workers=workers)
    rep = run_filter(inp, out, opts, rejected=rejected, report=report)
    say(quiet, rep.table())
    say(quiet, f"filter: {rep.kept} of {rep.input} records kept ({rep.samples_kept} samples) in "
               f"{rep.seconds:.1f} s -> {out}" + (f"; rejected -> {rejected}" if rejected else ""))


@app.command("format")
@reports_errors
def format_(
    inp: Path = typer.Argument(..., help="Filtered records (JSONL).", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="SFT rows (JSONL) to write.", show_default=False),
    style: str = typer.Option(_Format.style, "--style", help="dss | cot | label | gold."),
    chat: bool = typer.Option(_Format.chat, "--chat/--no-chat",
                              help="Chat messages (for a chat template) or plain strings."),
    val_frac: float = typer.Option(_Format.val_frac, "--val-frac",
                                   help="Share of records whose rows go to the validation split."),
    seed_: int = typer.Option(_Format.seed, "--seed", help="Seed of the split and the shuffle."),
    label_prefix: str = typer.Option(_Format.label_prefix, "--label-prefix", help="dss label task prefix."),
    rationale_prefix: str = typer.Option(_Format.rationale_prefix, "--rationale-prefix",
                                         help="dss rationale task prefix."),
    answer_sentence: str = typer.Option(_Format.answer_sentence, "--answer-sentence",
                                        help="How a cot completion ends; must contain {answer}."),
    quiet: bool = QUIET,
) -> None:
    """Turn records into prompt/completion rows for SFT (Distilling step-by-step, CoT, label, gold)."""
    from kdpipe.format import FormatOptions, run_format

    opts = FormatOptions(style=style, chat=chat, val_frac=val_frac, seed=seed_, label_prefix=label_prefix,
                         rationale_prefix=rationale_prefix, answer_sentence=answer_sentence)
    r = run_format(inp, out, opts)
    skipped = "".join(f"; skipped {v} ({k})" for k, v in r.skipped.items())
    say(quiet, f"format: {r.records} records -> {r.rows} rows ({r.train} train, {r.val} val), "
               f"style {style} -> {out}{skipped}")



# ------------------------------------------------------------------ train, eval and the tiny student

from kdpipe import cli_student  # noqa: E402,F401  (registers train, eval and tiny-student)


def run() -> None:
    """Console-script entry point."""
    app(prog_name="kdpipe")


if __name__ == "__main__":
    run()
