"""`kdpipe train`: supervised fine-tuning of the student with TRL's SFTTrainer.

LoRA (PEFT) by default, full fine-tuning with `--full`, 4-bit QLoRA with
`--qlora` (CUDA + bitsandbytes). Loss falls on the completion only: the rows
are prompt/completion pairs and TRL masks the prompt. For Distilling
step-by-step data the loss is L_label + λ·L_rationale, each task's mean
token loss taken separately (λ = `rationale_weight`; see kdpipe/weighted.py).

RUN_DIR after a run:
    adapter_model.safetensors + adapter_config.json   (or full weights with --full)
    tokenizer files, prompt_format.json, train_config.json (options, resolved
    trainer arguments, data digest, results), metrics.jsonl (one line per
    logging step), loss.png, checkpoints/ (for --resume), merged/ (--merge)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from kdpipe import __version__
from kdpipe.errors import KdpipeError, UsageError
from kdpipe.libraries import quiet_libraries
from kdpipe.records import atomic_file, file_digest
from kdpipe.train.data import SftData, check_lengths, read_sft
from kdpipe.student import MERGED, PROMPT_FORMAT, TRAIN_CONFIG, check_model_exists, load_tokenizer

METRICS = "metrics.jsonl"
LOSS_PNG = "loss.png"
CHECKPOINTS = "checkpoints"


@dataclass
class TrainOptions:
    student: str = ""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    # "all-linear": every linear layer but the output head, which suits any
    # decoder architecture (the QLoRA paper's finding: all layers beat q,v only).
    lora_targets: str = "all-linear"
    full: bool = False
    qlora: bool = False
    rationale_weight: float = 1.0
    learning_rate: float | None = None  # None: 2e-4 for LoRA, 2e-5 for full fine-tuning
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    max_length: int = 1024
    packing: bool = False
    log_every: int = 5
    eval_every: int = 50
    save_every: int = 200
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    merge: bool = False
    trust_remote_code: bool = False

    def validate(self) -> None:
        problems = []
        if not self.student:
            problems.append("--student is required")
        # NaN passes every comparison below; it is not a number of anything.
        problems += [f"--{name.replace('_', '-')} must be a finite number"
                     for name in ("lora_dropout", "rationale_weight", "learning_rate", "warmup_ratio", "epochs")
                     if getattr(self, name) is not None and not math.isfinite(getattr(self, name))]
        if not 0 <= self.seed < 2 ** 32:
            problems.append("--seed must be between 0 and 4294967295")
        for name in ("lora_r", "lora_alpha", "batch_size", "grad_accum", "log_every", "eval_every",
                     "save_every"):
            if getattr(self, name) <= 0:
                problems.append(f"--{name.replace('_', '-')} must be positive")
        if not 0 <= self.lora_dropout < 1:
            problems.append("--lora-dropout must be in [0, 1)")
        if self.learning_rate is not None and self.learning_rate <= 0:
            problems.append("--learning-rate must be positive")
        if not 0 <= self.warmup_ratio < 1:
            problems.append("--warmup-ratio must be in [0, 1)")
        if self.epochs <= 0:
            problems.append("--epochs must be positive")
        if self.max_steps is not None and self.max_steps <= 0:
            problems.append("--max-steps must be positive")
        if self.max_length < 8:
            problems.append("--max-length must be at least 8")
        if self.rationale_weight < 0:
            problems.append("--rationale-weight must be >= 0")
        if self.full and self.qlora:
            problems.append("--full and --qlora exclude each other (QLoRA trains an adapter)")
        if self.full and self.merge:
            problems.append("--merge only applies to adapters; --full already saves full weights")
        if self.resume and self.overwrite:
            problems.append("--resume and --overwrite exclude each other")
        scheduler_problem = _check_scheduler(self.lr_scheduler)
        if scheduler_problem:
            problems.append(scheduler_problem)
        if problems:
            raise UsageError("; ".join(problems))

    @property
    def lr(self) -> float:
        return self.learning_rate or (2e-5 if self.full else 2e-4)

    def targets(self) -> str | list[str]:
        t = self.lora_targets.strip()
        return t if t == "all-linear" else [x.strip() for x in t.split(",") if x.strip()]


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


def _check_qlora() -> None:
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise KdpipeError("--qlora needs a CUDA GPU (4-bit weights via bitsandbytes); none is present: "
                          "drop --qlora to train a LoRA adapter on full-precision weights")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise KdpipeError("--qlora needs the bitsandbytes package: pip install bitsandbytes")


# Schedules transformers knows but kdpipe cannot drive: they need arguments it does not pass.
_SCHEDULERS_REFUSED = {"cosine_with_min_lr": "needs a minimum learning rate",
                       "cosine_warmup_with_min_lr": "needs a minimum learning rate",
                       "reduce_lr_on_plateau": "follows a validation metric, not the step count"}


def _check_scheduler(name: str) -> str | None:
    from transformers.trainer_utils import SchedulerType

    usable = [s.value for s in SchedulerType if s.value not in _SCHEDULERS_REFUSED]
    if name in _SCHEDULERS_REFUSED:
        return f"--lr-scheduler {name} {_SCHEDULERS_REFUSED[name]}; use one of {', '.join(usable)}"
    if name not in usable:
        return f"--lr-scheduler must be one of {', '.join(usable)}, got {name!r}"
    return None


def _main_process() -> bool:
    # Under `accelerate launch` every process runs run_train; only the main one checks and
    # clears RUN_DIR (the others would otherwise see its first files and refuse).
    return int(os.environ.get("RANK", "0")) == 0


def _check_run_dir(run_dir: Path, opts: TrainOptions) -> None:
    """Refuse RUN_DIR when it cannot be used as asked; changes nothing."""
    if not _main_process():
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise KdpipeError(f"{run_dir}: exists and is not a directory")
    has_content = run_dir.is_dir() and any(run_dir.iterdir())
    if opts.resume:
        ckpts = list((run_dir / CHECKPOINTS).glob("checkpoint-*")) if run_dir.is_dir() else []
        if not ckpts:
            raise KdpipeError(f"{run_dir}: no checkpoint to resume from (in {run_dir / CHECKPOINTS})")
    elif has_content:
        if not opts.overwrite:
            raise KdpipeError(f"{run_dir}: not empty; pass --resume to continue its run or --overwrite "
                              "to start over")


def _clear_run_dir(run_dir: Path, opts: TrainOptions) -> None:
    """--overwrite: delete the previous run, once everything that could refuse the new one has been built."""
    if _main_process() and opts.overwrite and run_dir.is_dir():
        shutil.rmtree(run_dir)


def _load_model(opts: TrainOptions):
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
    # Frozen LoRA base weights can live in bf16; full fine-tuning keeps fp32
    # master weights and lets autocast run the matmuls in bf16.
    kwargs["dtype"] = torch.bfloat16 if (bf16 and not opts.full) else torch.float32
    return AutoModelForCausalLM.from_pretrained(opts.student, **kwargs), cuda, bf16


def _dataset(rows: list[dict[str, Any]], with_task: bool):
    """prompt/completion rows for TRL; `with_task` adds the dss task column of the two-task loss."""
    from datasets import Dataset

    from kdpipe.train.trainers.weighted import TASK_COLUMN

    data = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
    if with_task:
        for d, r in zip(data, rows):
            d[TASK_COLUMN] = int(r["task"] == "rationale")
    return Dataset.from_list(data)


def run_train(sft_path: str | os.PathLike, run_dir: str | os.PathLike, opts: TrainOptions,
              progress: Callable[[str], None] | None = None) -> TrainResult:
    """Train the student on `sft_path` into `run_dir`; validate everything before training.

    `progress` gets kdpipe's own lines (one per logging step); the libraries' bars stay off.
    """
    say = progress or (lambda _m: None)
    opts.validate()
    sft_path, run_dir = Path(sft_path), Path(run_dir)
    data: SftData = read_sft(sft_path)
    # dss data always takes the two-task loss (even at λ = 1, where a plain token
    # mean would still weigh each task by its share of completion tokens).
    weighted = data.has_rationale
    notes = []
    if opts.packing and weighted:
        raise UsageError("--packing cannot be used on dss data (packed batches cannot keep the label "
                         "and rationale tasks apart for the two-task loss)")
    if opts.rationale_weight != 1.0 and not data.has_rationale:
        notes.append("--rationale-weight has no effect: the data has no rationale rows")
    if data.prompt_format_inferred:
        notes.append(f"no prompt format in {sft_path}.meta.json; inferred style "
                     f"{data.prompt_format['style']!r} from the rows")
    check_model_exists(opts.student, opts.trust_remote_code)
    if opts.qlora:
        _check_qlora()
    tokenizer = load_tokenizer(opts.student, opts.trust_remote_code)
    if data.chat and not tokenizer.chat_template:
        raise KdpipeError(f"{opts.student}: the tokenizer has no chat template but the data is in chat "
                          "form; rerun `kdpipe format --no-chat` or pick a chat model")
    train_rows, length_stats = check_lengths(data.train, tokenizer, data.chat, opts.max_length)
    val_rows = check_lengths(data.val, tokenizer, data.chat, opts.max_length)[0] if data.val else []
    if length_stats["dropped_prompt_too_long"]:
        notes.append(f"{length_stats['dropped_prompt_too_long']} rows dropped: prompt alone is "
                     f"--max-length {opts.max_length} tokens or more")
    _check_run_dir(run_dir, opts)

    import torch
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from kdpipe.train.log import MetricsLog, plot_losses
    from kdpipe.train.trainers.weighted import weighted_trainer_classes

    quiet_libraries()
    model, cuda, bf16 = _load_model(opts)
    train_ds, val_ds = _dataset(train_rows, weighted), (_dataset(val_rows, weighted) if val_rows else None)
    args = SFTConfig(
        output_dir=str(run_dir / CHECKPOINTS), seed=opts.seed, learning_rate=opts.lr,
        lr_scheduler_type=opts.lr_scheduler, warmup_steps=opts.warmup_ratio,
        num_train_epochs=opts.epochs, max_steps=opts.max_steps or -1,
        per_device_train_batch_size=opts.batch_size, per_device_eval_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.grad_accum, activation_checkpointing=opts.gradient_checkpointing,
        max_length=opts.max_length, packing=opts.packing, completion_only_loss=True,
        bf16=bf16, fp16=False, dataloader_pin_memory=cuda, report_to="none",
        logging_steps=opts.log_every, eval_strategy="steps" if val_ds is not None else "no",
        eval_steps=opts.eval_every, save_strategy="steps", save_steps=opts.save_every,
        save_total_limit=2, disable_tqdm=True, remove_unused_columns=not weighted,
    )
    peft_config = None if opts.full else LoraConfig(
        r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout,
        target_modules=opts.targets(), task_type="CAUSAL_LM")
    log = MetricsLog(run_dir / METRICS, say)
    kwargs: dict[str, Any] = {}
    trainer_cls = SFTTrainer
    if weighted:
        collator_cls, trainer_cls = weighted_trainer_classes()
        kwargs["data_collator"] = collator_cls(pad_token_id=tokenizer.pad_token_id)
        kwargs["rationale_weight"] = opts.rationale_weight
    from peft.utils.error import NoMatchingPeftModuleError

    try:
        trainer = trainer_cls(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                              processing_class=tokenizer, peft_config=peft_config, callbacks=[log], **kwargs)
    except NoMatchingPeftModuleError:
        raise KdpipeError(f"--lora-targets {opts.lora_targets}: no such module in {opts.student}; its linear "
                          f"layers are {', '.join(_linear_names(model))} (or use all-linear)") from None
    _clear_run_dir(run_dir, opts)  # the old run stays until the new one is ready to start
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # MetricsLog says a concise line instead
    say(f"train: {len(train_rows)} train rows, {len(val_rows)} val rows, "
        f"{'full fine-tuning' if opts.full else 'QLoRA' if opts.qlora else 'LoRA'} on "
        f"{'cuda' if cuda else 'cpu'}{' (bf16)' if bf16 else ''}")
    started = time.time()
    try:
        output = trainer.train(resume_from_checkpoint=True if opts.resume else None)
        eval_loss = trainer.evaluate()["eval_loss"] if val_ds is not None else None
    except torch.OutOfMemoryError:
        raise KdpipeError(f"out of memory: lower --batch-size ({opts.batch_size}, raising --grad-accum to "
                          f"keep the effective batch), --max-length ({opts.max_length}), turn on "
                          "--gradient-checkpointing, or use --qlora") from None
    seconds = time.time() - started
    tokens_per_s = log.tokens_per_s()
    if trainer.is_world_process_zero():
        trainer.save_model(str(run_dir))
        tokenizer.save_pretrained(str(run_dir))
        _write_json(run_dir / PROMPT_FORMAT, data.prompt_format)
        if opts.merge:
            say("train: merging the adapter into the base weights")
            merge_adapter(opts.student, run_dir, run_dir / MERGED, opts.trust_remote_code)
        plot_losses(run_dir / METRICS, run_dir / LOSS_PNG)
        config = {
            "kdpipe_version": __version__, "student": opts.student, "trust_remote_code": opts.trust_remote_code,
            "options": asdict(opts),
            "resolved": {"learning_rate": opts.lr, "device": "cuda" if cuda else "cpu", "bf16": bf16,
                         "weighted_loss": weighted,
                         "loss": (f"L_label + {opts.rationale_weight:g} * L_rationale (per-task token means)"
                                  if weighted else "token mean over completion tokens"),
                         "lora_targets": None if opts.full else opts.targets(),
                         "world_size": trainer.args.world_size},
            "data": {"path": str(sft_path), "digest": file_digest(sft_path), "chat": data.chat,
                     "tasks": dict(data.tasks), "train_rows": len(train_rows), "val_rows": len(val_rows),
                     **length_stats},
            "prompt_format": data.prompt_format,
            "results": {"steps": trainer.state.global_step, "train_loss": output.training_loss,
                        "eval_loss": eval_loss, "tokens_per_s": tokens_per_s,
                        "seconds": round(seconds, 3)},
            "notes": notes,
            "trainer_args": json.loads(json.dumps(trainer.args.to_dict(), default=str)),
        }
        _write_json(run_dir / TRAIN_CONFIG, config)
    return TrainResult(run_dir, len(train_rows), len(val_rows), trainer.state.global_step,
                       output.training_loss, eval_loss, tokens_per_s, seconds, weighted, notes)


def _linear_names(model) -> list[str]:
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and name})


def merge_adapter(base: str, adapter_dir: Path, out_dir: Path, trust_remote_code: bool = False) -> Path:
    """Fold a LoRA adapter into its base weights; the result loads with AutoModelForCausalLM."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto", trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out_dir))
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(out_dir))
    return out_dir


def _write_json(path: Path, obj: Any) -> None:
    with atomic_file(path) as fp:
        json.dump(obj, fp, indent=2, ensure_ascii=False, default=str)
        fp.write("\n")
