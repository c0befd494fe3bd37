import os
import resource
import subprocess
import sys


def test_help_lists_every_stage(cli):
    code, out, _ = cli("--help")
    assert code == 0
    for stage in ("seed", "generate", "filter", "format", "train", "eval", "tiny-student", "teacher"):
        assert stage in out
    for stage in ("seed", "generate", "filter", "format", "train", "eval", "tiny-student"):
        code, out, _ = cli(stage, "--help")
        assert code == 0 and "Usage" in out, stage


def test_import_cli_loads_no_heavy_library():
    code = ("import sys, kdpipe.cli; heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', "
            "'datasets', 'openai', 'pyarrow') if m in sys.modules]; print(heavy); sys.exit(bool(heavy))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_help_starts_fast():
    # Not a benchmark (bench/bench_startup.py is): a guard against an eager heavy import (torch alone
    # takes > 1 s of CPU). CPU seconds of the child, not wall seconds, so a loaded machine does not fail it.
    best = min(_cpu_seconds_of_help() for _ in range(3))
    assert best < 1.0, best


def _cpu_seconds_of_help() -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "kdpipe", "--help"], capture_output=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def test_file_system_errors_about_a_path_are_one_line(monkeypatch, capsys):
    import errno

    import pytest
    import typer

    from kdpipe.cli.common import DEBUG_ENV, reports_errors

    def raising(e):
        return reports_errors(lambda: (_ for _ in ()).throw(e))

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    for cls, code in ((FileNotFoundError, errno.ENOENT), (PermissionError, errno.EACCES),
                      (IsADirectoryError, errno.EISDIR), (NotADirectoryError, errno.ENOTDIR)):
        with pytest.raises(typer.Exit) as exit_:
            raising(cls(code, os.strerror(code), "data/x.jsonl"))()
        assert exit_.value.exit_code == 1
        assert capsys.readouterr().err == f"kdpipe: error: data/x.jsonl: {os.strerror(code)}\n"
    # Not about a path the user named: a bug, and its traceback stays.
    with pytest.raises(FileNotFoundError):
        raising(FileNotFoundError("lost a temporary file"))()
    with pytest.raises(ConnectionResetError):
        raising(ConnectionResetError(errno.ECONNRESET, "reset", "x"))()
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(FileNotFoundError):
        raising(FileNotFoundError(errno.ENOENT, "No such file or directory", "data/x.jsonl"))()
