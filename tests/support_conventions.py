"""Tiny students dressed in the stop-token and chat-template conventions of real model families.

Built on support_tiny's tiny student (its tokenizer and a 2-layer Llama), with the special
tokens, chat template, tokenizer EOS and generation config of:

    gemma        turns end with <end_of_turn>; the tokenizer's EOS is <eos>; the generation
                 config stops on both (Gemma 2/3 instruct)
    phi3         turns end with <|end|>; the tokenizer's EOS is <|endoftext|> (Phi-3)
    qwen25_base  a ChatML template (<|im_end|>) on a base model whose tokenizer and generation
                 config know only <|endoftext|> (Qwen2.5 base with a chat template)
    qwen3        ChatML whose template writes an empty <think>\\n\\n</think>\\n\\n before the
                 answer of the last turn (Qwen3)
    rep_penalty  support_tiny's own conventions, with a generation config that ships
                 repetition_penalty 1.1, temperature and top-k (Qwen2.5-Instruct style)

`teach` trains a student (full fine-tuning, plain torch) on each eval question's
conversation as its template renders it, followed by the next question's user turn:
a model that learned the turn structure, which runs on into the next turn unless
generation stops at the end of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import support_tiny as st

from kdpipe.prompt_format import PromptFormat, render_completion, render_prompt

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' and think and loop.last %}<think>\n\n</think>\n\n{% endif %}"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

FAMILIES = {
    "gemma": dict(
        special=["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"], plain=[],
        eos="<eos>", bos="<bos>", pad="<pad>", config_eos=["<eos>", "<end_of_turn>"],
        template=("{{ bos_token }}{% for m in messages %}<start_of_turn>"
                  "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] | trim }}"
                  "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")),
    "phi3": dict(
        special=["<|endoftext|>", "<|end|>", "<|user|>", "<|assistant|>"], plain=[],
        eos="<|endoftext|>", bos=None, pad="<|endoftext|>", config_eos=["<|endoftext|>", "<|end|>"],
        template=("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
                  "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")),
    "qwen25_base": dict(
        special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], plain=[],
        eos="<|endoftext|>", bos=None, pad="<|endoftext|>", config_eos=["<|endoftext|>"],
        template=CHATML.replace("think and loop.last", "false")),
    "qwen3": dict(
        special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], plain=["<think>", "</think>"],
        eos="<|im_end|>", bos=None, pad="<|endoftext|>", config_eos=["<|im_end|>", "<|endoftext|>"],
        template=CHATML.replace("think and loop.last", "loop.last")),
    "rep_penalty": dict(
        special=[], plain=[], eos=None, bos=None, pad=None, config_eos=None, template=None,
        config_extra=dict(do_sample=True, repetition_penalty=1.1, temperature=0.7, top_k=20, top_p=0.8)),
}


def build_family_student(out_dir: Path, family: str, base: Path) -> Path:
    """The student `base` (support_tiny.build_student) with the tokens, template, EOS and generation
    config of `family`, saved to `out_dir`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    spec = FAMILIES[family]
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    if spec["special"]:
        tokenizer.add_special_tokens({"additional_special_tokens": spec["special"]})
    if spec["plain"]:
        tokenizer.add_tokens(spec["plain"])
    for role in ("eos", "bos", "pad"):
        if spec[role]:
            setattr(tokenizer, f"{role}_token", spec[role])
    if spec["template"]:
        tokenizer.chat_template = spec["template"]
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    ids = tokenizer.convert_tokens_to_ids
    config_eos = [ids(t) for t in spec["config_eos"]] if spec["config_eos"] else tokenizer.eos_token_id
    model.config.eos_token_id = config_eos
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config = GenerationConfig(eos_token_id=config_eos, pad_token_id=tokenizer.pad_token_id,
                                               **spec.get("config_extra", {}))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


FORMAT = PromptFormat(style="label", chat=True)


def conversation_ids(tokenizer, i: int) -> tuple[list[int], int]:
    """(token ids, where the answer starts) of question i answered, then question i+1's user turn."""
    q, a = st.FACTS[i]
    nq = st.FACTS[(i + 1) % len(st.FACTS)][0]
    user = {"role": "user", "content": render_prompt(FORMAT, q, st.CHOICES, "answer")}
    answered = [user, {"role": "assistant", "content": render_completion(FORMAT, "answer", a, st.CHOICES)}]
    ids = tokenizer.apply_chat_template(answered, tokenize=True, return_dict=True)["input_ids"]
    prompt = tokenizer.apply_chat_template([user], add_generation_prompt=True, tokenize=True,
                                           return_dict=True)["input_ids"]
    follow = tokenizer.apply_chat_template(
        [{"role": "user", "content": render_prompt(FORMAT, nq, st.CHOICES, "answer")}], tokenize=True,
        return_dict=True)["input_ids"]
    return list(ids) + list(follow), len(prompt)


def teach(model_dir: Path, steps: int = 80) -> None:
    """Fine-tune the student in place on every question's conversation (see the module docstring)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains several times faster on one thread
    try:
        _teach(model_dir, steps)
    finally:
        torch.set_num_threads(threads)


def _teach(model_dir: Path, steps: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    rows = [conversation_ids(tokenizer, i) for i in range(len(st.FACTS))]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    for r, (ids, start) in enumerate(rows):
        input_ids[r, :len(ids)] = torch.tensor(ids)
        labels[r, start:len(ids)] = torch.tensor(ids[start:])
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(model_dir)


def as_run_dir(model_dir: Path) -> Path:
    """Mark a model folder as a run directory of a label-style chat student (what `train` writes)."""
    (model_dir / "train_config.json").write_text(json.dumps({"student": str(model_dir)}))
    (model_dir / "prompt_format.json").write_text(json.dumps(FORMAT.to_dict()))
    return model_dir
