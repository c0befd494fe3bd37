"""Loading a student (run directory, merged model or plain model) and asking it questions.

Shared by `train` (to validate the student before spending) and `eval`
(to generate answers). A run directory written by `kdpipe train` holds
`train_config.json`, `prompt_format.json`, the tokenizer, and either a LoRA
adapter (plus `merged/` with `--merge`) or full weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdpipe.errors import InputError, KdpipeError

TRAIN_CONFIG = "train_config.json"
PROMPT_FORMAT = "prompt_format.json"
MERGED = "merged"


# A model asked without a run directory (a baseline, an untrained student) is
# asked like a CoT student in chat form: the most a plain model can follow.
DEFAULT_FORMAT = {"style": "cot", "chat": True}


@dataclass
class StudentSource:
    """Where the weights of a student come from, resolved from a `--model` argument."""

    model: str  # folder or hub id that AutoModelForCausalLM loads
    adapter: str | None = None  # LoRA adapter folder to apply on top
    tokenizer: str = ""
    prompt_format: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_FORMAT))
    run_dir: str | None = None
    trust_remote_code: bool = False


def resolve_source(spec: str, prefer_merged: bool = True) -> StudentSource:
    """Resolve RUN_DIR | model folder | hub id into what to load, with one-line errors."""
    path = Path(spec)
    if path.is_dir() and (path / TRAIN_CONFIG).is_file():
        try:
            config = json.loads((path / TRAIN_CONFIG).read_text(encoding="utf-8"))
            assert isinstance(config, dict)
        except (ValueError, UnicodeDecodeError, AssertionError):
            raise InputError(path / TRAIN_CONFIG, "not a JSON object written by kdpipe train") from None
        fmt_file = path / PROMPT_FORMAT
        fmt = _stored_format(fmt_file) if fmt_file.is_file() else dict(DEFAULT_FORMAT)
        trust = bool(config.get("trust_remote_code", False))
        for folder in (path / MERGED, path):
            if (folder / "config.json").is_file():
                check_model_files(folder)
        if prefer_merged and (path / MERGED / "config.json").is_file():
            return StudentSource(str(path / MERGED), None, str(path / MERGED), fmt, str(path), trust)
        if (path / "adapter_config.json").is_file():
            return StudentSource(config["student"], str(path), str(path), fmt, str(path), trust)
        if (path / "config.json").is_file():
            return StudentSource(str(path), None, str(path), fmt, str(path), trust)
        raise KdpipeError(f"{spec}: run directory has no adapter and no model weights (did training finish?)")
    check_model_exists(spec)
    return StudentSource(spec, None, spec)


def _stored_format(path: Path) -> dict[str, Any]:
    from kdpipe.prompt_format import load_prompt_format

    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON: {e.msg}", e.lineno) from None
    return load_prompt_format(obj, str(path)).to_dict()


def check_model_files(folder: Path) -> None:
    """One line, before any library loads them, for a model folder's damaged files: a config.json
    that is not a JSON object, a .safetensors file cut short (a copy or a save that did not finish)."""
    from kdpipe.records import loads

    config = folder / "config.json"
    try:
        obj = loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(config, f"not a valid model config: {e}") from None
    if not isinstance(obj, dict):
        raise InputError(config, "not a valid model config: expected a JSON object")
    for weights in sorted(folder.glob("*.safetensors")):
        problem = _safetensors_problem(weights)
        if problem:
            raise InputError(weights, f"damaged weights file: {problem}")


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as fp:
        head = fp.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than a header"
        length = int.from_bytes(head, "little")
        if length > size - 8:
            return f"header of {length} bytes in a file of {size}"
        try:
            header = json.loads(fp.read(length))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "unreadable header"
    if 8 + length + end > size:
        return f"truncated: {size} bytes of {8 + length + end}"
    return None


def check_model_exists(spec: str, trust_remote_code: bool = False) -> None:
    """Fail with one line when `spec` is neither a model folder nor a reachable model id."""
    path = Path(spec)
    if path.exists():
        if not (path / "config.json").is_file():
            raise KdpipeError(f"{spec}: not a model folder (no config.json)")
        check_model_files(path)
        return
    looks_like_path = spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", "", 1)
    if looks_like_path:
        raise KdpipeError(f"{spec}: no such model folder")
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(spec, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KdpipeError(f"{spec}: no such model folder, and not a model id that can be loaded "
                          f"(offline or unknown id): {first}") from None


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(source: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        # Padding only fills masked positions; the end token is a safe stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_student(src: StudentSource):
    """(model, tokenizer) ready for generation, on the GPU when there is one."""
    import torch
    from transformers import AutoModelForCausalLM

    dev = device()
    dtype = torch.bfloat16 if dev == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(src.model, dtype=dtype,
                                                 trust_remote_code=src.trust_remote_code)
    if src.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, src.adapter)
    model.to(dev).eval()
    tokenizer = load_tokenizer(src.tokenizer or src.model, src.trust_remote_code)
    return model, tokenizer


def encode_prompt(tokenizer, text: str, chat: bool) -> list[int]:
    """Token ids of a prompt exactly as training saw them before the completion.

    TRL renders the whole conversation (prompt + completion) and trains on what follows
    the prompt; a template that writes something of its own before the answer (Qwen3's
    empty `<think>\\n\\n</think>\\n\\n`) puts it there, so the model learned to
    answer after it. The prompt is therefore the conversation rendered whole up to
    where the answer starts, which for most templates is the generation prompt itself.
    """
    if not chat:
        return tokenizer(text=text)["input_ids"]
    from kdpipe.decoding import PROBE

    messages = [{"role": "user", "content": text}]
    whole = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": PROBE}], tokenize=False)
    at = whole.find(PROBE)
    if at < 0:  # a template that rewrites the answer: the generation prompt is the best guess
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                             return_dict=True)["input_ids"]
    return tokenizer(whole[:at], add_special_tokens=False)["input_ids"]
