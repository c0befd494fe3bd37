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


# The stage packages a command's options come from; running one command must import no other's.
STAGE_PACKAGES = ("kdpipe.seed", "kdpipe.generate", "kdpipe.filter", "kdpipe.format", "kdpipe.train",
                  "kdpipe.evaluate", "kdpipe.loopback")
_LOADED = ("import json, sys\n"
           "from kdpipe.cli import run\n"
           "sys.argv = ['kdpipe', *sys.argv[1:]]\n"
           "try:\n    run()\n"
           "finally:\n    print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n")


def _modules_loaded_by(*args) -> tuple[int, set[str]]:
    """Run the real CLI in a fresh interpreter; its exit status and the modules it had imported."""
    run = subprocess.run([sys.executable, "-c", _LOADED, *map(str, args)], capture_output=True, text=True)
    import json

    return run.returncode, set(json.loads(run.stderr.strip().splitlines()[-1]))


def _stages(modules: set[str]) -> set[str]:
    return {p for p in STAGE_PACKAGES if p in modules}


def test_a_command_imports_only_its_own_stage(tmp_path):
    src = tmp_path / "questions.jsonl"
    src.write_text('{"question": "What is 2+2?", "answer": "4"}\n')
    code, loaded = _modules_loaded_by("seed", src, "-o", tmp_path / "seeds.jsonl", "-q")
    assert code == 0 and (tmp_path / "seeds.jsonl").read_text().count("\n") == 1
    assert _stages(loaded) == {"kdpipe.seed"}
    assert "pydantic" not in loaded  # Typer's conversion of parameter values by pydantic: plain_values.py
    assert "kdpipe.cli.data" not in loaded and "kdpipe.cli.student" not in loaded
    code, loaded = _modules_loaded_by("generate", "--help")
    assert code == 0 and _stages(loaded) <= {"kdpipe.generate", "kdpipe.loopback"}  # the teacher module's two
    assert "pydantic" not in loaded
    code, loaded = _modules_loaded_by("train", "--help")
    assert code == 0 and "torch" not in loaded and _stages(loaded) <= {"kdpipe.train", "kdpipe.evaluate"}
    # Listing the commands imports none of them.
    code, loaded = _modules_loaded_by("--help")
    assert code == 0 and not _stages(loaded)
    assert not loaded & {"kdpipe.cli.seed", "kdpipe.cli.data", "kdpipe.cli.teacher", "kdpipe.cli.student"}


def test_every_command_builds_and_kdpipe_help_lists_its_own_short_help(cli):
    """Builds every command (so build.command's check that no option is left off runs for each), and
    checks that what `kdpipe --help` lists for it, without importing it, is its help's first paragraph."""
    import typer.main

    from kdpipe.cli import COMMANDS, app, load_command

    listed = typer.main.get_command(app).commands
    for name, (_, _, short) in COMMANDS.items():
        assert listed.listed(name).help == short  # before the command is built: the stored line
        cmd = load_command(name)
        assert short == " ".join(cmd.help.split("\n\n")[0].split()), name
        for limit in (20, 45, 80, 200):
            assert listed.listed(name).get_short_help_str(limit) == cmd.get_short_help_str(limit), name
        code, out, _ = cli(name, "--help")
        assert code == 0 and out.startswith(f"Usage: kdpipe {name} "), name
    teacher = load_command("teacher")
    for sub in teacher.list_commands(None):
        code, out, _ = cli("teacher", sub, "--help")
        assert code == 0 and out.startswith(f"Usage: kdpipe teacher {sub} "), sub
    code, out, _ = cli("--help")
    assert code == 0 and all(f"  {name} " in out for name in COMMANDS)


def _outcome(runtime, value, param, ctx):
    """What converting `value` gives: the value with its type (and its items' types), or the error."""
    try:
        out = runtime.coerce(value, param=param, ctx=ctx)
    except Exception as e:  # noqa: BLE001 - the error itself is what is compared
        return ("error", type(e).__name__, str(e))
    return ("value", repr(out), type(out), [type(v) for v in out] if isinstance(out, (list, tuple)) else None)


def test_plain_values_convert_as_typer_does(tmp_path):
    """Every parameter of every command (and each --help option) converts a value as Typer's own
    pydantic-based conversion does: plain values without it, the rest (errors included) by it."""
    import typer

    from kdpipe.cli import COMMANDS, app, load_command
    from kdpipe.cli.plain_values import PlainValues

    readable = tmp_path / "seeds.jsonl"
    readable.write_text("{}\n")
    unreadable = tmp_path / "secret.jsonl"  # (readable all the same when the tests run as root)
    unreadable.write_text("{}\n")
    unreadable.chmod(0)
    values = [None, True, False, 0, 5, -2, 2.5, 0.0, "0", "7", "-3", "007", "+5", "1_000", " 5", "5.0", "0.25",
              "-1.5", "1e-3", ".5", "inf", "nan", "abc", "", "x y", str(readable), str(tmp_path), "-",
              "/nonexistent/x.jsonl", str(unreadable), readable, (), ("a", "b"), [str(readable), "b"], ["1", "x"]]
    commands = [typer.main.get_command(app)]
    for name in COMMANDS:
        cmd = load_command(name)
        commands += [cmd, *getattr(cmd, "commands", {}).values()]
    plain = 0
    for cmd in commands:
        ctx = typer.Context(cmd, info_name=cmd.name)
        for param in [*cmd.params, cmd.get_help_option(ctx)]:
            ours = param._runtime_param
            if not isinstance(ours, PlainValues):
                continue
            plain += 1
            param._runtime_param = None
            typers = param.get_runtime_param()  # built as Typer builds it
            param._runtime_param = ours
            for value in [*values, param.default]:
                assert _outcome(ours, value, param, ctx) == _outcome(typers, value, param, ctx), (
                    cmd.name, param.name, value)
                param._runtime_param = ours  # a value left to Typer switched the parameter to Typer's own
    assert plain > 200  # all of them: kdpipe's options are plain
