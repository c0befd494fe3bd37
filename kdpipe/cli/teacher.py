"""`kdpipe generate` and `kdpipe teacher serve`: flags in, a stage function called, a summary out.

The options are built from GenerateOptions (the TeacherOptions block and its own) and ServeOptions;
only inputs, outputs and --quiet are declared here.

Part of the command line (assembled in cli/__init__.py): only Typer and light option classes are imported here.
"""

from __future__ import annotations

from pathlib import Path

import typer

from kdpipe.cli.build import QUIET_PARAM, command, fields, param
from kdpipe.cli.common import QUIET, reports_errors, say
from kdpipe.errors import KdpipeError

# ------------------------------------------------------------------ generate

from kdpipe.generate import GenerateOptions  # (light: openai is imported when sending)


def _generate(opts, seeds: Path, out: Path, quiet: bool) -> None:
    """Ask the teacher: label questions with rationales, or expand the seed set.

    Exit status: 0 when every sample was answered (or gave a recorded reason such as
    truncated or unparseable); 3 when the output was written but some samples failed
    (transport) or were not sent (--max-usd): rerun the same command to retry only those;
    1 for other errors, 2 for bad options, 130 when interrupted."""
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


generate = command(GenerateOptions, _generate, [
    param("seeds", Path, typer.Argument(..., help="Seed records (JSONL) from `kdpipe seed`.", show_default=False)),
    param("out", Path, typer.Option(..., "-o", "--out", help="Records to write (JSONL).", show_default=False)),
    *fields(GenerateOptions, "mode", "model", "base_url", "api_key_env", "concurrency", "samples", "temperature",
            "max_tokens", "stop", "seed", "cache", "prompt", "logprobs", "num_new", "seeds_per_prompt", "price_in",
            "price_out", "timeout", "retries", "transport", "dry_run", "expect_new", "expand_prompt", "max_usd",
            "batch", "prices",
            "tokenizer", "poll_interval", "shard", "export_batch", "import_batch", "adaptive",
            "rpm", "tpm", "round", "spend_ledger"),
    QUIET_PARAM])


@reports_errors
def merge(
    shards: list[Path] = typer.Argument(..., help="The outputs of generate --shard 1/N .. N/N, or the -o files "
                                                  "of eval --shard 1/N .. N/N (any order).",
                                        show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Records to write (JSONL); for eval shards, the eval.json "
                                                      "(with its predictions and Markdown beside it).",
                             show_default=False),
    seeds: Path | None = typer.Option(None, "--seeds", help="The input the shards were cut from (default: the "
                                                             "path their .meta.json names)."),
    quiet: bool = QUIET,
) -> None:
    """Join the shard outputs of one `generate --shard I/N` (or `eval --shard I/N`) run into the file(s) an
    unsharded run writes."""
    from kdpipe.evaluate.shard import is_eval_shard

    if shards and is_eval_shard(shards[0]):
        from kdpipe.evaluate import merge_eval

        report = merge_eval(shards, out, seeds, progress=lambda m: say(quiet, m))
        say(quiet, f"merge: {len(shards)} eval shards, {report.n} questions -> {out} and its predictions and "
                   "Markdown table beside it")
        return
    from kdpipe.generate.shard import merge_shards

    counts = merge_shards(shards, out, seeds)
    say(quiet, f"merge: {len(shards)} shards, {counts.get('records', 0)} records -> {out}")



# ------------------------------------------------------------------ loopback teacher

teacher_app = typer.Typer(help="Teacher tools: a loopback OpenAI-compatible server, clearing and merging response "
                                 "caches.",
                          no_args_is_help=True)


from kdpipe.loopback.options import ServeOptions


def _teacher_serve(opts) -> None:
    """Serve an OpenAI-compatible teacher on HOST:PORT (scripted answers, or a local model); stop with Ctrl-C."""
    from kdpipe.loopback import LoopbackTeacher, load_script, serve

    opts.validate()
    lines = [line for path in opts.script or [] for line in load_script(path)]
    hostile = dict(hostile=opts.hostile or [], unauthorized_after=opts.unauthorized_after,
                   hang_after=opts.hang_after, rate_limit=opts.rate_window())
    if opts.model is not None:
        from kdpipe.loopback.model import ModelTeacher

        teacher = ModelTeacher(lines, opts.latency, opts.faults(), opts.retry_after, opts.fault_seed,
                               model_dir=opts.model, **hostile)
    else:
        teacher = LoopbackTeacher(lines, opts.latency, opts.faults(), opts.retry_after, opts.fault_seed,
                                  **hostile)
    try:
        serve(teacher, opts.host, opts.port, opts.ready_file, announce=lambda url: typer.echo(url))
    except OSError as e:
        raise KdpipeError(f"cannot listen on {opts.host}:{opts.port}: {e.strerror}") from None


teacher_app.command("serve")(command(ServeOptions, _teacher_serve, fields(ServeOptions)))


@teacher_app.command("clear-cache")
@reports_errors
def teacher_clear_cache(
    path: Path = typer.Argument(..., help="The response cache (SQLite) to delete.", show_default=False),
) -> None:
    """Delete a teacher response cache, saying what it held: every answer in it is paid for again."""
    from kdpipe.teacher.cache_files import remove_cache

    held = remove_cache(path)
    if held is None:
        typer.echo(f"clear-cache: no cache at {path}; nothing removed")
    else:
        entries, size = held
        typer.echo(f"clear-cache: removed {path}: {entries} cached answers, {size / 1e6:.1f} MB")


@teacher_app.command("merge-cache")
@reports_errors
def teacher_merge_cache(
    caches: list[Path] = typer.Argument(..., help="Response caches (SQLite) to join, e.g. one per shard machine; "
                                                  "where two hold different answers to one request, the first "
                                                  "named wins.", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="The merged cache to write (new, or one of CACHES to merge "
                                                     "into it).", show_default=False),
    quiet: bool = QUIET,
) -> None:
    """Join response caches into one, so that a run against it asks nothing any of them answers."""
    from kdpipe.teacher.cache_merge import merge_caches

    report = merge_caches(caches, out)
    say(quiet, report.summary(out))
    if report.conflicts and quiet:  # worth seeing even in a script: a shard's output may hold the other answer
        typer.echo(f"merge-cache: {report.conflicts} requests had different answers in different caches; "
                   f"the first cache's kept", err=True)
