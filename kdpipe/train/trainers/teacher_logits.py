"""White-box distillation: a teacher checkpoint's full-vocabulary logits score the student's tokens.

Built on TRL 1.16's experimental `GKDTrainer` (trl/experimental/gkd), an SFTTrainer subclass: its
`generalized_jsd_loss` is the divergence, its `training_step` completes a share λ of the batches with the
student (`lmbda`), its `generate_on_policy_outputs` masks those completions. kdpipe adds the cross-entropy
term, the temperature, the two-task split of dss data, and its own placement of the teacher.

Per completion token t (prompt and padding masked), with p = softmax(logits / T):

    ℓ_t = α · CE(y_t, p_S at T=1) + (1 − α) · T² · D(p_T, p_S)

    D = KL(p_T ‖ p_S)            --divergence forward   (word-level KD; Hinton et al. 2015, Kim & Rush 2016)
      = KL(p_S ‖ p_T)            --divergence reverse   (MiniLLM's objective, Gu et al. 2024)
      = β·KL(p_T ‖ M) + (1−β)·KL(p_S ‖ M),  M = β·p_T + (1−β)·p_S    --divergence jsd --beta β (GKD, Agarwal
        et al. 2024), TRL's convention: β = 0 is exactly forward KL, β = 1 exactly reverse KL.

The loss of a batch is the mean of ℓ_t over its completion tokens; on dss data, L_label + λ·L_rationale with
each task's own token mean (trainers/weighted.py). A batch the student completed itself (--kd on-policy,
probability λ per batch as in TRL) has no data completion to copy: its CE term is dropped, ℓ_t = (1−α)·T²·D.
With --kd-alpha 0 and --divergence jsd this is the GKD paper's objective; --kd on-policy --on-policy-frac 1
--divergence reverse is MiniLLM's reverse KL on the student's own samples (without MiniLLM's policy-gradient
refinements: no single-step decomposition, no teacher-mixed sampling, no length normalisation, no PPO-style
clipping, no pre-training loss; the gradient here flows through the per-token divergence only).

The teacher is frozen: eval mode, no gradients, bf16 on a GPU (4-bit with --teacher-4bit), on the student's
device or --teacher-device. It is placed by kdpipe rather than by accelerate, which would move it onto the
training device (and refuses a 4-bit model on another GPU).
"""

from __future__ import annotations

import os
from typing import Any

from kdpipe.errors import KdpipeError
from kdpipe.train.trainers.base import Recipe, count_tokens
from kdpipe.train.trainers.weighted import TASK_COLUMN, dss_loss

# GKDTrainer lives in trl.experimental, which warns on import; kdpipe pins TRL (constraints.txt) and its
# tests check the loss against a hand computation, so the warning would only be noise.
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

METHODS = ("offline", "on-policy")
DIVERGENCES = ("forward", "reverse", "jsd")


def kd_problems(opts) -> list[str]:
    """The problems of the distillation options (part of TrainOptions.problems)."""
    problems = []  # --kd-alpha and --kd-temperature in range: TrainOptions.problems checks them for every loss
    if not opts.teacher_model:
        given = [flag for flag, name in (("--kd", "kd"), ("--divergence", "divergence"), ("--beta", "beta"),
                                         ("--on-policy-frac", "on_policy_frac"), ("--teacher-4bit", "teacher_4bit"),
                                         ("--teacher-device", "teacher_device"))
                 if getattr(opts, name) != getattr(type(opts), name)]
        if given:
            problems.append(f"{', '.join(given)} only apply with --teacher-model")
        return problems
    if opts.kd not in METHODS:
        problems.append(f"--kd must be one of {', '.join(METHODS)}, got {opts.kd!r}")
    if opts.divergence not in DIVERGENCES:
        problems.append(f"--divergence must be one of {', '.join(DIVERGENCES)}, got {opts.divergence!r}")
    if not 0 <= opts.beta <= 1:
        problems.append("--beta must be in [0, 1]")
    elif opts.beta != type(opts).beta and opts.divergence in ("forward", "reverse"):
        problems.append(f"--beta applies to --divergence jsd (--divergence {opts.divergence} is beta "
                        f"{int(opts.divergence == 'reverse')})")
    if opts.on_policy_frac != type(opts).on_policy_frac and opts.kd != "on-policy":
        problems.append("--on-policy-frac applies to --kd on-policy")
    if not 0 <= opts.on_policy_frac <= 1:
        problems.append("--on-policy-frac must be in [0, 1]")
    if opts.kd_alpha == 1:
        problems.append("--kd-alpha 1 leaves nothing to the teacher; lower it or drop --teacher-model")
    return problems


def beta(opts) -> float:
    """The generalised-JSD β of the chosen divergence (TRL's convention: 0 forward KL, 1 reverse KL)."""
    return {"forward": 0.0, "reverse": 1.0}.get(opts.divergence, opts.beta)


def teacher_record(opts) -> dict[str, Any]:
    """What train_config.json says of the teacher and the method."""
    from kdpipe.train.run_dir import resolved_student, student_digest

    teacher = resolved_student(opts.teacher_model)
    return {"model": teacher, "digest": student_digest(teacher), "method": opts.kd,
            "divergence": opts.divergence, "beta": beta(opts), "alpha": opts.kd_alpha,
            "temperature": opts.kd_temperature,
            "on_policy_frac": opts.on_policy_frac if opts.kd == "on-policy" else 0.0,
            "4bit": opts.teacher_4bit, "device": opts.teacher_device or None,
            "trl": {"trainer": "trl.experimental.gkd.GKDTrainer", "version": _trl_version()}}


def _trl_version() -> str:
    from importlib.metadata import version

    return version("trl")


def check_teacher(opts, student_tokenizer) -> None:
    """Refuse, in one line and before the teacher's weights are loaded, a teacher whose tokenizer is not the
    student's: token-level losses compare the two distributions token id by token id."""
    from kdpipe.student import check_model_exists, load_tokenizer

    check_model_exists(opts.teacher_model, opts.trust_remote_code)
    teacher_tokenizer = load_tokenizer(opts.teacher_model, opts.trust_remote_code)
    mine, theirs = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if mine != theirs:
        differ = len(set(mine.items()) ^ set(theirs.items()))
        raise KdpipeError(f"--teacher-model {opts.teacher_model}: its tokenizer is not the student's ({len(theirs)} "
                          f"tokens against {len(mine)}, {differ} entries differ); token-level distillation needs "
                          "one vocabulary: pick a teacher of the student's family, or distil through its text "
                          "(generate, format, train)")


def load_teacher(opts, bf16: bool):
    """The teacher model, frozen, in eval mode, on its device."""
    import torch
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM

    device = opts.teacher_device or str(PartialState().device)
    kwargs: dict[str, Any] = {"trust_remote_code": opts.trust_remote_code, "device_map": {"": device},
                              "dtype": torch.bfloat16 if bf16 else torch.float32}
    if opts.teacher_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float16)
    try:
        teacher = AutoModelForCausalLM.from_pretrained(opts.teacher_model, **kwargs)
    except torch.OutOfMemoryError:
        raise KdpipeError(f"out of memory loading the teacher {opts.teacher_model}: use --teacher-4bit, or put it "
                          "on another GPU with --teacher-device") from None
    teacher.eval()
    teacher.requires_grad_(False)
    # accelerate would move it onto the training device (and refuses a 4-bit model elsewhere): kdpipe placed it.
    teacher._is_accelerate_prepared = True
    return teacher


def token_losses(student_logits, teacher_logits, labels, *, alpha: float, temperature: float, beta: float,
                 with_ce: bool = True):
    """(ℓ [batch, time], mask [batch, time]): each position's α·CE + (1−α)·T²·D, positions already aligned
    (logits at t predict labels at t); the mask marks the completion tokens (labels != -100)."""
    import torch
    from trl.experimental.gkd import GKDTrainer

    # Beyond the smaller table are only padding rows (the tokenizers are the same): no token to compare.
    vocab = min(student_logits.size(-1), teacher_logits.size(-1))
    student_logits = student_logits[..., :vocab].float()
    teacher_logits = teacher_logits[..., :vocab].float().to(student_logits.device)
    divergence = GKDTrainer.generalized_jsd_loss(student_logits, teacher_logits, beta=beta,
                                                 temperature=temperature, reduction="none").sum(-1)
    loss = (1 - alpha) * temperature ** 2 * divergence
    mask = labels != -100
    if with_ce and alpha:
        log_probs = torch.log_softmax(student_logits, dim=-1)
        ce = -log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        loss = loss + alpha * ce
    return loss, mask


class TeacherLogits(Recipe):
    name = "teacher-logits"  # the method (offline, on-policy) is in train_config.json's "teacher"
    no_packing = "--packing cannot be used with --teacher-model (the teacher scores each row apart)"

    def __init__(self, has_rationale: bool = False):
        self.has_rationale = has_rationale
        self.extra_columns = (TASK_COLUMN,) if has_rationale else ()

    def loss(self, opts) -> str:
        words = {"forward": "KL(p_T||p_S)", "reverse": "KL(p_S||p_T)",
                 "jsd": f"JSD_beta={opts.beta:g}(p_T, p_S)"}[opts.divergence]
        per_token = f"{opts.kd_alpha:g} * CE + {1 - opts.kd_alpha:g} * {opts.kd_temperature:g}^2 * {words}"
        where = ("on the data's completions" if opts.kd == "offline" else
                 f"a share {opts.on_policy_frac:g} of batches completed by the student (no CE on those)")
        split = (f", L_label + {opts.rationale_weight:g} * L_rationale (per-task token means)"
                 if self.has_rationale else ", token mean over completion tokens")
        return f"{opts.kd}: {per_token}, {where}{split}"

    def rows(self, rows):
        base = super().rows(rows)
        if not self.has_rationale:
            return base
        return [dict(d, **{TASK_COLUMN: int(r["task"] == "rationale")}) for d, r in zip(base, rows)]

    def args(self, config_cls, **kwargs):
        from trl.experimental.gkd import GKDConfig

        # Sampling at temperature 1: the student's own distribution (the loss's temperature is kdpipe's).
        return GKDConfig(**kwargs, temperature=1.0, disable_dropout=True)

    def build(self, model, tokenizer, train_ds, val_ds, opts, *, args, peft_config, callbacks):
        from kdpipe.decoding import stop_tokens

        args.lmbda = opts.on_policy_frac if opts.kd == "on-policy" else 0.0
        args.beta = beta(opts)
        args.max_new_tokens = _longest_completion(tokenizer, train_ds)
        teacher = load_teacher(opts, bf16=bool(args.bf16))
        collator_cls, trainer_cls = kd_trainer_classes()
        # GKDTrainer refuses embedding tables of different sizes, but one family pads them differently
        # (Qwen2.5-0.5B 151936 rows, 7B 152064): the tokenizers were compared (check_teacher), so only
        # padding rows differ, and token_losses compares the rows both models have.
        text_config = teacher.config.get_text_config()
        own_size, text_config.vocab_size = text_config.vocab_size, model.config.get_text_config().vocab_size
        try:
            trainer = trainer_cls(model=model, teacher_model=teacher, args=args, train_dataset=train_ds,
                                  eval_dataset=val_ds, processing_class=tokenizer, peft_config=peft_config,
                                  callbacks=callbacks, data_collator=collator_cls(pad_token_id=tokenizer.pad_token_id),
                                  kd=dict(alpha=opts.kd_alpha, temperature=opts.kd_temperature, beta=beta(opts),
                                          rationale_weight=opts.rationale_weight))
        finally:
            text_config.vocab_size = own_size
        trainer.generation_config.eos_token_id = list(stop_tokens(model, tokenizer).values())
        return trainer


def _longest_completion(tokenizer, ds) -> int:
    """On-policy completions may run as long as the longest completion of the data (in tokens)."""
    longest = 1
    for completion in ds["completion"]:
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        longest = max(longest, len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1)
    return longest


def kd_trainer_classes():
    """(collator class, trainer class), built lazily so that importing kdpipe stays light.

    The trainer takes `kd=dict(alpha, temperature, beta, rationale_weight)` besides GKDTrainer's arguments.
    """
    import torch
    from trl.experimental.gkd import GKDTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class PromptCollator(DataCollatorForLanguageModeling):
        """TRL's SFT batches, plus the left-padded prompts GKD generates from (and the dss task column)."""

        def torch_call(self, examples):
            tasks = torch.tensor([int(e.get(TASK_COLUMN, 0)) for e in examples])
            batch = super().torch_call([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
            prompts = []
            for e in examples:
                starts = [i for i, y in enumerate(e["labels"]) if y != -100]
                prompts.append(torch.tensor(e["input_ids"][:starts[0] if starts else len(e["input_ids"])]))
            width = max(len(p) for p in prompts)
            batch["prompts"] = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
            batch["prompt_attention_mask"] = torch.zeros((len(prompts), width), dtype=torch.long)
            for row, p in enumerate(prompts):
                if len(p):
                    batch["prompts"][row, -len(p):] = p
                    batch["prompt_attention_mask"][row, -len(p):] = 1
            batch[TASK_COLUMN] = tasks
            return batch

    class TeacherLogitsTrainer(GKDTrainer):
        # A per-micro-batch mean: the Trainer divides it by the gradient accumulation steps.
        loss_is_scaled_for_ga = False

        def __init__(self, *args, kd: dict, **kwargs):
            self.kd = kd
            self.own_batch = False
            super().__init__(*args, **kwargs)
            # GKDTrainer skips SFTTrainer's tokenisation (its own collator reads chat messages): kdpipe's rows
            # are prompt/completion pairs, tokenised and masked exactly as the SFT path does.
            self.train_dataset = self._prepare_dataset(self.train_dataset, self.processing_class, self.args,
                                                       False, None, "train")
            if self.eval_dataset is not None:
                self.eval_dataset = self._prepare_dataset(self.eval_dataset, self.processing_class, self.args,
                                                          False, None, "eval")

        def generate_on_policy_outputs(self, model, inputs, generation_config):
            self.own_batch = True
            return GKDTrainer.generate_on_policy_outputs(model, inputs, generation_config)

        def training_step(self, model, inputs, num_items_in_batch=None):
            self.own_batch = False
            return super().training_step(model, inputs, num_items_in_batch)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            own, self.own_batch = self.own_batch, False
            ids, attention, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
            outputs = model(input_ids=ids, attention_mask=attention, use_cache=False)
            teacher_device = next(self.teacher_model.parameters()).device
            with torch.no_grad():
                teacher_logits = self.teacher_model(input_ids=ids.to(teacher_device),
                                                    attention_mask=attention.to(teacher_device),
                                                    use_cache=False).logits
            per_token, mask = token_losses(outputs.logits[:, :-1], teacher_logits[:, :-1], labels[:, 1:],
                                           alpha=self.kd["alpha"], temperature=self.kd["temperature"],
                                           beta=self.kd["beta"], with_ce=not own)
            tasks = inputs.get(TASK_COLUMN, torch.zeros(ids.size(0), dtype=torch.long))
            loss, _, _ = dss_loss(per_token, mask, tasks, self.kd["rationale_weight"])
            count_tokens(self, attention)
            return (loss, outputs) if return_outputs else loss

    return PromptCollator, TeacherLogitsTrainer
