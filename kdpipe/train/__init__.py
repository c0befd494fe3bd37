"""`kdpipe train`: supervised fine-tuning of the student with TRL's SFTTrainer.

LoRA (PEFT) by default, full fine-tuning with `--full`, 4-bit QLoRA with
`--qlora` (CUDA + bitsandbytes). Loss falls on the completion only: the rows
are prompt/completion pairs and TRL masks the prompt. For Distilling
step-by-step data the loss is L_label + λ·L_rationale, each task's mean
token loss taken separately (λ = `rationale_weight`; see trainers/weighted.py).

`run_train` is four steps: prepare the data (read, check against the
tokenizer), build the trainer (the model, the trainer arguments, and the
recipe of trainers/ that fits the data), fit, and save the run (run_dir.py
says what RUN_DIR holds).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from kdpipe import __version__
from kdpipe.errors import KdpipeError, UsageError
from kdpipe.hub.lineage import lineage
from kdpipe.libraries import quiet_libraries
from kdpipe.records import file_digest
from kdpipe.student import check_model_exists, load_tokenizer
from kdpipe.train.data import SftData, check_lengths, read_sft
from kdpipe.train.launch import check_launch, local_cuda_device, main_process, sharding_note, use_cpu
from kdpipe.train.run_dir import (
    CHECKPOINTS, METRICS, check_run_dir, clear_run_dir, resolved_student, save_run, student_digest,
)
from kdpipe.train.tracking import check_trackers, place_tensorboard, report_targets, run_name
from kdpipe.train.options import TrainOptions
from kdpipe.train.resume_from import PreviousRun, continue_adapter, previous_run, shape_note
from kdpipe.train.trainers import pick
from kdpipe.train.trainers.teacher_logits import check_teacher, teacher_record
from kdpipe.train.trainers.base import Recipe


@dataclass
class TrainResult:
    run_dir: Path
    train_rows: int
    val_rows: int
    steps: int
    train_loss: float | None
    eval_loss: float | None
    tokens_per_s: float | None
    seconds: float
    weighted: bool
    notes: list[str]
    main_process: bool = True  # False on the other processes of a launched run (they report nothing)


def _check_qlora(flag: str = "--qlora") -> None:
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise KdpipeError(f"{flag} needs a CUDA GPU (4-bit weights via bitsandbytes); none is present: "
                          f"drop {flag} to use full-precision weights")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise KdpipeError(f"{flag} needs the bitsandbytes package: pip install bitsandbytes")


@dataclass
class Prepared:
    """The data of a run, read and checked against the student's tokenizer, and the recipe that fits it."""

    data: SftData
    train_rows: list[dict[str, Any]]
    val_rows: list[dict[str, Any]]
    length_stats: dict[str, Any]
    tokenizer: Any
    recipe: Recipe
    student: str  # opts.student resolved: an absolute path for a local folder, else the hub id
    notes: list[str]
    previous: PreviousRun | None = None  # --resume-from


def prepare_data(sft_path: Path, run_dir: Path, opts: TrainOptions) -> Prepared:
    """Read the SFT rows and check everything that can be checked before a model is loaded."""
    data: SftData = read_sft(sft_path)
    recipe = pick(data.has_rationale, data.has_teacher, teacher_model=bool(opts.teacher_model))
    notes = []
    check_launch(bool(opts.teacher_model), opts.qlora)
    if opts.packing and recipe.no_packing:
        raise UsageError(recipe.no_packing)
    if opts.rationale_weight != 1.0 and not data.has_rationale:
        notes.append("--rationale-weight has no effect: the data has no rationale rows")
    if not data.has_teacher and (opts.kd_alpha, opts.kd_temperature, opts.kd_top_k) != (0.5, 1.0, None):
        notes.append("--kd-alpha, --kd-temperature and --kd-top-k have no effect: no row carries the teacher's "
                     "logprobs (generate --logprobs, format --style kd)")
    if data.prompt_format_inferred:
        notes.append(f"no prompt format in {sft_path}.meta.json; inferred style "
                     f"{data.prompt_format['style']!r} from the rows")
    check_model_exists(opts.student, opts.trust_remote_code)
    if opts.qlora or opts.teacher_4bit:
        _check_qlora("--qlora" if opts.qlora else "--teacher-4bit")
    check_trackers(report_targets(opts.report_to))
    student = resolved_student(opts.student)
    previous = previous_run(opts, run_dir, student)
    if previous is not None and shape_note(opts, previous):
        notes.append(shape_note(opts, previous))
    tokenizer = load_tokenizer(student, opts.trust_remote_code)
    if opts.teacher_model:
        check_teacher(opts, tokenizer)  # before any model is loaded
    if data.chat and not tokenizer.chat_template:
        raise KdpipeError(f"{opts.student}: the tokenizer has no chat template but the data is in chat "
                          "form; rerun `kdpipe format --no-chat` or pick a chat model")
    train_rows, length_stats = check_lengths(data.train, tokenizer, data.chat, opts.max_length)
    val_rows = check_lengths(data.val, tokenizer, data.chat, opts.max_length)[0] if data.val else []
    if length_stats["dropped_prompt_too_long"]:
        notes.append(f"{length_stats['dropped_prompt_too_long']} rows dropped: prompt alone is "
                     f"--max-length {opts.max_length} tokens or more")
    recipe.prepare(train_rows + val_rows, tokenizer, opts)
    check_run_dir(run_dir, opts.resume, opts.overwrite)
    return Prepared(data, train_rows, val_rows, length_stats, tokenizer, recipe, student, notes, previous)


def dataset(rows: list[dict[str, Any]], recipe: Recipe):
    """The rows as a datasets.Dataset with the columns the recipe's loss reads."""
    from datasets import Dataset

    return Dataset.from_list(recipe.rows(rows))


def build_trainer(prep: Prepared, run_dir: Path, opts: TrainOptions, callbacks: list):
    """(trainer, cuda, bf16): the student loaded and the recipe's Trainer built over it."""
    from peft import LoraConfig
    from peft.utils.error import NoMatchingPeftModuleError
    from transformers import PrinterCallback
    from trl import SFTConfig

    quiet_libraries()
    prev = prep.previous
    model, cuda, bf16 = _load_model(opts, str(prev.run_dir) if prev and prev.full else prep.student)
    if prev and not prev.full:
        model = continue_adapter(model, prev)
    has_val = bool(prep.val_rows)
    args = prep.recipe.args(
        SFTConfig, output_dir=str(run_dir / CHECKPOINTS), seed=opts.seed, learning_rate=opts.lr,
        lr_scheduler_type=opts.lr_scheduler, warmup_steps=opts.warmup_ratio,
        num_train_epochs=opts.epochs, max_steps=opts.max_steps or -1,
        per_device_train_batch_size=opts.batch_size, per_device_eval_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.grad_accum, activation_checkpointing=opts.gradient_checkpointing,
        max_length=opts.max_length, packing=opts.packing, completion_only_loss=True,
        bf16=bf16, fp16=False, dataloader_pin_memory=cuda, use_cpu=use_cpu(cuda),
        report_to=report_targets(opts.report_to) or "none", run_name=run_name(run_dir),
        logging_steps=opts.log_every, eval_strategy="steps" if has_val else "no",
        eval_steps=opts.eval_every, save_strategy="steps", save_steps=opts.save_every,
        save_total_limit=2, disable_tqdm=True, remove_unused_columns=not prep.recipe.extra_columns,
    )
    peft_config = None if opts.full or prev else LoraConfig(
        r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout,
        target_modules=opts.targets(), task_type="CAUSAL_LM")
    try:
        trainer = prep.recipe.build(model, prep.tokenizer, dataset(prep.train_rows, prep.recipe),
                                    dataset(prep.val_rows, prep.recipe) if has_val else None, opts,
                                    args=args, peft_config=peft_config, callbacks=callbacks)
    except NoMatchingPeftModuleError:
        raise KdpipeError(f"--lora-targets {opts.lora_targets}: no such module in {opts.student}; its linear "
                          f"layers are {', '.join(_linear_names(model))} (or use all-linear)") from None
    trainer.remove_callback(PrinterCallback)  # MetricsLog says a concise line instead
    place_tensorboard(trainer, run_dir)
    return trainer, cuda, bf16


@dataclass
class Fit:
    steps: int
    train_loss: float | None  # mean over every step of the run, resumed or not
    eval_loss: float | None
    tokens: int | None  # training tokens of the whole run
    seconds: float


def fit(trainer, run_dir: Path, opts: TrainOptions, log, has_val: bool) -> Fit:
    """Train (from the last checkpoint with --resume) and take the final validation loss."""
    import torch

    from kdpipe.train.log import resume_point

    before = resume_point(run_dir / CHECKPOINTS) if opts.resume else None
    if before is not None:
        # TRL counts training tokens from 0 in each trainer it builds: carry the run's count on.
        trainer._total_train_tokens = log.tokens_before = before.tokens
    started = time.time()
    try:
        output = trainer.train(resume_from_checkpoint=True if opts.resume else None)
        eval_loss = _final_eval_loss(trainer) if has_val else None
    except torch.OutOfMemoryError:
        raise KdpipeError(f"out of memory: lower --batch-size ({opts.batch_size}, raising --grad-accum to "
                          f"keep the effective batch), --max-length ({opts.max_length}), turn on "
                          "--gradient-checkpointing, or use --qlora"
                          + (", --teacher-4bit or --teacher-device" if opts.teacher_model else "")) from None
    steps = trainer.state.global_step
    train_loss = output.training_loss  # transformers: the mean over the steps of this call only
    if before is not None and before.loss_sum is not None and steps:
        train_loss = (before.loss_sum + train_loss * (steps - before.step)) / steps
    return Fit(steps, train_loss, eval_loss, getattr(trainer, "_total_train_tokens", None),
               time.time() - started)


def _final_eval_loss(trainer) -> float:
    """The validation loss of the final weights: the one logged at the last step when there was one
    (evaluating again would log it twice), else a fresh evaluation."""
    step = trainer.state.global_step
    at_end = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h and h.get("step") == step]
    return at_end[-1] if at_end else trainer.evaluate()["eval_loss"]


def run_train(sft_path: str | os.PathLike, run_dir: str | os.PathLike, opts: TrainOptions,
              progress: Callable[[str], None] | None = None) -> TrainResult:
    """Train the student on `sft_path` into `run_dir`; validate everything before training.

    `progress` gets kdpipe's own lines (one per logging step); the libraries' bars stay off.
    """
    say = progress if progress and main_process() else (lambda _m: None)
    opts.validate()
    sft_path, run_dir = Path(sft_path), Path(run_dir)
    prep = prepare_data(sft_path, run_dir, opts)

    from kdpipe.train.log import MetricsLog

    log = MetricsLog(run_dir / METRICS, say)
    trainer, cuda, bf16 = build_trainer(prep, run_dir, opts, [log])
    clear_run_dir(run_dir, opts.overwrite)  # the old run stays until the new one is ready to start
    say(f"train: {len(prep.train_rows)} train rows, {len(prep.val_rows)} val rows, "
        f"{'full fine-tuning' if opts.full else 'QLoRA' if opts.qlora else 'LoRA'} on "
        f"{'cuda' if cuda else 'cpu'}{' (bf16)' if bf16 else ''}"
        f"{f', distilling {opts.kd} from {opts.teacher_model}' if opts.teacher_model else ''}")
    done = fit(trainer, run_dir, opts, log, has_val=bool(prep.val_rows))
    distributed = str(trainer.accelerator.distributed_type.value)
    if sharding_note(distributed):
        prep.notes.append(sharding_note(distributed))
    tokens_per_s = log.tokens_per_s()
    weighted = prep.data.has_rationale
    data = prep.data
    config = {
        "kdpipe_version": __version__, "student": prep.student, "student_digest": student_digest(prep.student),
        "trust_remote_code": opts.trust_remote_code, "options": asdict(opts),
        "resolved": {"learning_rate": opts.lr, "device": "cuda" if cuda else "cpu", "bf16": bf16,
                     "trainer": prep.recipe.name, "weighted_loss": weighted, "loss": prep.recipe.loss(opts),
                     "lora_targets": None if opts.full else opts.targets(),
                     "world_size": trainer.args.world_size, "distributed_type": distributed,
                     "global_batch_size": opts.batch_size * opts.grad_accum * trainer.args.world_size},
        "data": {"path": str(sft_path), "digest": file_digest(sft_path), "chat": data.chat,
                 "tasks": dict(data.tasks), "train_rows": len(prep.train_rows), "val_rows": len(prep.val_rows),
                 **prep.length_stats},
        "prompt_format": data.prompt_format,
        "lineage": lineage(sft_path),  # the stages behind the data, for the model card
        "results": {"steps": done.steps, "train_loss": done.train_loss, "eval_loss": done.eval_loss,
                    "tokens": done.tokens, "tokens_per_s": tokens_per_s, "seconds": round(done.seconds, 3)},
        "teacher": teacher_record(opts) if opts.teacher_model else None,
        "resumed_from": prep.previous.record() if prep.previous else None,
        "notes": prep.notes,
        "trainer_args": json.loads(json.dumps(trainer.args.to_dict(), default=str)),
    }
    save_run(trainer, prep.tokenizer, run_dir, config, data.prompt_format,
             merge_from=prep.student if opts.merge else None, trust_remote_code=opts.trust_remote_code, say=say)
    if opts.push_to_hub and trainer.is_world_process_zero():
        from kdpipe.hub.push import push_folder

        say(f"train: pushing {run_dir} to {opts.push_to_hub}")
        url = push_folder(run_dir, opts.push_to_hub, "model", private=opts.private, skip=(CHECKPOINTS,),
                          message=f"Upload {run_dir.resolve().name} from kdpipe")
        prep.notes.append(f"pushed to {opts.push_to_hub}: {url}")
    return TrainResult(run_dir, len(prep.train_rows), len(prep.val_rows), done.steps, done.train_loss,
                       done.eval_loss, tokens_per_s, done.seconds, weighted, prep.notes, main_process())


def _load_model(opts: TrainOptions, student: str):
    import torch
    from transformers import AutoModelForCausalLM

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    kwargs: dict[str, Any] = {"trust_remote_code": opts.trust_remote_code}
    if opts.qlora:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float16)
        kwargs["device_map"] = {"": local_cuda_device()}  # 4-bit weights cannot be moved after loading
    # Frozen LoRA base weights can live in bf16; full fine-tuning keeps fp32
    # master weights and lets autocast run the matmuls in bf16.
    kwargs["dtype"] = torch.bfloat16 if (bf16 and not opts.full) else torch.float32
    return AutoModelForCausalLM.from_pretrained(student, **kwargs), cuda, bf16


def _linear_names(model) -> list[str]:
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and name})
