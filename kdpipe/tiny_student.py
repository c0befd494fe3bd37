"""A tiny, randomly initialised student for offline demos and tests.

No model hub is reachable on our machines, so the real `train`/`eval` code
path is exercised on a model built here: a byte-level BPE tokenizer trained
on the user's own text (with pad and chat-marker special tokens and a chat
template) and a small Llama (2 layers of width 64 unless asked otherwise). It
learns the surface of the data in a few hundred steps, and a narrow task such
as small-number arithmetic when it is made a little larger and trained fully;
it is not a useful model and is never presented as one.

By default the tokenizer splits every digit into a token of its own: BPE would
otherwise learn merges such as "13" or "20" from the corpus, so a number's
tokens would say nothing about its digits and a model from scratch could not
learn to compute with them.

A Llama config rather than Qwen2: a tiny Qwen2 reloads its tokenizer as
`Qwen2Tokenizer`, which swaps the pre-tokenizer and silently changes ids.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from kdpipe.errors import KdpipeError
from kdpipe.options import Options, option
from kdpipe.records import iter_json_objects

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|end|>"
USER, ASSISTANT, SYSTEM = "<|user|>", "<|assistant|>", "<|system|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, USER, ASSISTANT, SYSTEM]

# The assistant's text follows its marker directly (no newline), so the
# tokenized prompt is always a prefix of prompt + completion.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass
class TinyOptions(Options):
    vocab_size: int = option(768, "Tokenizer vocabulary size (at most).")
    layers: int = option(2, "Transformer layers.")
    hidden_size: int = option(64, "Hidden size (the MLP is twice as wide).", flags="--hidden")
    heads: int = option(4, "Attention heads (must divide --hidden).")
    split_digits: bool = option(True, "Give every digit a token of its own (numbers stay readable digit by "
                                      "digit, as arithmetic needs).", flags="--split-digits/--no-split-digits")
    max_positions: int = option(2048, cli=False)
    # 0.02 (the Llama default) leaves a random model of this size almost unable
    # to learn in a few dozen steps; 0.1 lets the loss fall visibly.
    initializer_range: float = option(0.1, cli=False)
    seed: int = option(0, "Seed of the random weights.")

    def problems(self) -> list[str]:
        problems = []
        if not 300 <= self.vocab_size <= 65536:
            problems.append("--vocab-size must be between 300 and 65536")
        if self.hidden_size <= 0 or self.heads <= 0 or self.hidden_size % self.heads:
            problems.append("--hidden must be a positive multiple of --heads")
        if self.layers <= 0:
            problems.append("--layers must be positive")
        return problems


def corpus_texts(path: str | os.PathLike) -> list[str]:
    """Every string value (nested ones included) of every object in a JSONL file."""
    texts: list[str] = []

    def collect(value) -> None:
        if isinstance(value, str):
            if value.strip():
                texts.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    for _, obj in iter_json_objects(path):
        collect(obj)
    if not texts:
        raise KdpipeError(f"{path}: no text to train a tokenizer on")
    return texts


def build_tiny_student(out_dir: str | os.PathLike, texts: Iterable[str],
                       opts: TinyOptions | None = None) -> Path:
    """Train a tokenizer on `texts`, build a random tiny Llama, save both to `out_dir`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    opts = opts or TinyOptions()
    opts.validate()
    out = Path(out_dir)
    texts = list(texts)
    if not texts:
        raise KdpipeError("no text to train the tokenizer on")

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if opts.split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=opts.vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS,
                                        eos_token=EOS, additional_special_tokens=[USER, ASSISTANT, SYSTEM])
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = opts.max_positions

    torch.manual_seed(opts.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=opts.hidden_size, intermediate_size=2 * opts.hidden_size,
        num_hidden_layers=opts.layers, num_attention_heads=opts.heads, num_key_value_heads=opts.heads,
        max_position_embeddings=opts.max_positions, initializer_range=opts.initializer_range,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, do_sample=False)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
