"""What a trainer recipe is: the small interface every file in trainers/ implements."""

from __future__ import annotations

from typing import Any


class Recipe:
    """Builds the Trainer of one loss. Heavy imports (torch, trl) happen inside `build`."""

    name: str = ""
    extra_columns: tuple[str, ...] = ()  # dataset columns besides prompt/completion that the loss reads
    no_packing: str | None = None  # why --packing cannot be used with this loss, if it cannot

    def loss(self, opts) -> str:
        """The loss in words, for train_config.json."""
        raise NotImplementedError

    def prepare(self, rows: list[dict[str, Any]], tokenizer, opts) -> None:
        """Check the rows against the student's tokenizer (and add what the loss reads) before a model
        is loaded; raise a KdpipeError naming what does not fit."""

    def rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The dataset rows of this loss from SFT rows (prompt, completion and `extra_columns`)."""
        return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]

    def args(self, config_cls, **kwargs):
        """The trainer arguments: `config_cls` (TRL's SFTConfig) with kdpipe's settings, or a subclass of it
        that this recipe's trainer needs."""
        return config_cls(**kwargs)

    def build(self, model, tokenizer, train_ds, val_ds, opts, *, args, peft_config, callbacks):
        """A transformers Trainer (an SFTTrainer or a subclass) ready for `.train()`.

        `args`: the SFTConfig built from the options; `peft_config`: LoRA or None (--full);
        `callbacks`: kdpipe's metrics log.
        """
        raise NotImplementedError


def count_tokens(trainer, attention_mask) -> None:
    """Keep TRL's `num_tokens` metric, which a trainer that overrides `compute_loss` would otherwise
    leave behind: the tokens of every training batch, across processes."""
    if trainer.model.training and attention_mask is not None:
        gathered = trainer.accelerator.gather_for_metrics(attention_mask.sum())
        trainer._total_train_tokens += int(gathered.sum().item())
    trainer._metrics["train" if trainer.model.training else "eval"]["num_tokens"] = [trainer._total_train_tokens]
