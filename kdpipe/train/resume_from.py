"""`train --resume-from RUN`: start from the weights a finished run left, not from the base model.

A LoRA run's adapter is loaded onto the base model and trained further (its rank, alpha and
targets are the adapter's); a full fine-tuning run's weights are loaded in place of the base.
The new run stays a run of the same --student: its train_config.json names the base model
(so `eval` finds it under an adapter) and records the run it continued from.

Not `--resume`, which continues an interrupted run from the checkpoint in its own RUN_DIR
with the same data; --resume-from starts a new run, usually on new data (a loop round
trained on the new questions only). The two may be combined: a --resume-from run that was
interrupted continues with --resume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdpipe.errors import UsageError
from kdpipe.records import file_digest

_LORA_SHAPE = ("lora_r", "lora_alpha", "lora_dropout", "lora_targets")


@dataclass
class PreviousRun:
    run_dir: Path
    student: str  # the base model the run started from (resolved), as its train_config.json says
    full: bool  # full weights in run_dir, else a LoRA adapter
    options: dict[str, Any]

    @property
    def weights(self) -> Path:
        if not self.full:
            return self.run_dir / "adapter_model.safetensors"
        index = self.run_dir / "model.safetensors.index.json"  # a large model's shards
        return index if index.is_file() else self.run_dir / "model.safetensors"

    def record(self) -> dict[str, Any]:
        """What train_config.json keeps of the run continued from."""
        w = self.weights
        return {"run": str(self.run_dir.resolve()), "kind": "full" if self.full else "lora",
                "weights_digest": file_digest(w) if w.is_file() else None}


def previous_run(opts, run_dir: Path, student: str) -> PreviousRun | None:
    """The run --resume-from names, checked against this one (`student`: opts.student resolved);
    None without --resume-from. Every problem is reported at once, before a model is loaded."""
    if not opts.resume_from:
        return None
    prev_dir = Path(opts.resume_from)
    flag = f"--resume-from {prev_dir}"
    try:
        config = json.loads((prev_dir / "train_config.json").read_text(encoding="utf-8"))
        prev = PreviousRun(prev_dir, config["student"], bool(config["options"]["full"]), config["options"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"{flag}: not a finished `kdpipe train` run (no readable train_config.json)") from None
    problems = []
    if prev_dir.resolve() == Path(run_dir).resolve():
        problems.append(f"{flag} is the output run itself: write the new run to another -o")
    if prev.student != student:
        problems.append(f"{flag} was trained from {prev.student}, not --student {opts.student}: give that "
                        "student")
    if prev.full != bool(opts.full):
        problems.append(f"{flag} holds " + ("full weights: add --full" if prev.full else
                                            "a LoRA adapter: drop --full"))
    if opts.qlora:
        problems.append(f"{flag} does not continue a --qlora run yet")
    if not prev.weights.is_file():
        problems.append(f"{flag}: its weights ({prev.weights.name}) are missing")
    if problems:
        raise UsageError("; ".join(problems))
    return prev


def shape_note(opts, prev: PreviousRun) -> str | None:
    """A note when LoRA options were given that the previous adapter's shape overrides."""
    from kdpipe.train.options import TrainOptions

    given = [f"--{n.replace('_', '-')}" for n in _LORA_SHAPE
             if getattr(opts, n) != getattr(TrainOptions, n) and getattr(opts, n) != prev.options.get(n)]
    if prev.full or not given:
        return None
    return f"{', '.join(given)} ignored: the adapter of --resume-from {prev.run_dir} keeps its own shape"


def continue_adapter(model, prev: PreviousRun):
    """The base `model` with the previous run's adapter on it, trainable."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(prev.run_dir), is_trainable=True)
