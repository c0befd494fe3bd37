"""Sparse knowledge distillation on the teacher's stored top-K (rows of `format --style kd`).

At each completion position where the row carries the teacher's distribution,
the K listed tokens and one tail bucket (the mass the teacher left unlisted)
form a distribution of K + 1 outcomes for the teacher,

    P_T = (p_1, ..., p_K, 1 - Σ p_k) / norm   (norm > 1 only when rounding made Σ p_k exceed 1)

and the same outcomes under the student's full softmax, P_S = (q_1, ..., q_K,
1 - Σ q_k). With temperature τ both are sharpened or flattened as
P^τ ∝ P^(1/τ), and the position's loss is

    α · CE(y) + (1 − α) · τ² · KL(P_T^τ ‖ P_S^τ)

(Hinton et al.'s loss with the vocabulary folded into K + 1 outcomes), y the
sampled token. Positions without a teacher distribution (the end-of-turn
token the chat template adds, a row without one) take plain CE. The batch
loss is the mean over completion tokens, so α = 1 is exactly the SFT loss.

The teacher's tokens are mapped to the student's ids before training
(token_text.py: exact when the two share a tokenizer); a token with no exact
match stops the run with one line naming it. The student's tokens of a
completion are matched to the teacher's one by one; from the first that
differs (a sampled sequence the student's tokenizer would split another
way) the row falls back to CE.
"""

from __future__ import annotations

from typing import Any

from kdpipe.errors import KdpipeError, UsageError
from kdpipe.token_logprobs import top_k
from kdpipe.token_text import token_id, vocabulary
from kdpipe.train.trainers.base import Recipe, count_tokens

COLUMNS = ("kd_tokens", "kd_ids", "kd_logprobs")


class SparseKD(Recipe):
    name = "sparse_kd"
    extra_columns = COLUMNS
    no_packing = "--packing cannot be used with the sparse KD loss (it reads each row's teacher distribution)"

    def loss(self, opts) -> str:
        return (f"{opts.kd_alpha:g} * CE + {1 - opts.kd_alpha:g} * tau^2 * KL(teacher top-K + tail || student), "
                f"tau {opts.kd_temperature:g}, K {opts.kd_top_k or 'all stored'}; token mean")

    def prepare(self, rows: list[dict[str, Any]], tokenizer, opts) -> None:
        """The teacher's tokens of each row as student ids (columns kd_*); refuses a token that does not map."""
        vocab = vocabulary(tokenizer)
        for row in rows:
            teacher = row.get("teacher")
            row.update(kd_tokens=[], kd_ids=[], kd_logprobs=[])
            if not teacher:
                continue
            k = opts.kd_top_k or top_k(teacher)
            if k > top_k(teacher):
                raise UsageError(f"--kd-top-k {k}: the rows hold only {top_k(teacher)} teacher alternatives per "
                                 f"token (generate --logprobs {top_k(teacher)})")
            n = len(teacher["tokens"])
            raw = teacher.get("bytes") or [None] * n
            top_raw = teacher.get("top_bytes") or [[None] * len(t) for t in teacher["top_tokens"]]
            for pos in range(n):
                row["kd_tokens"].append(_mapped(vocab, teacher["tokens"][pos], raw[pos], row))
                row["kd_ids"].append([_mapped(vocab, t, b, row) for t, b in
                                      zip(teacher["top_tokens"][pos][:k], top_raw[pos][:k])])
                row["kd_logprobs"].append(teacher["top_logprobs"][pos][:k])

    def rows(self, rows):
        return [dict(d, **{c: r.get(c, []) for c in COLUMNS}) for d, r in zip(super().rows(rows), rows)]

    def build(self, model, tokenizer, train_ds, val_ds, opts, *, args, peft_config, callbacks):
        collator_cls, trainer_cls = trainer_classes()
        return trainer_cls(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                           processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
                           data_collator=collator_cls(pad_token_id=tokenizer.pad_token_id),
                           kd_alpha=opts.kd_alpha, kd_temperature=opts.kd_temperature)


def _mapped(vocab, text: str, raw, row) -> int:
    found = token_id(vocab, text, raw)
    if found is None:
        shown = repr(text) if raw is None else f"{text!r} (bytes {bytes(raw)!r})"
        raise KdpipeError(f"teacher token {shown} of row {row.get('id', '?')} is not a token of the student's "
                          "vocabulary: sparse KD needs a student that shares the teacher's tokenizer")
    return found


def sparse_kd_loss(logits, labels, kd_tokens, kd_ids, kd_logprobs, alpha: float, tau: float):
    """The batch loss (module docstring). logits [B, L, V]; labels [B, L] (-100: not trained);
    kd_tokens [B, T] the teacher's sampled ids (-1: none); kd_ids, kd_logprobs [B, T, K] its top-K
    (id -1: padding). The j-th trained token of a row is the teacher's j-th token."""
    import torch

    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    targets = labels[:, 1:].to(logp.device)
    mask = targets != -100
    ce = -logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    t_len, k = kd_ids.shape[1], kd_ids.shape[2]
    order = mask.long().cumsum(-1) - 1  # which completion token each position is
    j = order.clamp(0, max(t_len - 1, 0))
    has = mask & (order < t_len) & (t_len > 0)
    if t_len:
        teacher_tok = kd_tokens.to(logp.device).gather(1, j)
        has = has & (teacher_tok >= 0)
        differ = has & (teacher_tok != targets)
        first = torch.where(differ, order, torch.full_like(order, 1 << 30)).min(-1, keepdim=True).values
        has = has & (order < first)
    kl = torch.zeros_like(ce)
    if t_len and k:
        ids = kd_ids.to(logp.device).gather(1, j.unsqueeze(-1).expand(-1, -1, k))
        t_lp = kd_logprobs.to(logp.device).float().gather(1, j.unsqueeze(-1).expand(-1, -1, k))
        kl = bucket_kl(logp, ids, t_lp, tau)
    per_token = torch.where(has, alpha * ce + (1 - alpha) * tau ** 2 * kl, ce)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def bucket_kl(logp, ids, t_lp, tau: float):
    """KL(P_T^τ ‖ P_S^τ) over the K listed tokens and the tail, per position: logp [.., V] the student's
    log-softmax, ids [.., K] (-1: not listed), t_lp [.., K] the teacher's logprobs."""
    import torch

    valid = ids >= 0
    s_lp = logp.gather(-1, ids.clamp(min=0))
    t_p = torch.where(valid, t_lp.exp(), torch.zeros_like(t_lp))
    t_sum = t_p.sum(-1, keepdim=True)
    t_tail = (1 - t_sum).clamp(min=0)
    norm = t_sum + t_tail  # 1, or more when rounding pushed the listed mass over 1
    neg_inf = torch.full_like(t_lp, float("-inf"))
    t_log = torch.cat([torch.where(valid, t_lp, neg_inf), torch.log(t_tail)], -1) - torch.log(norm)
    s_listed = torch.where(valid, s_lp.exp(), torch.zeros_like(s_lp)).sum(-1, keepdim=True)
    s_tail = torch.log1p(-s_listed.clamp(max=1 - 1e-6))
    s_log = torch.cat([torch.where(valid, s_lp, neg_inf), s_tail], -1)
    t_log, s_log = torch.log_softmax(t_log / tau, -1), torch.log_softmax(s_log / tau, -1)
    t_q = t_log.exp()
    terms = torch.where(t_q > 0, t_q * (t_log - s_log.clamp(min=-1e4)), torch.zeros_like(t_q))
    return terms.sum(-1)


def trainer_classes():
    """(collator class, trainer class), built lazily so that importing kdpipe stays light."""
    import torch
    from trl import SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class KDCollator(DataCollatorForLanguageModeling):
        def torch_call(self, examples):
            kd = [{c: e.get(c) or [] for c in COLUMNS} for e in examples]
            batch = super().torch_call([{k: v for k, v in e.items() if k not in COLUMNS} for e in examples])
            t_len = max(len(x["kd_tokens"]) for x in kd)
            k = max((len(ids) for x in kd for ids in x["kd_ids"]), default=0)
            tokens = torch.full((len(kd), t_len), -1, dtype=torch.long)
            ids = torch.full((len(kd), t_len, k), -1, dtype=torch.long)
            lps = torch.zeros((len(kd), t_len, k))
            for b, x in enumerate(kd):
                tokens[b, :len(x["kd_tokens"])] = torch.tensor(x["kd_tokens"], dtype=torch.long)
                for pos, (row_ids, row_lps) in enumerate(zip(x["kd_ids"], x["kd_logprobs"])):
                    ids[b, pos, :len(row_ids)] = torch.tensor(row_ids, dtype=torch.long)
                    lps[b, pos, :len(row_lps)] = torch.tensor(row_lps)
            batch.update(kd_tokens=tokens, kd_ids=ids, kd_logprobs=lps)
            return batch

    class SparseKDTrainer(SFTTrainer):
        loss_is_scaled_for_ga = False  # a per-micro-batch mean, as in weighted.py

        def __init__(self, *args, kd_alpha: float = 0.5, kd_temperature: float = 1.0, **kwargs):
            self.kd_alpha, self.kd_temperature = float(kd_alpha), float(kd_temperature)
            super().__init__(*args, **kwargs)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            self._signature_columns = list(self._signature_columns) + [
                c for c in COLUMNS if c not in self._signature_columns]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            kd = [inputs.pop(c) for c in COLUMNS]
            labels = inputs.pop("labels")
            outputs = model(**inputs, use_cache=False)
            loss = sparse_kd_loss(outputs.logits, labels, *kd, self.kd_alpha, self.kd_temperature)
            count_tokens(self, inputs.get("attention_mask"))
            return (loss, outputs) if return_outputs else loss

    return KDCollator, SparseKDTrainer
