"""`teacher serve --model DIR`: a local Hugging Face causal LM behind the loopback's OpenAI-compatible API.

It samples for real (greedy at temperature 0) token by token, and reports with
each token the logprob and the 20 most likely tokens of the model's own
log-softmax at that position (before temperature, as OpenAI reports them), in
the API's form; the server cuts the list to the request's `top_logprobs`.
It stops where local generation stops (kdpipe/decoding.py stop tokens), at a
`stop` string, or at `max_tokens`.

Answers are computed one request at a time on the event loop: a teacher for
tests, demos and small runs, not a serving stack.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdpipe.loopback import LoopbackTeacher
from kdpipe.token_logprobs import MAX_TOP
from kdpipe.token_text import piece

DEFAULT_MAX_TOKENS = 256


class Generated(str):
    """A completion text that carries its tokens' logprobs in the API's form (`.logprobs`) and why
    it ended (`.finish`: "stop", or "length" at max_tokens)."""

    logprobs: dict
    finish: str = "stop"


@dataclass
class ModelTeacher(LoopbackTeacher):
    model_dir: Path | None = None
    model: Any = field(default=None, repr=False)
    tokenizer: Any = field(default=None, repr=False)

    def __post_init__(self):
        super().__post_init__()
        from kdpipe.decoding import stop_tokens
        from kdpipe.student import load_student, resolve_source

        if self.model is None:
            self.model, self.tokenizer = load_student(resolve_source(str(self.model_dir)))
        self.stops = set(stop_tokens(self.model, self.tokenizer).values())

    def identity(self) -> str:
        """Names the weights (file names, sizes, times), so that another checkpoint never shares cached answers."""
        h = hashlib.sha256()
        for f in sorted(Path(self.model_dir or ".").glob("*")):
            if f.is_file():
                h.update(f"{f.name}\0{f.stat().st_size}\0{f.stat().st_mtime_ns}\0".encode())
        return f"kdpipe-model:{h.hexdigest()[:16]}"

    def answer(self, body: dict) -> tuple[list[str], bool]:
        n = max(1, int(body.get("n") or 1))
        prompt = self.prompt_ids(body.get("messages") or [])
        max_tokens = int(body.get("max_tokens") or DEFAULT_MAX_TOKENS)
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        seed = body.get("seed")
        texts = []
        for i in range(n):
            rng_seed = int.from_bytes(hashlib.sha256(f"{seed}\0{i}\0{prompt}".encode()).digest()[:8], "big")
            texts.append(self.sample(prompt, float(body.get("temperature") or 0.0), max_tokens, stop, rng_seed))
        return texts, False

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return list(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                return_dict=True)["input_ids"])
        text = "\n".join(str(m.get("content") or "") for m in messages)
        return tok(text)["input_ids"]

    def sample(self, prompt: list[int], temperature: float, max_tokens: int, stop: list[str],
               rng_seed: int) -> Generated:
        import torch

        dev = next(self.model.parameters()).device
        gen = torch.Generator(device="cpu").manual_seed(rng_seed)
        ids: list[int] = []
        content: list[dict] = []
        text, finish, past = "", "length", None
        step = torch.tensor([prompt], device=dev)
        with torch.no_grad():
            for _ in range(max_tokens):
                out = self.model(input_ids=step, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[0, -1].float().cpu()
                logp = torch.log_softmax(logits, -1)
                if temperature <= 0:
                    chosen = int(torch.argmax(logits))
                else:
                    chosen = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen))
                if chosen in self.stops:
                    finish = "stop"
                    break
                top = torch.topk(logp, min(MAX_TOP, logp.numel()))
                content.append({**self._entry(prompt + ids, chosen, float(logp[chosen])), "top_logprobs": [
                    self._entry(prompt + ids, int(t), float(v)) for v, t in zip(top.values, top.indices)]})
                ids.append(chosen)
                text += content[-1]["token"]
                if any(s in text for s in stop):
                    text, content = _cut_at_stop(text, content, stop)
                    finish = "stop"
                    break
                step = torch.tensor([[chosen]], device=dev)
        done = Generated(text)
        done.logprobs = {"content": content}
        done.finish = finish
        return done

    def _entry(self, context: list[int], token_id: int, logprob: float) -> dict:
        text, raw = piece(self.tokenizer, context, token_id)
        return {"token": text, "logprob": logprob, "bytes": list(raw)}


def _cut_at_stop(text: str, content: list[dict], stop: list[str]) -> tuple[str, list[dict]]:
    """The text before the first stop string, and the tokens that lie wholly before it."""
    cut = min(text.find(s) for s in stop if s in text)
    kept, length = [], 0
    for item in content:
        if length + len(item["token"]) > cut:
            break
        kept.append(item)
        length += len(item["token"])
    return "".join(item["token"] for item in kept), kept
