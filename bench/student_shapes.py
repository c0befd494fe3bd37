"""Random students of real architectures and synthetic SFT data, for benchmarks that need no model hub.

A shape is a JSON file in bench/configs/ holding the architecture fields of a
published model's config.json (hidden size, layers, heads, KV heads, MLP width,
vocabulary, RoPE, tied embeddings). `build_student` gives it random weights
and a byte-level BPE tokenizer trained here on the benchmark's own text (with
a chat template: kdpipe's tiny-student tokenizer). The tokenizer knows a few
thousand tokens; the model keeps the real vocabulary size, since the embedding
and output head cost what the real model's do: throughput, memory and MFU of
random weights are those of the real model. Training tokens are tokenizer
tokens, so the synthetic rows are sized in words to give realistic lengths.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TOKENIZER_VOCAB = 4096
CHOICES = ["alpha", "bravo", "charlie", "delta"]


def shape_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_shape(name: str) -> dict:
    """The config fields of shape `name` (a file in bench/configs/, or a path to such a JSON file)."""
    path = Path(name) if name.endswith(".json") else CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"unknown student shape {name!r}; known: {', '.join(shape_names())} "
                         f"(or a path to a config JSON)")
    return {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if not k.startswith("_")}


def shape_config(name: str, **extra):
    from transformers import AutoConfig

    fields = load_shape(name)
    return AutoConfig.for_model(fields.pop("model_type"), **fields, **extra)


def n_params(name: str) -> int:
    """Parameters of the shape (tied embeddings counted once), without allocating them."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(shape_config(name))
    return sum(p.numel() for p in model.parameters())


def tokenizer_dir(out_dir: Path, texts: list[str], vocab: int = TOKENIZER_VOCAB, seed: int = 0) -> Path:
    """A folder with kdpipe's tiny-student tokenizer trained on `texts` (and a tiny model, unused here)."""
    from kdpipe.libraries import quiet_libraries
    from kdpipe.tiny_student import TinyOptions, build_tiny_student

    quiet_libraries()
    return build_tiny_student(out_dir, texts, TinyOptions(vocab_size=vocab, seed=seed))


def build_student(name: str, out_dir: Path, texts: list[str], seed: int = 0,
                  tokenizer_vocab: int = TOKENIZER_VOCAB) -> Path:
    """Save a randomly initialised model of shape `name` with a tokenizer trained on `texts` to `out_dir`.

    Weights are built on the GPU when there is one (seconds for 1.5B parameters).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kdpipe.libraries import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory(prefix="kdpipe-tok.") as tmp:
        tokenizer = AutoTokenizer.from_pretrained(
            tokenizer_dir(Path(tmp), texts, min(tokenizer_vocab, load_shape(name)["vocab_size"]), seed))
    config = shape_config(name, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id)
    if config.vocab_size < len(tokenizer):
        raise SystemExit(f"shape {name}: vocab_size {config.vocab_size} is below the tokenizer's {len(tokenizer)}")
    torch.manual_seed(seed)
    cuda = torch.cuda.is_available()
    # bf16 on disk, as published checkpoints are; fp32 on a CPU, whose bf16 matmuls are slow.
    with torch.device("cuda" if cuda else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if cuda else torch.float32)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out_dir


def _lexicon(rng: random.Random, size: int = 1500) -> list[str]:
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables) for _ in range(rng.choice((1, 2, 2, 3)))))
    return sorted(words)


def _sentences(rng: random.Random, lexicon: list[str], n_words: int) -> str:
    words = [rng.choice(lexicon) for _ in range(n_words)]
    for i in range(11, n_words, 12):
        words[i] += "."
    return " ".join(words).capitalize().rstrip(".") + "."


def synthetic_records(n: int, question_words: int = 30, rationale_words: int = 300, seed: int = 0):
    """`n` multiple-choice records, each with one correct teacher sample carrying a rationale."""
    from kdpipe.records import Record, Sample

    rng = random.Random(seed)
    lexicon = _lexicon(rng)
    out = []
    for i in range(n):
        answer = rng.choice(CHOICES)
        rationale = _sentences(rng, lexicon, rationale_words)
        out.append(Record(id=f"b{i}", question=_sentences(rng, lexicon, question_words).rstrip(".") + "?",
                          task="choice", choices=CHOICES, gold=answer,
                          samples=[Sample(index=0, text=f"{rationale} The answer is {answer}.",
                                          rationale=rationale, answer=answer)]))
    return out


def corpus(records) -> list[str]:
    """Tokenizer training text: the records' questions, rationales and choices."""
    return [r.question for r in records] + [s.text for r in records for s in r.samples] + CHOICES


def write_sft(path: Path, records, style: str) -> Path:
    """SFT rows (all in the train split) and their .meta.json, written by kdpipe's own `format` stage."""
    from kdpipe.format import FormatOptions, run_format
    from kdpipe.records import write_records

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    source = path.with_name(path.stem + ".records.jsonl")
    write_records(source, records)
    run_format(source, path, FormatOptions(style=style, chat=True, val_frac=0.0, seed=0))
    return path


def without_rationale_task(dss_path: Path, out: Path) -> Path:
    """The rows of a dss file with the rationale task relabelled `cot`: `kdpipe train` then takes the
    plain token-mean loss over exactly the same tokens (no .meta.json: the style is inferred)."""
    rows = [json.loads(line) for line in Path(dss_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(out, "w", encoding="utf-8") as fp:
        for row in rows:
            if row.get("task") == "rationale":
                row["task"] = "cot"
            fp.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(out)


def mean_row_tokens(student_dir: Path, sft_path: Path) -> float:
    """Mean prompt + completion tokens per SFT row, tokenized as `kdpipe train` does."""
    from kdpipe.student import load_tokenizer
    from kdpipe.train.data import prompt_lengths, read_sft

    data = read_sft(sft_path)
    lengths = prompt_lengths(data.train, load_tokenizer(str(student_dir)), data.chat)
    return sum(pc for _, pc in lengths) / len(lengths)
