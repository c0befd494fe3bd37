"""`kdpipe train`'s options, declared once (each field carries its flag and help), and their checks."""

from __future__ import annotations

import math
from dataclasses import dataclass

from kdpipe.hub.push import repo_problem
from kdpipe.options import Options, option
from kdpipe.train.tracking import report_problem
from kdpipe.train.trainers.teacher_logits import kd_problems


@dataclass
class TrainOptions(Options):
    student: str = option("", "Hugging Face model id or local model folder (its tokenizer comes with it).",
                          required=True)
    lora_r: int = option(16, "LoRA rank.")
    lora_alpha: int = option(32, "LoRA alpha (scale = alpha / r).")
    lora_dropout: float = option(0.05, "LoRA dropout.")
    # "all-linear": every linear layer but the output head, which suits any
    # decoder architecture (the QLoRA paper's finding: all layers beat q,v only).
    lora_targets: str = option("all-linear", "Modules that get adapters: 'all-linear' (every linear layer but "
                                             "the output head) or a comma list such as q_proj,v_proj.")
    full: bool = option(False, "Full fine-tuning instead of LoRA (small students).")
    qlora: bool = option(False, "4-bit base weights (needs CUDA + bitsandbytes).")
    rationale_weight: float = option(1.0, "Loss weight of dss rationale rows (the paper's lambda).")
    kd_alpha: float = option(0.5, "Distillation (sparse KD on rows of format --style kd, or --teacher-model): "
                                  "weight of the cross-entropy on the completions; the divergence from the "
                                  "teacher gets 1 - alpha (times tau^2).")
    kd_temperature: float = option(1.0, "Distillation temperature tau of teacher and student (the divergence is "
                                        "scaled by tau^2).")
    kd_top_k: int | None = option(None, "Sparse KD: use the teacher's K most likely tokens (default: all stored).")
    learning_rate: float | None = option(None, "Peak learning rate (default: 2e-4 LoRA, 2e-5 --full).",
                                         flags=("--learning-rate", "--lr"))
    lr_scheduler: str = option("cosine", "Schedule: cosine, linear, constant, constant_with_warmup...")
    warmup_ratio: float = option(0.03, "Share of steps warming up.")
    epochs: float = option(3.0, "Epochs (not with --max-steps).")
    max_steps: int | None = option(None, "Stop after this many steps.")
    batch_size: int = option(8, "Examples per device per step.")
    grad_accum: int = option(1, "Gradient accumulation steps.")
    gradient_checkpointing: bool = option(False, "Recompute activations in the backward pass: less memory, "
                                                 "more time.")
    max_length: int = option(1024, "Tokens per example (prompt + completion); longer ones are cut.")
    packing: bool = option(False, "Pack examples into full sequences, padding-free (for GPUs; slow on a CPU; "
                                  "not with --rationale-weight).")
    log_every: int = option(5, "Log metrics every N steps.")
    report_to: str = option("none", "Also report metrics to tensorboard (RUN_DIR/tensorboard), wandb or trackio "
                                    "(a comma list for several), the run named after RUN_DIR; metrics.jsonl "
                                    "and loss.png are written either way.")
    push_to_hub: str | None = option(None, "After training, upload RUN_DIR (adapter or weights, tokenizer, model "
                                           "card; merged/ with --merge; not checkpoints/) to this Hub model "
                                           "repository (owner/name); the token comes from HF_TOKEN or `hf auth login`.")
    private: bool = option(False, "Create the Hub repository private (with --push-to-hub).")
    eval_every: int = option(50, "Validation loss every N steps.")
    save_every: int = option(200, "Checkpoint every N steps.")
    seed: int = option(0, "Random seed.")
    resume: bool = option(False, "Continue an interrupted run from the last checkpoint in RUN_DIR.")
    resume_from: str | None = option(None, "Start from a finished run's weights instead of the base model: its "
                                           "LoRA adapter (or full weights, with --full) trained further on this "
                                           "data; the run must be of the same --student. Not --resume.",
                                     metavar="RUN_DIR")
    overwrite: bool = option(False, "Replace a non-empty RUN_DIR.")
    merge: bool = option(False, "Also save RUN_DIR/merged: adapter folded into the base weights (loads with "
                                "AutoModelForCausalLM).")
    trust_remote_code: bool = option(False, "Run model code shipped with the model (off by default).")
    teacher_model: str = option("", "White-box distillation: a teacher checkpoint (model id or folder) with the "
                                    "student's tokenizer; its logits score every completion token.")
    kd: str = option("offline", "With --teacher-model: offline (the teacher scores the data's completions) or "
                                "on-policy (GKD: a share of batches is completed by the student).")
    divergence: str = option("forward", "forward KL(teacher||student), reverse KL(student||teacher) (MiniLLM's), "
                                        "or jsd (generalised JSD, --beta).")
    beta: float = option(0.5, "With --divergence jsd: TRL's generalised JSD weight, 0 = forward KL, 1 = reverse KL.")
    on_policy_frac: float = option(0.5, "With --kd on-policy: share of batches the student completes itself "
                                        "(GKD's lambda); the rest come from the data.")
    teacher_4bit: bool = option(False, "Load the teacher in 4-bit (CUDA + bitsandbytes).")
    teacher_device: str = option("", "Device of the teacher, e.g. cuda:1 (default: the student's).")

    def problems(self) -> list[str]:
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
        if not 0 <= self.kd_alpha <= 1 or self.kd_temperature <= 0 or (self.kd_top_k or 1) < 1:
            problems.append("--kd-alpha must be in [0, 1], --kd-temperature positive, --kd-top-k at least 1")
        if not 0 <= self.lora_dropout < 1:
            problems.append("--lora-dropout must be in [0, 1)")
        if self.learning_rate is not None and self.learning_rate <= 0:
            problems.append("--learning-rate must be positive")
        if not 0 <= self.warmup_ratio < 1:
            problems.append("--warmup-ratio must be in [0, 1)")
        if self.epochs <= 0:
            problems.append("--epochs must be positive")
        if self.max_steps is not None and self.epochs != TrainOptions.epochs:
            # Either would silently win over the other: --max-steps always did.
            problems.append("give --epochs or --max-steps, not both")
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
        problems += kd_problems(self)
        if report_problem(self.report_to):
            problems.append(report_problem(self.report_to))
        if repo_problem("--push-to-hub", self.push_to_hub):
            problems.append(repo_problem("--push-to-hub", self.push_to_hub))
        scheduler_problem = _check_scheduler(self.lr_scheduler)
        if scheduler_problem:
            problems.append(scheduler_problem)
        return problems

    @property
    def lr(self) -> float:
        return self.learning_rate or (2e-5 if self.full else 2e-4)

    def targets(self) -> str | list[str]:
        t = self.lora_targets.strip()
        return t if t == "all-linear" else [x.strip() for x in t.split(",") if x.strip()]


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
