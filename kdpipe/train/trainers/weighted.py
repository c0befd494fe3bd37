"""The multi-task loss of Distilling step-by-step, on top of TRL's SFTTrainer.

The paper trains one model on two tasks and minimises

    L = L_label + λ · L_rationale

where each task's loss is the mean cross-entropy over its own completion
tokens. A token-mean over the mixed batch would not be this: each task would
count in proportion to its completion tokens (rationales are several times
longer than labels, so the label task would get a small share at any λ).

Here, per micro-batch: L_label is the mean token loss over the completion
tokens of the batch's label-task rows, L_rationale the same over its
rationale-task rows (a task with no row in the micro-batch contributes 0),
and the micro-batch loss is L_label + λ · L_rationale. With gradient
accumulation the optimizer step follows the mean of the micro-batch losses
(the Trainer divides each by the accumulation steps); across GPUs DDP
averages the per-device gradients. Evaluation loss is the same formula.

TRL 1.16 has no per-example loss weight, so each row carries a
`is_rationale` column (1 for rationale rows, 0 for label rows) that a
collator passes through as a tensor and `compute_loss` splits the batch by.
"""

from __future__ import annotations

from kdpipe.train.trainers.base import Recipe, count_tokens

TASK_COLUMN = "is_rationale"


class DistillingStepByStep(Recipe):
    name = "dss"
    extra_columns = (TASK_COLUMN,)
    # (and TRL refuses a custom collator in padding-free mode)
    no_packing = ("--packing cannot be used on dss data (packed batches cannot keep the label and rationale "
                  "tasks apart for the two-task loss)")

    def loss(self, opts) -> str:
        return f"L_label + {opts.rationale_weight:g} * L_rationale (per-task token means)"

    def rows(self, rows):
        return [dict(d, **{TASK_COLUMN: int(r["task"] == "rationale")}) for d, r in zip(super().rows(rows), rows)]

    def build(self, model, tokenizer, train_ds, val_ds, opts, *, args, peft_config, callbacks):
        collator_cls, trainer_cls = weighted_trainer_classes()
        return trainer_cls(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                           processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
                           data_collator=collator_cls(pad_token_id=tokenizer.pad_token_id),
                           rationale_weight=opts.rationale_weight)


def dss_loss(token_loss, mask, is_rationale, rationale_weight: float):
    """(L_label + λ·L_rationale, L_label, L_rationale) of one batch.

    `token_loss` [batch, time]: each token's cross-entropy; `mask` [batch, time]: the
    completion tokens that count; `is_rationale` [batch]: 1 for rationale rows. A task
    absent from the batch has loss 0 (a tensor, so the sum stays on the graph).
    """
    token_loss = token_loss.float()
    mask = mask.to(token_loss.dtype)
    rationale_rows = is_rationale.to(token_loss.device).bool().unsqueeze(1)
    losses = []
    for rows in (~rationale_rows, rationale_rows):
        task_mask = mask * rows.to(mask.dtype)
        losses.append((token_loss * task_mask).sum() / task_mask.sum().clamp(min=1))
    label_loss, rationale_loss = losses
    return label_loss + rationale_weight * rationale_loss, label_loss, rationale_loss


def weighted_trainer_classes():
    """(collator class, trainer class), built lazily so that importing kdpipe stays light.

    The trainer takes `rationale_weight=λ` besides SFTTrainer's own arguments.
    """
    import torch
    from trl import SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class TaskCollator(DataCollatorForLanguageModeling):
        def torch_call(self, examples):
            tasks = torch.tensor([int(e.get(TASK_COLUMN, 0)) for e in examples])
            batch = super().torch_call([{k: v for k, v in e.items() if k != TASK_COLUMN} for e in examples])
            batch[TASK_COLUMN] = tasks
            return batch

    class DssSFTTrainer(SFTTrainer):
        # The loss below is a per-micro-batch mean: the Trainer divides it by the
        # gradient accumulation steps (it must not assume it was scaled already).
        loss_is_scaled_for_ga = False

        def __init__(self, *args, rationale_weight: float = 1.0, **kwargs):
            self.rationale_weight = float(rationale_weight)
            super().__init__(*args, **kwargs)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if TASK_COLUMN not in self._signature_columns:
                self._signature_columns = list(self._signature_columns) + [TASK_COLUMN]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            tasks = inputs.pop(TASK_COLUMN)
            labels = inputs["labels"]
            # TRL's fused LM head (added by SFTTrainer) gives each next token's log-probability
            # without materialising the [batch, time, vocab] logits.
            outputs = model(**inputs, use_cache=False, fused_lm_head=True)
            mask = labels[:, 1:] != -100
            loss, _, _ = dss_loss(-outputs.log_probs, mask.to(outputs.log_probs.device), tasks,
                                  self.rationale_weight)
            count_tokens(self, inputs.get("attention_mask"))
            return (loss, outputs) if return_outputs else loss

    return TaskCollator, DssSFTTrainer
