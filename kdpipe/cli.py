"""The `kdpipe` command line: parse flags, call a stage function, report.

Only Typer is imported at start-up; each command imports its stage module
when it runs, so `kdpipe --help` stays fast and the data stages never load
torch. Defaults live on each stage's options dataclass, not here.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from kdpipe import __version__
from kdpipe.errors import KdpipeError

app = typer.Typer(
    name="kdpipe",
    help="Black-box knowledge distillation of LLMs, one JSONL file per stage:\n\n"
    "seed -> generate -> filter -> format -> train -> eval",
    no_args_is_help=True,
    add_completion=False,
    # A rich traceback with locals could print an API key; plain tracebacks only.
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEBUG_ENV = "KDPIPE_DEBUG"


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"kdpipe: error: {message}", err=True)
    raise typer.Exit(code)


def reports_errors(fn):
    """Turn a stage's KdpipeError into one line on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KdpipeError as e:
            if _debug():
                raise
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            if _debug():
                raise
            typer.echo("kdpipe: interrupted; finished work is kept, rerun the same command to resume",
                       err=True)
            raise typer.Exit(130)

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kdpipe {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help=f"Show tracebacks (same as {DEBUG_ENV}=1)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


def say(quiet: bool, message: str) -> None:
    if not quiet:
        typer.echo(message, err=True)


QUIET = typer.Option(False, "--quiet", "-q", help="Print nothing but errors.")


# ------------------------------------------------------------------ seed

from kdpipe.seed import SeedOptions as _Seed  # noqa: E402  (light: no heavy imports)


@app.command()
@reports_errors
def seed(
    src: Path = typer.Argument(..., help="JSONL, JSON array, CSV, Parquet, or a folder saved with "
                                         "datasets' save_to_disk.", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Seed records (JSONL) to write.", show_default=False),
    eval_out: Optional[Path] = typer.Option(_Seed.eval_out, "--eval-out",
                                            help="Also hold out eval questions into this file."),
    eval_frac: float = typer.Option(_Seed.eval_frac, "--eval-frac", help="Share of questions held out."),
    seed_: int = typer.Option(_Seed.seed, "--seed", help="Seed of the held-out split."),
    task: Optional[str] = typer.Option(_Seed.task, "--task",
                                       help="numeric | choice | text (detected when omitted)."),
    question_field: Optional[str] = typer.Option(
        _Seed.question_field, "--question-field",
        help="Field(s) holding the question; several comma-separated fields are joined with a newline."),
    answer_field: Optional[str] = typer.Option(_Seed.answer_field, "--answer-field",
                                               help="Field holding the gold answer."),
    choices_field: Optional[str] = typer.Option(_Seed.choices_field, "--choices-field",
                                                help="Field holding the options of a multiple-choice question."),
    id_field: Optional[str] = typer.Option(_Seed.id_field, "--id-field",
                                           help="Field holding an id (else ids are content hashes)."),
    split: Optional[str] = typer.Option(_Seed.split, "--split", help="Split of a saved DatasetDict."),
    limit: Optional[int] = typer.Option(_Seed.limit, "--limit", help="Read only the first N rows."),
    quiet: bool = QUIET,
) -> None:
    """Import questions (and gold answers) into seed records with stable ids."""
    from kdpipe.seed import SeedOptions, run_seed

    opts = SeedOptions(question_field=question_field, answer_field=answer_field,
                       choices_field=choices_field, id_field=id_field, task=task, split=split,
                       eval_out=eval_out, eval_frac=eval_frac, seed=seed_, limit=limit)
    r = run_seed(src, out, opts)
    q = "+".join(r.fields["question"])
    say(quiet, f"seed: {r.read} read, {r.duplicates} duplicates removed, {r.written} written to {out}"
               + (f", {r.held_out} held out to {eval_out}" if eval_out else "")
               + f" (task {r.task}; question: {q}, answer: {r.fields['answer'] or '-'}"
               + (f", choices: {r.fields['choices']}" if r.fields["choices"] else "") + ")")


# ------------------------------------------------------------------ generate

from kdpipe.generate import GenerateOptions as _Gen  # noqa: E402  (light: openai is imported when sending)


@app.command()
@reports_errors
def generate(
    seeds: Path = typer.Argument(..., help="Seed records (JSONL) from `kdpipe seed`.", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Records to write (JSONL).", show_default=False),
    mode: str = typer.Option(_Gen.mode, "--mode", help="label: answer with rationales; "
                             "expand: write new questions like the seeds."),
    model: str = typer.Option(..., "--model", help="Teacher model id at the endpoint.", show_default=False),
    base_url: Optional[str] = typer.Option(_Gen.base_url, "--base-url",
                                           help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL, "
                                                "else https://api.openai.com/v1)."),
    api_key_env: str = typer.Option(_Gen.api_key_env, "--api-key-env",
                                    help="Environment variable holding the API key."),
    concurrency: int = typer.Option(_Gen.concurrency, "--concurrency", help="Requests in flight."),
    samples: int = typer.Option(_Gen.samples, "--samples", help="Completions per question (label mode)."),
    temperature: Optional[float] = typer.Option(_Gen.temperature, "--temperature",
                                                help="Sampling temperature (default: 0 for one sample, "
                                                     "0.7 for several or for expand)."),
    max_tokens: int = typer.Option(_Gen.max_tokens, "--max-tokens", help="Most tokens per completion."),
    stop: Optional[list[str]] = typer.Option(_Gen.stop, "--stop", help="Stop sequence (repeatable)."),
    seed_: Optional[int] = typer.Option(_Gen.seed, "--seed", help="Sampling seed sent to the endpoint; "
                                        "also picks the seed examples of expand mode."),
    cache: Optional[Path] = typer.Option(_Gen.cache, "--cache",
                                         help="Response cache (SQLite) (default: $KDPIPE_CACHE, "
                                              "else ~/.cache/kdpipe/teacher.sqlite)."),
    prompt: Optional[Path] = typer.Option(_Gen.prompt, "--prompt",
                                          help="Prompt template (default: prompts/<task>.txt, "
                                               "prompts/expand.txt)."),
    num_new: int = typer.Option(_Gen.num_new, "--num-new", help="New questions to write (expand mode)."),
    seeds_per_prompt: int = typer.Option(_Gen.seeds_per_prompt, "--seeds-per-prompt",
                                         help="Seed questions shown per expansion request."),
    price_in: Optional[float] = typer.Option(_Gen.price_in, "--price-in",
                                             help="USD per million input tokens (default: built-in table)."),
    price_out: Optional[float] = typer.Option(_Gen.price_out, "--price-out",
                                              help="USD per million output tokens (default: built-in table)."),
    timeout: float = typer.Option(_Gen.timeout, "--timeout", help="Seconds before a request is retried."),
    retries: int = typer.Option(_Gen.retries, "--retries", help="Retries per request (429, 5xx, timeouts)."),
    transport: str = typer.Option(_Gen.transport, "--transport",
                                  help="openai: the official client; aiohttp: the same protocol with "
                                       "less CPU per request (for --concurrency in the hundreds)."),
    dry_run: bool = typer.Option(_Gen.dry_run, "--dry-run",
                                 help="Render every prompt, send nothing, write nothing: print the requests, "
                                      "input tokens (--tokenizer, else UTF-8 bytes/4 with bounds bytes/6 .. "
                                      "bytes/2.5), output tokens (mean of earlier cached answers, else "
                                      "--max-tokens) and the cost range; cached requests are free."),
    max_usd: Optional[float] = typer.Option(_Gen.max_usd, "--max-usd",
                                            help="Stop sending when spent plus the worst case of requests in "
                                                 "flight would pass this many USD; unsent samples get error "
                                                 "not_sent; rerun with a higher cap to continue."),
    batch: bool = typer.Option(_Gen.batch, "--batch",
                               help="Use the OpenAI Batch API (half price, results within 24 h); stop and "
                                    "rerun at any time: the batch is remembered in the cache."),
    prices: Optional[Path] = typer.Option(_Gen.prices, "--prices",
                                          help="Price file, JSON (or TOML): {\"model-prefix\": {\"input\": "
                                               "USD/M, \"output\": USD/M, \"batch_input\": .., "
                                               "\"batch_output\": ..}} (default: $KDPIPE_PRICES)."),
    tokenizer: Optional[Path] = typer.Option(_Gen.tokenizer, "--tokenizer",
                                             help="The teacher's tokenizer.json (Hugging Face tokenizers) to "
                                                  "count input tokens for --dry-run and --max-usd."),
    poll_interval: float = typer.Option(_Gen.poll_interval, "--poll-interval",
                                        help="Seconds between batch status checks (--batch)."),
    quiet: bool = QUIET,
) -> None:
    """Ask the teacher: label questions with rationales, or expand the seed set."""
    from kdpipe.generate import GenerateOptions, run_generate
    from kdpipe.generate_cost import continue_hint
    from kdpipe.records import SAMPLE_ERRORS
    from kdpipe.teacher.estimate import describe_estimate
    from kdpipe.teacher.progress import ProgressLine, describe

    opts = GenerateOptions(mode=mode, model=model, base_url=base_url, api_key_env=api_key_env,
                           concurrency=concurrency, samples=samples, temperature=temperature,
                           max_tokens=max_tokens, stop=stop or None, seed=seed_, cache=cache, prompt=prompt,
                           num_new=num_new, seeds_per_prompt=seeds_per_prompt, price_in=price_in,
                           price_out=price_out, timeout=timeout, retries=retries, transport=transport,
                           dry_run=dry_run, max_usd=max_usd, batch=batch, prices=prices, tokenizer=tokenizer,
                           poll_interval=poll_interval)
    price = None if opts.problems() else opts.price()  # run_generate reports the problems
    progress = ProgressLine(f"generate {mode}", price, quiet or dry_run)
    try:
        r = run_generate(seeds, out, opts, on_progress=progress,
                         on_batch_step=lambda job, message: say(quiet, f"batch {job}: {message}"))
    finally:
        progress.close()
    if dry_run:
        scope = "" if mode == "label" else " (expand: the first round of requests only; duplicates add rounds)"
        typer.echo(f"dry run, nothing sent{scope}:")
        for line in describe_estimate(r.extra["estimate"], max_tokens):
            typer.echo(f"  {line}")
        return
    c = r.counts
    if mode == "label":
        errors = ", ".join(f"{k} {c[k]}" for k in SAMPLE_ERRORS if c.get(k))
        say(quiet, f"generate: {c['records']} records, {c['samples']} samples: {c['ok']} answered"
                   + (f", {errors}" if errors else "") + f"; written to {out}")
    else:
        say(quiet, f"generate: {c['written']} new questions from {c.get('requests', 0)} requests "
                   f"({c.get('duplicates', 0)} duplicates dropped"
                   + (f", {c['short_of_target']} short of --num-new" if c["short_of_target"] else "")
                   + f"); written to {out}")
    say(quiet, f"teacher: {describe(r.stats, r.price)}")
    if r.extra.get("budget") is not None and r.extra["budget"].stopped:
        typer.echo(f"generate: {continue_hint(r.extra['budget'])}", err=True)


# ------------------------------------------------------------------ filter and format
# (the filter and format commands)


# ------------------------------------------------------------------ train and eval
# (the train and eval commands)


# ------------------------------------------------------------------ loopback teacher

teacher_app = typer.Typer(help="Teacher tools: a loopback OpenAI-compatible server.", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")


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
    from kdpipe.teacher.loopback import LoopbackTeacher, load_script, parse_fault_rates, serve

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


def run() -> None:
    """Console-script entry point."""
    app(prog_name="kdpipe")


if __name__ == "__main__":
    run()
