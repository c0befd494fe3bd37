"""Typer's conversion of a parameter's value, without pydantic where the value is plain.

Typer 0.29 converts every parameter's value, given or default, with a pydantic
TypeAdapter built when the command line is parsed: importing pydantic and building
the adapters for `generate`'s ~40 parameters was ~0.1 s of a 0.4 s run (2-core
machine, 2026-11-30). kdpipe's options are plain str, int, float, bool and Path
(or lists of them) with none of Typer's constraints (min/max, exists, parser...),
and most values are their defaults or ordinary strings; for those the result is
known (the same object Typer's own conversion returns, which
tests/test_cli.py checks for every parameter of every command). Anything else (a
value that does not look plain, a path that exists but cannot be read, any
constrained parameter) goes to Typer's own conversion, so its errors and their
messages are Typer's.

Typer builds a parameter's conversion on first use (get_runtime_param, kept in
_runtime_param); the command classes below set it beforehand, for their parameters
and for the --help option Click adds to each. A Typer without that hook is left as
it is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import typer.core

_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")
_FLOAT = re.compile(r"-?(0|[1-9][0-9]{0,17})(\.[0-9]{1,17})?")


class NotPlain(Exception):
    """A value whose conversion is left to Typer."""


def _str(value: Any) -> str:
    if type(value) is str:
        return value
    raise NotPlain


def _int(value: Any) -> int:
    if type(value) is int or (type(value) is str and _INT.fullmatch(value)):
        return int(value)
    raise NotPlain


def _float(value: Any) -> float:
    if type(value) is float or type(value) is int or (type(value) is str and _FLOAT.fullmatch(value)):
        return float(value)
    raise NotPlain


def _bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    raise NotPlain


def _path(value: Any) -> Path:
    if isinstance(value, Path):
        path = value
    elif type(value) is str and value:
        path = Path(value)
    else:
        raise NotPlain
    if os.path.exists(path) and not os.access(path, os.R_OK):  # Typer refuses an unreadable path
        raise NotPlain
    return path


CONVERT = {str: _str, int: _int, float: _float, bool: _bool, Path: _path}
LISTS = {list[str]: _str, list[Path]: _path}
# ParameterInfo attributes with the values under which Typer converts as the functions above do.
UNCONSTRAINED = dict(parser=None, min=None, max=None, clamp=False, formats=None, mode=None, exists=False,
                     file_okay=True, dir_okay=True, writable=False, readable=True, resolve_path=False,
                     allow_dash=False, path_type=None)


class PlainValues:
    """One parameter's conversion (Typer's RuntimeParam.coerce contract): plain values here, others by Typer."""

    def __init__(self, convert, many: bool) -> None:
        self.convert = convert
        self.many = many

    def coerce(self, value: Any, param, ctx) -> Any:
        if value is None:
            return () if self.many else None
        try:
            if not self.many:
                return self.convert(value)
            if isinstance(value, (list, tuple)):
                return [self.convert(v) for v in value]
        except NotPlain:
            pass
        param._runtime_param = None  # from now on Typer's own conversion, built as it would be
        return param.get_runtime_param().coerce(value, param=param, ctx=ctx)


def speed_up(param) -> None:
    """Give a plain parameter of a command built by Typer the conversion above."""
    desc = getattr(param, "type_descriptor", None)
    if desc is None or getattr(param, "_runtime_param", "absent") is not None:
        return
    info = desc.parameter_info
    if any(getattr(info, name, value) != value for name, value in UNCONSTRAINED.items()):
        return
    many = bool(param.multiple or param.nargs == -1)
    convert = (LISTS if many else CONVERT).get(desc.annotation)
    if convert is not None:
        param._runtime_param = PlainValues(convert, many)


class PlainValuesCommand:
    """What PlainCommand and PlainGroup add to Typer's command classes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            speed_up(param)

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)  # made on first use, with the context's option names
        if option is not None:
            speed_up(option)
        return option


class PlainCommand(PlainValuesCommand, typer.core.TyperCommand):
    """A Typer command whose plain values are converted without pydantic."""


class PlainGroup(PlainValuesCommand, typer.core.TyperGroup):
    """A Typer group whose plain values are converted without pydantic."""
