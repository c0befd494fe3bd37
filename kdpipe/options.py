"""Options declared once: a dataclass field carries its default, its help text and its flag.

Each stage has one options dataclass whose fields are written with `option(...)`;
the command line (kdpipe/cli/build.py) builds every command's parameters from
those fields, the way TRL builds its parser from `SFTConfig`'s field metadata.
Validation has one shape: `problems()` returns every problem (worded with the
flags a user typed), and `validate()` raises them all at once in one UsageError.

Light on purpose: `kdpipe --help` imports this module and every options class.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from kdpipe.errors import UsageError

FlagNamer = Callable[[str], str]


def option(default: Any = dataclasses.MISSING, help: str = "", *, flags: str | tuple[str, ...] | None = None,
           required: bool = False, argument: bool = False, show_default: bool = True, cli: bool = True,
           default_factory: Any = dataclasses.MISSING, **extra: Any) -> Any:
    """A dataclass field that is also a command-line parameter.

    flags: the parameter's names when they are not `--field-name` (e.g. "-o/--out" is
    written ("-o", "--out"); a switch pair "--gold/--no-gold"); required: the flag must be
    given (the field's default serves Python callers); argument: positional; cli=False:
    a field the command line does not offer. Extra keywords go to typer.Option/Argument."""
    if isinstance(flags, str):
        flags = (flags,)
    metadata = {"help": help, "flags": flags, "required": required, "argument": argument,
                "show_default": show_default, "cli": cli, "extra": extra}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def long_flag(f: dataclasses.Field) -> str:
    """The flag a field is known by in messages: its first long name (`--gold` of --gold/--no-gold)."""
    for name in f.metadata.get("flags") or ():
        if name.startswith("--"):
            return name.split("/")[0]
    return "--" + f.name.replace("_", "-")


def flag_namer(cls, renamed: dict[str, str] | None = None) -> FlagNamer:
    """name -> flag for the fields of options class `cls` (a name that is no field: `--name`);
    `renamed` gives the flags a command offers under other names (eval's --teacher)."""
    known = {f.name: long_flag(f) for f in dataclasses.fields(cls)}
    known.update(renamed or {})
    return lambda name: known.get(name, "--" + name.replace("_", "-"))


class Options:
    """Mixin of the options dataclasses: `problems()` lists, `validate()` raises them all."""

    def problems(self) -> list[str]:
        return []

    def validate(self) -> None:
        raise_problems(self.problems())


def raise_problems(problems: list[str]) -> None:
    """The one place option problems become an error: all of them, "; "-joined, exit status 2."""
    if problems:
        raise UsageError("; ".join(problems))


def options_block(cls, help: str = "", *, offered: tuple[str, ...] | None = None,
                  renamed: dict[str, str] | None = None, helps: dict[str, str] | None = None,
                  not_required: bool = False) -> Any:
    """A field holding another options class (eval's teacher block): its offered fields
    become the command's parameters, under the flags in `renamed` (name -> "--flag"), with
    the help of `helps` where the block's own help would mislead, all optional with
    `not_required`."""
    metadata = {"help": help, "block": {"offered": offered, "renamed": renamed or {}, "helps": helps or {},
                                        "not_required": not_required}, "cli": True}
    return dataclasses.field(default_factory=cls, metadata=metadata)
