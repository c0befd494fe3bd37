"""What every command shares: one-line error reporting, --quiet, progress messages."""

from __future__ import annotations

import functools
import os

import typer

from kdpipe.errors import KdpipeError

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


def say(quiet: bool, message: str) -> None:
    if not quiet:
        typer.echo(message, err=True)


QUIET = typer.Option(False, "--quiet", "-q", help="Print nothing but errors.")
