"""The `kdpipe` command line: parse flags, call a stage function, report.

Only Typer and the module of the command being run are imported at start-up:
`kdpipe generate` never imports the filter's, train's or eval's options, and each
command imports its stage's work when it runs, so the data stages never load
torch. Options (default, help text, flag) are fields of each stage's options
dataclass; the command parameters are built from them (build.py), so the command
modules hold no defaults and no checks.

The command modules (seed; data: filter, format, export-dataset; teacher:
generate, merge and the `teacher` tools; student: train, eval, tiny-student,
probe, loop-report) never import each other or this module. COMMANDS names,
for each command, the module that defines it and the short help `kdpipe --help`
lists, so listing the commands imports none of them (tests/test_cli.py checks
that each short help is the first paragraph of its command's help). The commands
convert their plain parameter values without Typer's pydantic (plain_values.py).
"""

from __future__ import annotations

import importlib
import os
from gettext import gettext
from collections.abc import Iterator, MutableMapping

import typer
import typer.core
import typer.main

from kdpipe import __version__
from kdpipe.cli.common import DEBUG_ENV
from kdpipe.cli.plain_values import PlainCommand, PlainGroup

# name: (module in kdpipe.cli, attribute: a command function or a Typer group, short help), in help order.
COMMANDS = {
    "seed": ("seed", "seed", "Import questions (and gold answers) into seed records with stable ids."),
    "generate": ("teacher", "generate",
                 "Ask the teacher: label questions with rationales, or expand the seed set."),
    "merge": ("teacher", "merge", "Join the shard outputs of one `generate --shard I/N` (or `eval --shard I/N`) "
                                  "run into the file(s) an unsharded run writes."),
    "filter": ("data", "filter_",
               "Drop wrong, broken, duplicate and contaminated teacher output; report counts per rule."),
    "format": ("data", "format_", "Turn records into prompt/completion rows for SFT (Distilling step-by-step, "
                                  "CoT, label, gold)."),
    "export-dataset": ("data", "export_dataset",
                       "Write filter or format output as a Hub dataset: data/<split>.jsonl and a dataset card "
                       "saying how the data were made (teacher, prompts, filter drops, licence notes); "
                       "--push-to-hub uploads it."),
    "train": ("student", "train",
              "Fine-tune the student on SFT rows (LoRA by default); loss on the completion only."),
    "eval": ("student", "eval_", "Score the student greedily against gold answers (instruction records: --judge "
                                 "pairwise and ROUGE-L); print a Markdown scorecard."),
    "tiny-student": ("student", "tiny_student",
                     "Build a tiny RANDOMLY INITIALISED student (a small Llama) for offline demos and tests."),
    "probe": ("student", "probe", "Find the training questions the student gets wrong; write them (with its "
                                  "answers and the reason, and a share of easy ones) as seeds for `generate "
                                  "--mode expand` (a Lion-style loop round)."),
    "loop-report": ("student", "loop_report",
                    "Print the scorecard of `make loop`: per round, student accuracy with its interval, hard "
                    "questions found, new questions kept, teacher tokens and dollars (from the files the rounds "
                    "wrote)."),
    "teacher": ("teacher", "teacher_app",
                "Teacher tools: a loopback OpenAI-compatible server, clearing and merging response caches."),
}

# Settings of the app that its commands are built with too.
SETTINGS = dict(
    # A rich traceback with locals could print an API key; plain tracebacks only.
    pretty_exceptions_enable=False,
    # Plain Click help: rendering it with rich costs more start-up time than the rest of the CLI.
    rich_markup_mode=None,
)


def load_command(name: str):
    """The Click command `name`, built the way Typer builds a command registered on the app (but
    of the Plain classes): importing its module is the cost of running it."""
    module, attr, _ = COMMANDS[name]
    target = getattr(importlib.import_module(f"kdpipe.cli.{module}"), attr)
    holder = typer.Typer(**SETTINGS)
    if isinstance(target, typer.Typer):
        for info in target.registered_commands:  # its subcommands are built with the group
            info.cls = info.cls or PlainCommand
        holder.add_typer(target, name=name, cls=PlainGroup)
    else:
        holder.command(name, cls=PlainCommand)(target)
    return typer.main.get_group(holder).commands[name]


class LazyCommands(MutableMapping):
    """The app's commands by name, each built when first looked up."""

    def __init__(self) -> None:
        self.built: dict = {}

    def __getitem__(self, name: str):
        if name not in self.built:
            if name not in COMMANDS:
                raise KeyError(name)
            self.built[name] = load_command(name)
        return self.built[name]

    def __setitem__(self, name: str, cmd) -> None:
        self.built[name] = cmd

    def __delitem__(self, name: str) -> None:
        raise TypeError("the app's commands are fixed")

    def __iter__(self) -> Iterator[str]:
        yield from COMMANDS
        yield from (name for name in self.built if name not in COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS) + sum(name not in COMMANDS for name in self.built)

    def listed(self, name: str):
        """What `kdpipe --help` lists for `name`: the command if built, else one holding its short help."""
        return self.built.get(name) or typer.core.TyperCommand(name, help=COMMANDS[name][2])


class LazyGroup(PlainGroup):
    """Click's lazily loaded subcommands: `kdpipe <command>` imports only that command's module."""

    def __init__(self, **attrs) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands()

    def list_commands(self, ctx) -> list[str]:
        return list(self.commands)  # names only: the commands' values would build them

    def format_commands(self, ctx, formatter) -> None:
        rows = [(name, self.commands.listed(name)) for name in self.list_commands(ctx)]
        limit = formatter.width - 6 - max(len(name) for name, _ in rows)  # as Click's own listing
        with formatter.section(gettext("Commands")):
            formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])


app = typer.Typer(
    name="kdpipe",
    cls=LazyGroup,
    help="Black-box knowledge distillation of LLMs, one JSONL file per stage:\n\n"
    "seed -> generate -> filter -> format -> train -> eval",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    **SETTINGS,
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


def run() -> None:
    """Console-script entry point."""
    import sys

    args = sys.argv[1:]
    # --debug is the app's option, but a user adds it where the error showed: after the command.
    options = args[:args.index("--")] if "--" in args else args
    if "--debug" in options[1:]:
        args.remove("--debug")
        os.environ[DEBUG_ENV] = "1"
    try:
        app(args=args, prog_name="kdpipe")
    finally:
        # The interpreter's last collection at exit would walk every object a large run made
        # (tens of ms for 10,000 records); frozen, they are left to the process's end.
        import gc

        gc.freeze()


if __name__ == "__main__":
    run()
