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
    # Plain Click help: rendering it with rich costs more start-up time than the rest of the CLI.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

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


# ------------------------------------------------------------------ filter and format

from kdpipe.filter import FilterOptions as _Filter  # noqa: E402  (light: numpy only)
from kdpipe.format import FormatOptions as _Format  # noqa: E402


@app.command("filter")
@reports_errors
def filter_(
    inp: Path = typer.Argument(..., help="Teacher records (JSONL) from `generate`, or seed records.",
                               show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Kept records (JSONL) to write.", show_default=False),
    rejected: Optional[Path] = typer.Option(None, "--rejected",
                                            help="Write every dropped record here, with its reason."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the counts per rule here (JSON)."),
    against: list[Path] = typer.Option([], "--against", help="Eval records to decontaminate against "
                                       "(repeatable)."),
    drop_errors: bool = typer.Option(_Filter.drop_errors, "--drop-errors/--keep-errors",
                                     help="Rule 1: drop samples `generate` marked as errors."),
    gold: bool = typer.Option(_Filter.gold, "--gold/--no-gold",
                              help="Rule 2: drop samples whose answer disagrees with the gold answer."),
    rel_tol: float = typer.Option(_Filter.rel_tol, "--rel-tol", help="Relative tolerance of numeric answers."),
    vote: bool = typer.Option(_Filter.vote, "--vote/--no-vote",
                              help="Rule 3: majority vote over the samples of records without gold."),
    min_agreement: float = typer.Option(_Filter.min_agreement, "--min-agreement",
                                        help="Share of samples the majority answer needs."),
    length: bool = typer.Option(_Filter.length, "--length/--no-length",
                                help="Rule 4: word bounds on question and rationale."),
    min_question_words: int = typer.Option(_Filter.min_question_words, "--min-question-words"),
    max_question_words: int = typer.Option(_Filter.max_question_words, "--max-question-words"),
    min_rationale_words: int = typer.Option(_Filter.min_rationale_words, "--min-rationale-words"),
    max_rationale_words: int = typer.Option(_Filter.max_rationale_words, "--max-rationale-words"),
    restated: bool = typer.Option(_Filter.restated, "--restated/--no-restated",
                                  help="Rule 4: drop a rationale that only restates the answer."),
    dedup: bool = typer.Option(_Filter.dedup, "--dedup/--no-dedup",
                               help="Rule 6: drop exact duplicate questions (normalized)."),
    near_dup: bool = typer.Option(_Filter.near_dup, "--near-dup/--no-near-dup",
                                  help="Rule 7: drop a question near an earlier kept one (MinHash-LSH "
                                       "proposes pairs, so may miss one near the threshold; exact "
                                       "Jaccard decides)."),
    near_threshold: float = typer.Option(_Filter.near_threshold, "--near-threshold",
                                         help="Jaccard similarity of word shingles from which a question "
                                              "is a near-duplicate."),
    shingle: int = typer.Option(_Filter.shingle, "--shingle", help="Words per shingle."),
    ngram: int = typer.Option(_Filter.ngram, "--ngram",
                              help="Length in words of a span shared with an eval question that "
                                   "counts as contamination."),
    workers: int = typer.Option(_Filter.workers, "--workers",
                                help="Processes for the record rules (0: one per CPU on a large input)."),
    quiet: bool = QUIET,
) -> None:
    """Drop wrong, broken, duplicate and contaminated teacher output; report counts per rule.

    Rules in this order, each one switchable: 1 teacher errors, 2 gold agreement, 3 self-consistency
    vote (no gold, several samples), 4 question/rationale length and restated answers,
    5 contamination (--against), 6 exact duplicates, 7 near-duplicates of a kept question.
    The first rule that removes a record is its reason in --rejected.
    """
    from kdpipe.filter import FilterOptions, run_filter

    opts = FilterOptions(drop_errors=drop_errors, gold=gold, rel_tol=rel_tol, vote=vote,
                         min_agreement=min_agreement, length=length, min_question_words=min_question_words,
                         max_question_words=max_question_words, min_rationale_words=min_rationale_words,
                         max_rationale_words=max_rationale_words, restated=restated, dedup=dedup,
                         near_dup=near_dup, near_threshold=near_threshold, shingle=shingle,
                         against=list(against), ngram=ngram, workers=workers)
    rep = run_filter(inp, out, opts, rejected=rejected, report=report)
    say(quiet, rep.table())
    say(quiet, f"filter: {rep.kept} of {rep.input} records kept ({rep.samples_kept} samples) in "
               f"{rep.seconds:.1f} s -> {out}" + (f"; rejected -> {rejected}" if rejected else ""))


@app.command("format")
@reports_errors
def format_(
    inp: Path = typer.Argument(..., help="Filtered records (JSONL).", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="SFT rows (JSONL) to write.", show_default=False),
    style: str = typer.Option(_Format.style, "--style", help="dss | cot | label | gold."),
    chat: bool = typer.Option(_Format.chat, "--chat/--no-chat",
                              help="Chat messages (for a chat template) or plain strings."),
    val_frac: float = typer.Option(_Format.val_frac, "--val-frac",
                                   help="Share of records whose rows go to the validation split."),
    seed_: int = typer.Option(_Format.seed, "--seed", help="Seed of the split and the shuffle."),
    label_prefix: str = typer.Option(_Format.label_prefix, "--label-prefix", help="dss label task prefix."),
    rationale_prefix: str = typer.Option(_Format.rationale_prefix, "--rationale-prefix",
                                         help="dss rationale task prefix."),
    answer_sentence: str = typer.Option(_Format.answer_sentence, "--answer-sentence",
                                        help="How a cot completion ends; must contain {answer}."),
    quiet: bool = QUIET,
) -> None:
    """Turn records into prompt/completion rows for SFT (Distilling step-by-step, CoT, label, gold)."""
    from kdpipe.format import FormatOptions, run_format

    opts = FormatOptions(style=style, chat=chat, val_frac=val_frac, seed=seed_, label_prefix=label_prefix,
                         rationale_prefix=rationale_prefix, answer_sentence=answer_sentence)
    r = run_format(inp, out, opts)
    skipped = "".join(f"; skipped {v} ({k})" for k, v in r.skipped.items())
    say(quiet, f"format: {r.records} records -> {r.rows} rows ({r.train} train, {r.val} val), "
               f"style {style} -> {out}{skipped}")



# ------------------------------------------------------------------ train and eval

from kdpipe.evaluate import EvalOptions as _Eval  # noqa: E402  (light: heavy imports are inside functions)
from kdpipe.tiny import TinyOptions as _Tiny  # noqa: E402
from kdpipe.train import TrainOptions as _Train  # noqa: E402


@app.command()
@reports_errors
def train(
    sft: Path = typer.Argument(..., help="SFT rows written by `kdpipe format`.", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Run directory to write.", show_default=False),
    student: str = typer.Option(..., "--student", help="Hugging Face model id or local model folder "
                                "(its tokenizer comes with it).", show_default=False),
    lora_r: int = typer.Option(_Train.lora_r, "--lora-r", help="LoRA rank."),
    lora_alpha: int = typer.Option(_Train.lora_alpha, "--lora-alpha", help="LoRA alpha (scale = alpha / r)."),
    lora_dropout: float = typer.Option(_Train.lora_dropout, "--lora-dropout", help="LoRA dropout."),
    lora_targets: str = typer.Option(_Train.lora_targets, "--lora-targets",
                                     help="Modules that get adapters: 'all-linear' (every linear layer but "
                                          "the output head) or a comma list such as q_proj,v_proj."),
    full: bool = typer.Option(_Train.full, "--full", help="Full fine-tuning instead of LoRA (small students)."),
    qlora: bool = typer.Option(_Train.qlora, "--qlora", help="4-bit base weights (needs CUDA + bitsandbytes)."),
    rationale_weight: float = typer.Option(_Train.rationale_weight, "--rationale-weight",
                                           help="Loss weight of dss rationale rows (the paper's lambda)."),
    learning_rate: Optional[float] = typer.Option(_Train.learning_rate, "--learning-rate", "--lr",
                                                  help="Peak learning rate (default: 2e-4 LoRA, 2e-5 --full)."),
    lr_scheduler: str = typer.Option(_Train.lr_scheduler, "--lr-scheduler",
                                     help="Schedule: cosine, linear, constant, constant_with_warmup..."),
    warmup_ratio: float = typer.Option(_Train.warmup_ratio, "--warmup-ratio", help="Share of steps warming up."),
    epochs: float = typer.Option(_Train.epochs, "--epochs", help="Epochs (ignored with --max-steps)."),
    max_steps: Optional[int] = typer.Option(_Train.max_steps, "--max-steps", help="Stop after this many steps."),
    batch_size: int = typer.Option(_Train.batch_size, "--batch-size", help="Examples per device per step."),
    grad_accum: int = typer.Option(_Train.grad_accum, "--grad-accum", help="Gradient accumulation steps."),
    gradient_checkpointing: bool = typer.Option(_Train.gradient_checkpointing, "--gradient-checkpointing",
                                                help="Recompute activations in the backward pass: less memory, more time."),
    max_length: int = typer.Option(_Train.max_length, "--max-length",
                                   help="Tokens per example (prompt + completion); longer ones are cut."),
    packing: bool = typer.Option(_Train.packing, "--packing",
                                 help="Pack examples into full sequences, padding-free (for GPUs; slow on a "
                                      "CPU; not with --rationale-weight)."),
    log_every: int = typer.Option(_Train.log_every, "--log-every", help="Log metrics every N steps."),
    eval_every: int = typer.Option(_Train.eval_every, "--eval-every", help="Validation loss every N steps."),
    save_every: int = typer.Option(_Train.save_every, "--save-every", help="Checkpoint every N steps."),
    seed_: int = typer.Option(_Train.seed, "--seed", help="Random seed."),
    resume: bool = typer.Option(_Train.resume, "--resume", help="Continue from the last checkpoint in RUN_DIR."),
    overwrite: bool = typer.Option(_Train.overwrite, "--overwrite", help="Replace a non-empty RUN_DIR."),
    merge: bool = typer.Option(_Train.merge, "--merge", help="Also save RUN_DIR/merged: adapter folded "
                               "into the base weights (loads with AutoModelForCausalLM)."),
    trust_remote_code: bool = typer.Option(_Train.trust_remote_code, "--trust-remote-code",
                                           help="Run model code shipped with the model (off by default)."),
    quiet: bool = QUIET,
) -> None:
    """Fine-tune the student on SFT rows (LoRA by default); loss on the completion only."""
    from kdpipe.train import TrainOptions, run_train

    opts = TrainOptions(student=student, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                        lora_targets=lora_targets, full=full, qlora=qlora, rationale_weight=rationale_weight,
                        learning_rate=learning_rate, lr_scheduler=lr_scheduler, warmup_ratio=warmup_ratio,
                        epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
                        gradient_checkpointing=gradient_checkpointing, max_length=max_length, packing=packing,
                        log_every=log_every, eval_every=eval_every, save_every=save_every, seed=seed_,
                        resume=resume, overwrite=overwrite, merge=merge, trust_remote_code=trust_remote_code)
    r = run_train(sft, out, opts, progress=lambda m: say(quiet, m))
    for note in r.notes:
        say(quiet, f"train: note: {note}")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    say(quiet, f"train: {r.steps} steps in {r.seconds:.1f} s, train loss {fmt(r.train_loss)}, "
               f"validation loss {fmt(r.eval_loss)}, "
               f"{'-' if r.tokens_per_s is None else f'{r.tokens_per_s:.0f}'} tokens/s; run in {out}")


@app.command("eval")
@reports_errors
def eval_(
    eval_file: Path = typer.Argument(..., help="Records with gold answers (e.g. `seed --eval-out`).",
                                     show_default=False),
    model: str = typer.Option(..., "--model", help="Run directory of `kdpipe train`, or a model folder / id.",
                              show_default=False),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="eval.json to write (with "
                                       "<out>.predictions.jsonl and <out>.md beside it)."),
    baseline: Optional[str] = typer.Option(_Eval.baseline, "--baseline",
                                           help="Also score this model (e.g. the untrained student), "
                                                "asked the same way as the student."),
    batch_size: int = typer.Option(_Eval.batch_size, "--batch-size", help="Questions per generation batch."),
    max_new_tokens: Optional[int] = typer.Option(_Eval.max_new_tokens, "--max-new-tokens",
                                                 help="New-token limit (default: 256 for CoT students, 32 otherwise)."),
    limit: Optional[int] = typer.Option(_Eval.limit, "--limit", help="Score only the first N questions."),
    predictions: Optional[Path] = typer.Option(_Eval.predictions, "--predictions",
                                               help="Per-question predictions JSONL (default: "
                                                    "<out>.predictions.jsonl)."),
    teacher: Optional[str] = typer.Option(_Eval.teacher, "--teacher",
                                          help="Also score this teacher model through the API (generate's "
                                               "label prompt, greedy, cached like generate)."),
    base_url: Optional[str] = typer.Option(_Eval.teacher_base_url, "--base-url",
                                           help="Teacher endpoint (default: $OPENAI_BASE_URL, else OpenAI)."),
    api_key_env: str = typer.Option(_Eval.api_key_env, "--api-key-env",
                                    help="Environment variable holding the teacher's API key."),
    cache: Optional[Path] = typer.Option(_Eval.teacher_cache, "--cache",
                                         help="Teacher response cache (default: generate's cache)."),
    teacher_prompt: Optional[Path] = typer.Option(_Eval.teacher_prompt, "--teacher-prompt",
                                                  help="Teacher prompt template (default: prompts/<task>.txt)."),
    teacher_max_tokens: int = typer.Option(_Eval.teacher_max_tokens, "--teacher-max-tokens",
                                           help="Token limit of a teacher answer."),
    concurrency: int = typer.Option(_Eval.teacher_concurrency, "--concurrency",
                                    help="Teacher requests in flight."),
    price_in: Optional[float] = typer.Option(_Eval.price_in, "--price-in",
                                             help="Teacher USD per million prompt tokens (else the price table; "
                                                  "one flag alone overrides only its side)."),
    price_out: Optional[float] = typer.Option(_Eval.price_out, "--price-out",
                                              help="Teacher USD per million completion tokens."),
    quiet: bool = QUIET,
) -> None:
    """Score the student greedily against gold answers; print a Markdown scorecard."""
    from kdpipe.evaluate import EvalOptions, markdown, run_eval

    opts = EvalOptions(model=model, baseline=baseline, batch_size=batch_size, max_new_tokens=max_new_tokens,
                       limit=limit, predictions=predictions, teacher=teacher, teacher_base_url=base_url,
                       api_key_env=api_key_env, teacher_cache=cache, teacher_prompt=teacher_prompt,
                       teacher_max_tokens=teacher_max_tokens, teacher_concurrency=concurrency,
                       price_in=price_in, price_out=price_out)
    report = run_eval(eval_file, opts, out, progress=lambda m: say(quiet, m))
    typer.echo(markdown(report))
    if out is not None:
        say(quiet, f"eval: wrote {out} and its predictions and Markdown table beside it")


@app.command("tiny-student")
@reports_errors
def tiny_student(
    out: Path = typer.Argument(..., help="Folder to write the model and tokenizer to.", show_default=False),
    corpus: Path = typer.Option(..., "--corpus", help="JSONL whose string fields train the tokenizer.",
                                show_default=False),
    vocab_size: int = typer.Option(_Tiny.vocab_size, "--vocab-size", help="Tokenizer vocabulary size (at most)."),
    seed_: int = typer.Option(_Tiny.seed, "--seed", help="Seed of the random weights."),
    quiet: bool = QUIET,
) -> None:
    """Build a tiny RANDOMLY INITIALISED student (2-layer Llama, width 64) for offline demos and tests.

    It is not a pretrained model and knows nothing: it exists so that `train` and `eval` can run
    end to end without a model hub. Use a real model id or folder for real work.
    """
    from kdpipe.tiny import TinyOptions, build_tiny_student, corpus_texts

    from kdpipe.train import quiet_libraries

    quiet_libraries()
    path = build_tiny_student(out, corpus_texts(corpus), TinyOptions(vocab_size=vocab_size, seed=seed_))
    say(quiet, f"tiny-student: wrote a random tiny Llama and its tokenizer to {path}")


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
