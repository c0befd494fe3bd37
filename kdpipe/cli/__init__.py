"""The `kdpipe` command line: parse flags, call a stage function, report.

Only Typer and the light options classes are imported at start-up; each
command imports its stage's work when it runs, so `kdpipe --help` stays fast
and the data stages never load torch. Options (default, help text, flag) are
fields of each stage's options dataclass; the command parameters are built
from them (build.py), so the command modules hold no defaults and no checks.

This module assembles the app from the command modules (data: seed, filter,
format; teacher: generate and `teacher serve`; student: train, eval,
tiny-student, probe), which never import each other or this module.
"""

from __future__ import annotations

import os

import typer

from kdpipe import __version__
from kdpipe.cli import data, student, teacher
from kdpipe.cli.common import DEBUG_ENV

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



app.command()(data.seed)
app.command()(teacher.generate)
app.command()(teacher.merge)
app.add_typer(teacher.teacher_app, name="teacher")
app.command("filter")(data.filter_)
app.command("format")(data.format_)
app.command("export-dataset")(data.export_dataset)
app.command()(student.train)
app.command("eval")(student.eval_)
app.command("tiny-student")(student.tiny_student)
app.command()(student.probe)
app.command("loop-report")(student.loop_report)


def run() -> None:
    """Console-script entry point."""
    import sys

    args = sys.argv[1:]
    # --debug is the app's option, but a user adds it where the error showed: after the command.
    options = args[:args.index("--")] if "--" in args else args
    if "--debug" in options[1:]:
        args.remove("--debug")
        os.environ[DEBUG_ENV] = "1"
    app(args=args, prog_name="kdpipe")


if __name__ == "__main__":
    run()
