"""The weighted multi-task loss of Distilling step-by-step, on top of TRL's SFTTrainer.

TRL 1.16 has no per-example loss weight. Each `dss` example carries a
`loss_weight` column (λ for rationale rows, 1 for label rows); a collator
passes it through as a tensor and `compute_loss` scales each sequence's
token losses by it:

    loss = sum_i w_i * sum_t ce(i, t) / (number of completion tokens)

With every weight 1 this is exactly TRL's own token-mean loss, so λ = 1
reproduces plain SFT and λ scales the rationale task's share of the gradient.
"""

from __future__ import annotations

WEIGHT_COLUMN = "loss_weight"


def weighted_trainer_classes():
    """(collator class, trainer class), built lazily so that importing kdpipe stays light."""
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class WeightedCollator(DataCollatorForLanguageModeling):
        def torch_call(self, examples):
            weights = torch.tensor([float(e.get(WEIGHT_COLUMN, 1.0)) for e in examples])
            batch = super().torch_call([{k: v for k, v in e.items() if k != WEIGHT_COLUMN} for e in examples])
            batch[WEIGHT_COLUMN] = weights
            return batch

    class WeightedSFTTrainer(SFTTrainer):
        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if WEIGHT_COLUMN not in self._signature_columns:
                self._signature_columns = list(self._signature_columns) + [WEIGHT_COLUMN]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights = inputs.pop(WEIGHT_COLUMN)
            labels = inputs.pop("labels")
            outputs = model(**inputs, use_cache=False)
            logits = outputs.logits[:, :-1, :].float()
            targets = labels[:, 1:]
            token_loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                         ignore_index=-100, reduction="none").view(targets.shape)
            mask = targets != -100
            per_sequence = (token_loss * mask).sum(dim=1)
            n_tokens = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = (per_sequence * weights.to(per_sequence.dtype)).sum() / torch.as_tensor(n_tokens).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            if self.model.training and "attention_mask" in inputs:
                self._total_train_tokens += int(
                    self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item())
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return (loss, outputs) if return_outputs else loss

    return WeightedCollator, WeightedSFTTrainer
