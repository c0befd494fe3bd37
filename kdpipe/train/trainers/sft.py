"""Plain SFT: TRL's SFTTrainer, loss the token mean over completion tokens (the prompt is masked)."""

from __future__ import annotations

from kdpipe.train.trainers.base import Recipe


class PlainSFT(Recipe):
    name = "sft"

    def loss(self, opts) -> str:
        return "token mean over completion tokens"

    def build(self, model, tokenizer, train_ds, val_ds, opts, *, args, peft_config, callbacks):
        from trl import SFTTrainer

        return SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
