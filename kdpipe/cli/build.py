"""A Typer command built from a stage's options dataclass.

Every field written with `kdpipe.options.option(...)` becomes one parameter: its
default, help and flags come from the field, so an option is declared once. A
command adds only what is not an option of the stage (input and output paths,
--quiet) and a body that receives the built options object:

    def _seed(opts: SeedOptions, src: Path, out: Path, quiet: bool) -> None:
        ...  # its docstring is the command's help; opts holds every option

    seed = command(SeedOptions, _seed, [
        param("src", Path, typer.Argument(..., help="...")),
        param("out", Path, typer.Option(..., "-o", "--out", help="...")),
        *fields(SeedOptions, "eval_out", "eval_frac", ...),  # help order; all fields when none named
        QUIET_PARAM])

`command` refuses (at import, so every test notices) a command that leaves out a
field of its options class: an option cannot go missing from the command line.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable

import typer

from kdpipe.cli.common import QUIET, reports_errors


@dataclasses.dataclass
class Param:
    name: str  # the Python parameter name (Typer names an argument's metavar after it)
    annotation: Any
    info: Any  # typer.Option(...) or typer.Argument(...)
    path: tuple[str, ...] | None = None  # the options field it sets, ("teacher", "model"); None: the command's own


def param(name: str, annotation: Any, info: Any) -> Param:
    """A parameter of the command itself, passed to its body by name."""
    return Param(name, annotation, info)


QUIET_PARAM = Param("quiet", bool, QUIET)


def fields(cls, *names: str, path: tuple[str, ...] = (), block: dict | None = None) -> list[Param]:
    """The parameters of the fields `names` of options class `cls` (all its command-line fields
    when none are named), in that order; a block field (options_block) gives its offered fields,
    "block.name" one of them."""
    block = block or {}
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    offered = block.get("offered")
    names = names or tuple(offered or (f.name for f in dataclasses.fields(cls) if f.metadata.get("cli", True)))
    out: list[Param] = []
    for name in names:
        name, _, inner = name.partition(".")  # "teacher.model": one field of a block
        f = by_name[name]
        if "block" in f.metadata:
            out += fields(hints[name], *filter(None, [inner]), path=path + (name,), block=f.metadata["block"])
        else:
            out.append(_field_param(f, hints[name], path + (name,), block))
    return out


def _field_param(f: dataclasses.Field, annotation: Any, path: tuple[str, ...], block: dict) -> Param:
    md = f.metadata
    if "help" not in md:
        raise TypeError(f"{f.name}: an options field needs option(...) to be on the command line")
    help_ = block.get("helps", {}).get(f.name, md["help"])
    required = md["required"] and not block.get("not_required")
    decls = [block["renamed"][f.name]] if f.name in block.get("renamed", {}) else list(
        md["flags"] or ("--" + f.name.replace("_", "-"),))
    if required:
        default: Any = ...
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = f.default
    kw = {"help": help_ or None, **md["extra"]}
    if not md["show_default"] or required or default == "":
        kw["show_default"] = False
    info = typer.Argument(default, **kw) if md["argument"] else typer.Option(default, *decls, **kw)
    return Param("__".join(path), annotation, info, path)


def command(options_cls, body: Callable, params: list[Param]) -> Callable:
    """A Typer command with `params` in this order, and body's docstring for its help: builds
    an `options_cls` from the field parameters and calls body(opts, **the command's own parameters)."""
    expected = {p.path for p in fields(options_cls)}
    given = {p.path for p in params if p.path is not None}
    if given != expected:
        missing = sorted(".".join(p) for p in expected - given)
        raise TypeError(f"{body.__name__}: options left off the command line: {missing}")

    def cmd(**values):
        own = {p.name: values[p.name] for p in params if p.path is None}
        opts = build(options_cls, {p.path: values[p.name] for p in params if p.path is not None})
        return body(opts, **own)

    cmd.__name__ = cmd.__qualname__ = body.__name__.lstrip("_")
    cmd.__doc__ = body.__doc__
    cmd.__signature__ = inspect.Signature([
        inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.info, annotation=p.annotation)
        for p in params])
    cmd.__annotations__ = {p.name: p.annotation for p in params}
    return reports_errors(cmd)


def build(cls, values: dict[tuple[str, ...], Any]):
    """An options object from {field path: value}; a block's fields build its own object."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[tuple[str, ...], Any]] = {}
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for path, value in values.items():
        if len(path) == 1:
            if isinstance(value, (tuple, list)):  # a repeatable flag never given: the field's own default
                value = list(value) if value or defaults[path[0]] is not None else None
            top[path[0]] = value
        else:
            nested.setdefault(path[0], {})[path[1:]] = value
    hints = typing.get_type_hints(cls)
    for name, sub in nested.items():
        top[name] = build(hints[name], sub)
    return cls(**top)
