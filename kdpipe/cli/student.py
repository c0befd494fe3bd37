"""`kdpipe train`, `kdpipe eval` and `kdpipe tiny-student`: flags in, a stage function called, a summary out.

Part of the command line (assembled in cli/__init__.py): torch and transformers are imported only when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdpipe.cli.common import QUIET, reports_errors, say

# ------------------------------------------------------------------ train and eval

from kdpipe.evaluate import EvalOptions as _Eval  # (light: heavy imports are inside functions)
from kdpipe.tiny_student import TinyOptions as _Tiny
from kdpipe.train import TrainOptions as _Train


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


@reports_errors
def tiny_student(
    out: Path = typer.Argument(..., help="Folder to write the model and tokenizer to.", show_default=False),
    corpus: Path = typer.Option(..., "--corpus", help="JSONL whose string fields train the tokenizer.",
                                show_default=False),
    vocab_size: int = typer.Option(_Tiny.vocab_size, "--vocab-size", help="Tokenizer vocabulary size (at most)."),
    layers: int = typer.Option(_Tiny.layers, "--layers", help="Transformer layers."),
    hidden: int = typer.Option(_Tiny.hidden_size, "--hidden", help="Hidden size (the MLP is twice as wide)."),
    heads: int = typer.Option(_Tiny.heads, "--heads", help="Attention heads (must divide --hidden)."),
    split_digits: bool = typer.Option(_Tiny.split_digits, "--split-digits/--no-split-digits",
                                      help="Give every digit a token of its own (numbers stay readable "
                                           "digit by digit, as arithmetic needs)."),
    seed_: int = typer.Option(_Tiny.seed, "--seed", help="Seed of the random weights."),
    quiet: bool = QUIET,
) -> None:
    """Build a tiny RANDOMLY INITIALISED student (a small Llama) for offline demos and tests.

    It is not a pretrained model and knows nothing: it exists so that `train` and `eval` can run
    end to end without a model hub. Use a real model id or folder for real work.
    """
    from kdpipe.tiny_student import TinyOptions, build_tiny_student, corpus_texts

    from kdpipe.libraries import quiet_libraries

    quiet_libraries()
    path = build_tiny_student(out, corpus_texts(corpus), TinyOptions(
        vocab_size=vocab_size, layers=layers, hidden_size=hidden, heads=heads, split_digits=split_digits, seed=seed_))
    say(quiet, f"tiny-student: wrote a random {layers}-layer Llama of width {hidden} and its tokenizer to {path}")


