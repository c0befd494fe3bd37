"""`kdpipe generate` and `kdpipe teacher serve`: flags in, a stage function called, a summary out.

Part of the command line (assembled in cli/__init__.py): only Typer and light option classes are imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdpipe.cli.common import QUIET, reports_errors, say
from kdpipe.errors import KdpipeError

# ------------------------------------------------------------------ generate

from kdpipe.generate import GenerateOptions as _Gen  # (light: openai is imported when sending)


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
    samples: int = typer.Option(_Gen.samples, "--samples",
                                help="Completions per question (label mode only). Raising it later pays only "
                                     "for the new samples at the same temperature; from 1 to several the "
                                     "default temperature changes (0 to 0.7), so every sample is asked anew."),
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
    num_new: int = typer.Option(_Gen.num_new, "--num-new", help="New questions to write (expand mode only)."),
    seeds_per_prompt: int = typer.Option(_Gen.seeds_per_prompt, "--seeds-per-prompt",
                                         help="Seed questions shown per expansion request (expand mode only)."),
    price_in: Optional[float] = typer.Option(_Gen.price_in, "--price-in",
                                             help="USD per million input tokens (default: --prices, else "
                                                  "built-in table; given alone, the output price still comes "
                                                  "from there)."),
    price_out: Optional[float] = typer.Option(_Gen.price_out, "--price-out",
                                              help="USD per million output tokens (default: --prices, else "
                                                   "built-in table; given alone, the input price still comes "
                                                   "from there)."),
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
                                            help="Never spend past this many USD: a request is sent only when "
                                                 "spent plus the worst case of requests in flight and its own "
                                                 "fits (else it waits for those in flight); the run stops "
                                                 "within one request's worst case of the cap; unsent samples "
                                                 "get error not_sent; rerun with a higher cap to continue."),
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
    """Ask the teacher: label questions with rationales, or expand the seed set.

    Exit status: 0 when every sample was answered (or gave a recorded reason such as
    truncated or unparseable); 3 when the output was written but some samples failed
    (transport) or were not sent (--max-usd): rerun the same command to retry only those;
    1 for other errors, 2 for bad options, 130 when interrupted."""
    from kdpipe.generate import GenerateOptions, run_generate
    from kdpipe.teacher.progress import ProgressLine

    opts = GenerateOptions(mode=mode, model=model, base_url=base_url, api_key_env=api_key_env,
                           concurrency=concurrency, samples=samples, temperature=temperature,
                           max_tokens=max_tokens, stop=stop or None, seed=seed_, cache=cache, prompt=prompt,
                           num_new=num_new, seeds_per_prompt=seeds_per_prompt, price_in=price_in,
                           price_out=price_out, timeout=timeout, retries=retries, transport=transport,
                           dry_run=dry_run, max_usd=max_usd, batch=batch, prices=prices, tokenizer=tokenizer,
                           poll_interval=poll_interval)
    progress = ProgressLine(f"generate {mode}", None, quiet or dry_run)
    try:
        r = run_generate(seeds, out, opts, on_progress=progress, on_price=progress.set_price,
                         on_batch_step=lambda job, message: say(quiet, f"batch {job}: {message}"))
    finally:
        progress.close()
    if dry_run:
        typer.echo("\n".join(r.summary()))
        return
    for line in r.summary():
        say(quiet, line)
    if r.notice():
        typer.echo(f"generate: {r.notice()}", err=True)
    if r.exit_code:
        raise typer.Exit(r.exit_code)



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
    hostile: Optional[list[str]] = typer.Option(
        None, "--hostile", help="KIND, repeatable: behave as a hostile server does; kinds: ignore_n, "
                                "echo_headers, no_usage, usage_list, usage_string, usage_nan, null_choice, "
                                "string_message, lone_surrogate (all but ignore_n take turns)."),
    unauthorized_after: Optional[int] = typer.Option(None, "--unauthorized-after",
                                                     help="Answer 401 to every request after the K-th."),
    hang_after: Optional[int] = typer.Option(None, "--hang-after", help="Let every request after the K-th hang."),
    ready_file: Optional[Path] = typer.Option(None, "--ready-file",
                                              help="Write the base URL here once listening."),
) -> None:
    """Serve an OpenAI-compatible teacher on HOST:PORT with scripted answers; stop with Ctrl-C."""
    from kdpipe.errors import UsageError
    from kdpipe.loopback import LoopbackTeacher, load_script, parse_fault_rates, serve
    from kdpipe.loopback.hostile import check_hostile

    problems = check_hostile(hostile or [])
    if any(k is not None and k < 0 for k in (unauthorized_after, hang_after)):
        problems.append("--unauthorized-after and --hang-after must not be negative")
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
    teacher = LoopbackTeacher(lines, latency, faults, retry_after, fault_seed, hostile=hostile or [],
                              unauthorized_after=unauthorized_after, hang_after=hang_after)
    try:
        serve(teacher, host, port, ready_file, announce=lambda url: typer.echo(url))
    except OSError as e:
        raise KdpipeError(f"cannot listen on {host}:{port}: {e.strerror}") from None


