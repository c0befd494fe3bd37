"""The `kdpipe` command line: parse flags, call a stage function, report.

Only Typer is imported at start-up; each command imports its stage module
when it runs, so `kdpipe --help` stays fast and the data stages never load
torch. Defaults live on each stage's options dataclass, not here.
"""

from __future__ import annotations

import functools
import os
import sys
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
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEBUG_ENV = "KDPIPE_DEBUG"


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"kdpipe: error: {message}", err=True)
    raise typer.Exit(code)


def reports_errors(fn):
    """Turn a stage's KdpipeError into one line on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KdpipeError as e:
            if _debug():
                raise
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            if _debug():
                raise
            typer.echo("kdpipe: interrupted; finished work is kept, rerun the same command to resume",
                       err=True)
            raise typer.Exit(130)

    return wrapper


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


# ------------------------------------------------------------------ generate
# (the generate command)


# ------------------------------------------------------------------ filter and format
# (the filter and format commands)


# ------------------------------------------------------------------ train and eval
# (the train and eval commands)


# ------------------------------------------------------------------ loopback teacher
# (the teacher command group: the loopback server)


def run() -> None:
    """Console-script entry point."""
    app(prog_name="kdpipe")


if __name__ == "__main__":
    run()
