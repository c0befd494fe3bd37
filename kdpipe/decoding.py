"""One decoding setup for every place kdpipe generates with a local model.

`eval` asks the student and the baseline with it; a local teacher
(`teacher serve --model`) and on-policy distillation are meant to reuse it, so
that all of them stop where the model stops and decode the same way:

- Stop on the union of the model's generation-config EOS ids, the tokenizer's
  EOS and the chat template's end-of-turn token. Gemma ends a turn with
  `<end_of_turn>` but its tokenizer's EOS is `<eos>`; Phi-3 ends with `<|end|>`;
  a Qwen2.5 base model with a chat template ends with `<|im_end|>` while its
  generation config knows only `<|endoftext|>`. Any one of them alone lets the
  model run on to the token limit.
- Greedy means greedy: the model's shipped generation config (Qwen2.5-Instruct's
  `repetition_penalty` 1.05-1.1, a temperature, top-k/top-p) is set aside for an
  explicit one, because `do_sample=False` alone keeps the repetition penalty,
  which penalises the digits of the question.

`record()` is what `eval.json` stores of it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from kdpipe.errors import UsageError

# Text no chat template writes by itself: where it lands in a rendered turn shows what surrounds an answer.
PROBE = "kdpipe-probe-answer"


@dataclass
class Decoding:
    """How a local model generates: greedy unless `sample` is set."""

    max_new_tokens: int = 256
    sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off

    def validate(self) -> None:
        problems = []
        if self.max_new_tokens <= 0:
            problems.append("max new tokens must be positive")
        if not self.temperature > 0:
            problems.append("temperature must be positive")
        if not 0 < self.top_p <= 1:
            problems.append("top-p must be in (0, 1]")
        if self.top_k < 0:
            problems.append("top-k must be 0 (off) or positive")
        if problems:
            raise UsageError("; ".join(problems))


def end_of_turn_ids(tokenizer) -> list[int]:
    """The token the chat template closes an assistant turn with (`<end_of_turn>`, `<|im_end|>`), if any."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    messages = [{"role": "user", "content": "?"}, {"role": "assistant", "content": PROBE}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # noqa: BLE001 - a template that refuses this probe has no turn end to learn from
        return []
    at = text.rfind(PROBE)
    if at < 0:
        return []
    after = tokenizer(text[at + len(PROBE):], add_special_tokens=False)["input_ids"]
    added = set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    return [after[0]] if after and after[0] in added else []


def stop_tokens(model, tokenizer) -> dict[str, int]:
    """{token: id} of every token generation stops on, in the order found."""
    ids: list[int] = []
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += list(config_eos) if isinstance(config_eos, (list, tuple)) else [config_eos]
    ids.append(tokenizer.eos_token_id)
    ids += end_of_turn_ids(tokenizer)
    return {tokenizer.convert_ids_to_tokens(i): i for i in dict.fromkeys(ids) if isinstance(i, int)}


def generation_config(decoding: Decoding, stops: dict[str, int], pad_token_id: int | None):
    """An explicit GenerationConfig: nothing left for the model's own config to fill in."""
    from transformers import GenerationConfig

    settings: dict[str, Any] = dict(
        max_new_tokens=decoding.max_new_tokens, do_sample=decoding.sample, num_beams=1,
        eos_token_id=list(stops.values()), pad_token_id=pad_token_id,
        repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0)
    if decoding.sample:
        settings.update(temperature=decoding.temperature, top_p=decoding.top_p, top_k=decoding.top_k)
    return GenerationConfig(**settings)


@contextmanager
def only_this_config(model, config):
    """The model's generation config replaced by `config` for the duration: `generate` fills every
    unset value from the model's own config, and this leaves it nothing to fill."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = target.generation_config
    target.generation_config = config
    try:
        yield
    finally:
        target.generation_config = saved


def record(decoding: Decoding, stops: dict[str, int], model=None) -> dict[str, Any]:
    """What eval.json stores: the strategy, its settings, the stop tokens, and what of the model's own
    generation config was set aside."""
    out: dict[str, Any] = {"strategy": "sampling" if decoding.sample else "greedy", **asdict(decoding),
                           "repetition_penalty": 1.0, "stop_tokens": stops}
    if not decoding.sample:
        for key in ("temperature", "top_p", "top_k"):
            out.pop(key)
    shipped = getattr(model, "generation_config", None)
    neutral = {"repetition_penalty": 1.0, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "top_k": 50,
               "no_repeat_ngram_size": 0}
    ignored = {k: getattr(shipped, k, None) for k in neutral
               if getattr(shipped, k, None) not in (None, neutral[k])}
    if ignored:
        out["model_config_ignored"] = ignored
    return out


def generate(model, tokenizer, prompts: list[list[int]], decoding: Decoding, batch_size: int,
             stops: dict[str, int] | None = None) -> list[str]:
    """Completions of tokenized prompts, batched (left padding), in input order."""
    import torch

    decoding.validate()
    stops = stop_tokens(model, tokenizer) if stops is None else stops
    config = generation_config(decoding, stops, tokenizer.pad_token_id)
    dev = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad less
    outputs: list[str] = [""] * len(prompts)
    pad = tokenizer.pad_token_id
    with only_this_config(model, config):
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                n = len(prompts[i])
                ids[row, width - n:] = torch.tensor(prompts[i])
                mask[row, width - n:] = 1
            with torch.no_grad():
                out = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), generation_config=config)
            for row, i in enumerate(idx):
                outputs[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True).strip()
    return outputs
