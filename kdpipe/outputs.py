"""Writing output files: all or nothing, with `<out>.meta.json` beside them.

`atomic_file` writes a temporary file beside the target and renames it into
place only when the stage finished; a path the file system refuses is a
one-line KdpipeError naming it. `write_meta` records what produced an output
(stage, parameters, input digests, counts, version, time), secrets scrubbed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import re
import secrets
import stat
import time
from pathlib import Path
from typing import Any, Iterable

from kdpipe import __version__
from kdpipe.errors import KdpipeError

# Errors of a write that are about the disk, not about kdpipe: reported as one line.
_DISK_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG", "EIO", "EROFS")
                         if hasattr(errno, name))


def cannot_write(path: str | os.PathLike, e: OSError) -> KdpipeError:
    """The one-line error for an output that the file system refused."""
    return KdpipeError(f"{path}: cannot write: {e.strerror or e}")


def prepare_output(path: str | os.PathLike) -> Path:
    """Create the folder of an output file, or fail with one line saying why it cannot be written.

    Stages call it on all their outputs before any work, so a typo in -o costs nothing.
    """
    path = Path(path)
    try:
        if len(os.fsencode(path.name)) > _NAME_MAX:
            raise KdpipeError(f"{_shown(path)}: cannot write: the file name is longer than {_NAME_MAX} bytes")
        if path.is_dir():
            raise KdpipeError(f"{path}: is a directory, expected an output file path")
        if _is_special(path):
            return path  # a device or a pipe (/dev/stdout, a FIFO): written to directly
        for parent in reversed(path.parents):
            if parent.exists() and not parent.is_dir():
                raise KdpipeError(f"{path}: cannot write: {parent} is a file, not a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot_write(_shown(path), e) from None
    return path


_NAME_MAX = 255 - len(".x.12345678.tmp")  # the temporary file beside it must fit too


def _shown(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 120 else text[:60] + "..." + text[-40:]


def _is_special(path: Path) -> bool:
    """Whether `path` exists and is not a regular file (after links): written in place, never renamed over."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w"):
    """Open a temporary file beside `path`; rename it onto `path` on success.

    On any exception (Ctrl-C included) the temporary file is removed and an
    existing `path` is left untouched, so Make never sees a half-written output.
    A symbolic link keeps pointing where it did: its target is what gets replaced.
    A device or a pipe (`-o /dev/stdout`, a FIFO) is written to directly.
    A file system that refuses the output (no such folder, no permission, disk
    full, at any write or at the final flush) gives a one-line KdpipeError naming `path`.
    """
    path = prepare_output(path)
    encoding = None if "b" in mode else "utf-8"
    if _is_special(path):
        try:
            fp = open(path, mode, encoding=encoding)
        except OSError as e:
            raise cannot_write(path, e) from None
        try:
            with _body_errors(path):
                yield fp
            fp.flush()
        except OSError as e:
            raise cannot_write(path, e) from None
        finally:
            with contextlib.suppress(OSError):
                fp.close()
        return
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        fd, tmp = _new_temp_file(target)
    except OSError as e:
        raise cannot_write(path, e) from None
    try:
        fp = os.fdopen(fd, mode, encoding=encoding)
        try:
            with _body_errors(path):
                yield fp
            try:  # the last buffered write can be the one that finds the disk full
                fp.flush()
                os.fsync(fp.fileno())
                fp.close()
                os.replace(tmp, target)
            except OSError as e:
                raise cannot_write(path, e) from None
        finally:
            with contextlib.suppress(OSError):
                fp.close()
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _body_errors(path: Path):
    """A disk error of a write to the output as one line; errors about other files pass unchanged."""
    try:
        yield
    except OSError as e:
        if e.errno in _DISK_ERRNOS and e.filename is None:
            raise cannot_write(path, e) from None
        raise


def _new_temp_file(path: Path) -> tuple[int, Path]:
    """A new file beside `path`, created with mode 0666 less the umask like any other output.

    (tempfile.mkstemp creates 0600, and the rename would keep that.)
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))


def meta_path(path: str | os.PathLike) -> Path:
    """Where the metadata of an output lives: `<out>.meta.json` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def text_digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


# Parameter names whose values must never be written anywhere.
_SECRET_NAME = re.compile(r"(api[_-]?key|token|secret|password|authorization)$", re.I)
_SECRET_VALUE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+\S+)")


def scrub(obj: Any) -> Any:
    """Drop secret-looking keys and mask secret-looking values, recursively."""
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items() if not _SECRET_NAME.search(str(k))}
    if isinstance(obj, (list, tuple)):
        return [scrub(v) for v in obj]
    if isinstance(obj, str):
        return _SECRET_VALUE.sub("***", obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_meta(
    out: str | os.PathLike,
    *,
    stage: str,
    params: dict[str, Any],
    inputs: Iterable[str | os.PathLike] = (),
    counts: dict[str, Any] | None = None,
    started: float | None = None,
    extra: dict[str, Any] | None = None,
) -> Path | None:
    """Write `<out>.meta.json`: what produced `out`, from what, and how many (none for a device or pipe)."""
    if _is_special(Path(out)):
        return None  # a device or a pipe: no file to describe, and no folder to put the description in
    now = time.time()
    meta = {
        "stage": stage,
        "kdpipe_version": __version__,
        "output": Path(out).name,
        "output_digest": file_digest(out) if Path(out).is_file() else None,
        "created": _dt.datetime.fromtimestamp(now, _dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(now - started, 3) if started is not None else None,
        "params": scrub(params),
        "inputs": {str(p): file_digest(p) for p in inputs if Path(p).is_file()},
        "counts": counts or {},
    }
    if extra:
        meta.update(scrub(extra))
    target = meta_path(out)
    with atomic_file(target) as fp:
        json.dump(meta, fp, indent=2, ensure_ascii=False, default=str)
        fp.write("\n")
    return target


def check_outputs_differ(inputs: Iterable[str | os.PathLike], outputs: Iterable[str | os.PathLike]) -> None:
    """Refuse to overwrite an input with an output of the same stage."""
    resolved = {Path(p).resolve() for p in inputs}
    for out in outputs:
        if out is not None and Path(out).resolve() in resolved:
            raise KdpipeError(f"{out}: output would overwrite an input file")
