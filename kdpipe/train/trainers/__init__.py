"""Trainers, one per loss: each file holds one `Recipe` that builds a transformers Trainer for `kdpipe
train` from the model, the tokenizer, the datasets and the options (see base.py).

    sft.py       plain SFT: token mean over completion tokens (TRL's SFTTrainer as it is)
    weighted.py  Distilling step-by-step: L_label + λ·L_rationale, per-task token means
    sparse_kd.py α·CE + (1−α)·τ²·KL on the teacher's stored top-K and a tail bucket (format --style kd)
    teacher_logits.py  white-box distillation from a teacher checkpoint's logits: offline or on-policy (GKD)

A trainer with another loss is one new file with a Recipe,
and one line in `pick` saying which data or option chooses it. The run directory, the data checks,
fitting and saving are shared (train/__init__.py, train/run_dir.py).
"""

from __future__ import annotations

from kdpipe.train.trainers.base import Recipe


def pick(has_rationale: bool, has_teacher: bool = False, teacher_model: bool = False) -> Recipe:
    """The recipe for this data: dss data (rows with a rationale task) always takes the two-task loss,
    even at λ = 1, where a plain token mean would still weigh each task by its share of tokens; rows with
    the teacher's top-K (format --style kd) take the sparse KD loss. A teacher checkpoint
    (--teacher-model) takes the distillation loss on its logits, which keeps the two tasks apart on dss
    data too."""
    if teacher_model:
        from kdpipe.train.trainers.teacher_logits import TeacherLogits

        return TeacherLogits(has_rationale)
    if has_teacher and not has_rationale:
        from kdpipe.train.trainers.sparse_kd import SparseKD

        return SparseKD()
    if has_rationale:
        from kdpipe.train.trainers.weighted import DistillingStepByStep

        return DistillingStepByStep()
    from kdpipe.train.trainers.sft import PlainSFT

    return PlainSFT()
