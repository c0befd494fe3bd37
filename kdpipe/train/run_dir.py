"""The run directory of `kdpipe train`: checking it before training, saving the run into it after, and
naming the student so that the run can be used from anywhere.

RUN_DIR after a run:
    adapter_model.safetensors + adapter_config.json   (or full weights with --full)
    tokenizer files, prompt_format.json, train_config.json (options, the student resolved with the
    digest of its files, resolved trainer arguments, data digest and lineage, results), metrics.jsonl
    (one line per logging step), loss.png, README.md (the model card, hub/cards.py), checkpoints/
    (for --resume), merged/ (--merge), tensorboard/ (--report-to tensorboard), eval_results.json (eval)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from kdpipe.errors import KdpipeError
from kdpipe.train.launch import main_process  # under a launcher only RANK 0 checks, clears and writes RUN_DIR
from kdpipe.records import atomic_file, file_digest

METRICS = "metrics.jsonl"
LOSS_PNG = "loss.png"
CHECKPOINTS = "checkpoints"
# The files that make a model what it is; tokenizer files are saved into RUN_DIR itself.
_MODEL_FILES = ("config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json", "*.bin",
                "*.bin.index.json")


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse RUN_DIR when it cannot be used as asked; changes nothing."""
    if not main_process():
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise KdpipeError(f"{run_dir}: exists and is not a directory")
    has_content = run_dir.is_dir() and any(run_dir.iterdir())
    if resume:
        ckpts = list((run_dir / CHECKPOINTS).glob("checkpoint-*")) if run_dir.is_dir() else []
        if not ckpts:
            raise KdpipeError(f"{run_dir}: no checkpoint to resume from (in {run_dir / CHECKPOINTS})")
    elif has_content:
        if not overwrite:
            raise KdpipeError(f"{run_dir}: not empty; pass --resume to continue its run or --overwrite "
                              "to start over")


def clear_run_dir(run_dir: Path, overwrite: bool) -> None:
    """--overwrite: delete the previous run, once everything that could refuse the new one has been built."""
    if main_process() and overwrite and run_dir.is_dir():
        shutil.rmtree(run_dir)


def resolved_student(spec: str) -> str:
    """A local model folder as an absolute path (eval then finds the base model from any directory);
    a hub id as it is."""
    return str(Path(spec).expanduser().resolve()) if Path(spec).expanduser().exists() else spec


def student_digest(student: str) -> dict[str, str] | None:
    """The digests of a local model's config and weight files, by name; None for a hub id."""
    folder = Path(student)
    if not folder.is_dir():
        return None
    files = sorted({p for pattern in _MODEL_FILES for p in folder.glob(pattern) if p.is_file()})
    return {p.name: file_digest(p) for p in files}


def save_run(trainer, tokenizer, run_dir: Path, config: dict[str, Any], prompt_format: dict[str, Any], *,
             merge_from: str | None, trust_remote_code: bool, say) -> None:
    """Write the model, tokenizer, prompt format, loss picture and train_config.json into RUN_DIR
    (on the main process); `merge_from`: the base model to fold the adapter into (--merge)."""
    from kdpipe.student import MERGED, PROMPT_FORMAT, TRAIN_CONFIG
    from kdpipe.train.log import plot_losses
    from kdpipe.hub.cards import write_model_card

    if not trainer.is_world_process_zero():
        return
    trainer.save_model(str(run_dir))
    tokenizer.save_pretrained(str(run_dir))
    write_json(run_dir / PROMPT_FORMAT, prompt_format)
    if merge_from:
        say("train: merging the adapter into the base weights")
        merge_adapter(merge_from, run_dir, run_dir / MERGED, trust_remote_code)
    plot_losses(run_dir / METRICS, run_dir / LOSS_PNG)
    write_json(run_dir / TRAIN_CONFIG, config)
    write_model_card(run_dir)


def merge_adapter(base: str, adapter_dir: Path, out_dir: Path, trust_remote_code: bool = False) -> Path:
    """Fold a LoRA adapter into its base weights; the result loads with AutoModelForCausalLM."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto", trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out_dir))
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(out_dir))
    return out_dir


def write_json(path: Path, obj: Any) -> None:
    with atomic_file(path) as fp:
        json.dump(obj, fp, indent=2, ensure_ascii=False, default=str)
        fp.write("\n")
