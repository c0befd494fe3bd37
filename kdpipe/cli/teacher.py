"""`kdpipe generate` and `kdpipe teacher serve`: flags in, a stage function called, a summary out.

Part of the command line (assembled in cli/__init__.py): only Typer and light option classes are imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdpipe.cli.build import QUIET_PARAM, command, fields, param
from kdpipe.cli.common import reports_errors, say
from kdpipe.errors import KdpipeError

# ------------------------------------------------------------------ generate

from kdpipe.generate import GenerateOptions  # (light: openai is imported when sending)


def _generate(opts, seeds: Path, out: Path, quiet: bool) -> None:
    from kdpipe.generate import run_generate
    from kdpipe.teacher.progress import ProgressLine

    progress = ProgressLine(f"generate {opts.mode}", None, quiet or opts.dry_run)
    try:
        r = run_generate(seeds, out, opts, on_progress=progress, on_price=progress.set_price,
                         on_batch_step=lambda job, message: say(quiet, f"batch {job}: {message}"))
    finally:
        progress.close()
    if opts.dry_run:
        typer.echo("\n".join(r.summary()))
        return
    for line in r.summary():
        say(quiet, line)
    if r.notice():
        typer.echo(f"generate: {r.notice()}", err=True)
    if r.exit_code:
        raise typer.Exit(r.exit_code)


generate = command(GenerateOptions, _generate, """Ask the teacher: label questions with rationales, or expand the seed set.

    Exit status: 0 when every sample was answered (or gave a recorded reason such as
    truncated or unparseable); 3 when the output was written but some samples failed
    (transport) or were not sent (--max-usd): rerun the same command to retry only those;
    1 for other errors, 2 for bad options, 130 when interrupted.""", [
    param("seeds", Path, typer.Argument(..., help="Seed records (JSONL) from `kdpipe seed`.", show_default=False)),
    param("out", Path, typer.Option(..., "-o", "--out", help="Records to write (JSONL).", show_default=False)),
    *fields(GenerateOptions, "mode", "model", "base_url", "api_key_env", "concurrency", "samples", "temperature",
            "max_tokens", "stop", "seed", "cache", "prompt", "num_new", "seeds_per_prompt", "price_in",
            "price_out", "timeout", "retries", "transport", "dry_run", "max_usd", "batch", "prices",
            "tokenizer", "poll_interval"),
    QUIET_PARAM])



# ------------------------------------------------------------------ loopback teacher

teacher_app = typer.Typer(help="Teacher tools: a loopback OpenAI-compatible server.", no_args_is_help=True)


@teacher_app.command("serve")
@reports_errors
def teacher_serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8765, "--port", help="Port (0: any free port)."),
    script: Optional[list[Path]] = typer.Option(None, "--script",
                                                help="Scripted answers, JSONL {question, completions, "
                                                     "expand} (repeatable)."),
    latency: float = typer.Option(0.0, "--latency", help="Seconds before each answer."),
    fault_rate: Optional[list[str]] = typer.Option(
        None, "--fault-rate", help="KIND=RATE, repeatable; kinds: rate_limit, server_error, malformed, "
                                   "hang, truncated, empty."),
    retry_after: float = typer.Option(1.0, "--retry-after", help="Retry-After seconds sent with a 429."),
    fault_seed: int = typer.Option(0, "--fault-seed", help="Seed of the fault draws."),
    ready_file: Optional[Path] = typer.Option(None, "--ready-file",
                                              help="Write the base URL here once listening."),
) -> None:
    """Serve an OpenAI-compatible teacher on HOST:PORT with scripted answers; stop with Ctrl-C."""
    from kdpipe.errors import UsageError
    from kdpipe.loopback import LoopbackTeacher, load_script, parse_fault_rates, serve

    problems = []
    if not 0 <= port <= 65535:
        problems.append("--port must be between 0 and 65535")
    if latency < 0 or retry_after < 0:
        problems.append("--latency and --retry-after must not be negative")
    try:
        faults = parse_fault_rates(fault_rate or [])
    except UsageError as e:
        problems.append(str(e))
    if problems:
        raise UsageError("; ".join(problems))
    lines = [line for path in script or [] for line in load_script(path)]
    teacher = LoopbackTeacher(lines, latency, faults, retry_after, fault_seed)
    try:
        serve(teacher, host, port, ready_file, announce=lambda url: typer.echo(url))
    except OSError as e:
        raise KdpipeError(f"cannot listen on {host}:{port}: {e.strerror}") from None


