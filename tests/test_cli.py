import subprocess
import sys
import time


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
    # Not a benchmark: a guard against an eager heavy import (torch alone takes > 1 s).
    best = min(_time_help() for _ in range(3))
    assert best < 1.0, best


def _time_help() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kdpipe", "--help"], capture_output=True, check=True)
    return time.perf_counter() - t
