"""`kdpipe train`, `kdpipe eval` and `kdpipe tiny-student`: flags in, a stage function called, a summary out.

Part of the command line (assembled in cli/__init__.py): torch and transformers are imported only when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdpipe.cli.build import QUIET_PARAM, command, fields, param
from kdpipe.cli.common import QUIET, reports_errors, say

# ------------------------------------------------------------------ train and eval

from kdpipe.evaluate import EvalOptions as _Eval  # (light: heavy imports are inside functions)
from kdpipe.tiny_student import TinyOptions
from kdpipe.train import TrainOptions


def _train(opts, sft: Path, out: Path, quiet: bool) -> None:
    from kdpipe.train import run_train

    r = run_train(sft, out, opts, progress=lambda m: say(quiet, m))
    for note in r.notes:
        say(quiet, f"train: note: {note}")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    say(quiet, f"train: {r.steps} steps in {r.seconds:.1f} s, train loss {fmt(r.train_loss)}, "
               f"validation loss {fmt(r.eval_loss)}, "
               f"{'-' if r.tokens_per_s is None else f'{r.tokens_per_s:.0f}'} tokens/s; run in {out}")


train = command(TrainOptions, _train,
                "Fine-tune the student on SFT rows (LoRA by default); loss on the completion only.", [
    param("sft", Path, typer.Argument(..., help="SFT rows written by `kdpipe format`.", show_default=False)),
    param("out", Path, typer.Option(..., "-o", "--out", help="Run directory to write.", show_default=False)),
    *fields(TrainOptions),
    QUIET_PARAM])


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


def _tiny_student(opts, out: Path, corpus: Path, quiet: bool) -> None:
    from kdpipe.libraries import quiet_libraries
    from kdpipe.tiny_student import build_tiny_student, corpus_texts

    quiet_libraries()
    path = build_tiny_student(out, corpus_texts(corpus), opts)
    say(quiet, f"tiny-student: wrote a random tiny Llama and its tokenizer to {path}")


tiny_student = command(TinyOptions, _tiny_student, """Build a tiny RANDOMLY INITIALISED student (2-layer Llama, width 64) for offline demos and tests.

    It is not a pretrained model and knows nothing: it exists so that `train` and `eval` can run
    end to end without a model hub. Use a real model id or folder for real work.
    """, [
    param("out", Path, typer.Argument(..., help="Folder to write the model and tokenizer to.", show_default=False)),
    param("corpus", Path, typer.Option(..., "--corpus", help="JSONL whose string fields train the tokenizer.",
                                       show_default=False)),
    *fields(TinyOptions),
    QUIET_PARAM])
