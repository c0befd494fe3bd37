"""`kdpipe tiny-student`: the size options and the digit-splitting tokenizer, on a built and reloaded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CORPUS = [
    "Ava has 13 apples. Ben gives Ava 27 more. How many apples does Ava have now?",
    "Ava starts with 13 apples. Ben gives 27 more, so 13 + 27 = 40. The answer is 40.",
    "There are 4 boxes with 12 pencils in each box. 4 * 12 = 48. The answer is 48.",
] * 30


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t, "nested": {"more": [t.upper()]}}) + "\n" for t in CORPUS))
    return path


def _load(folder: Path):
    from transformers import AutoConfig, AutoTokenizer

    return AutoConfig.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def _pieces(tokenizer, text: str) -> list[str]:
    return [tokenizer.decode([i]) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def test_size_options_are_the_reloaded_model_shape(cli, corpus, tmp_path):
    code, _, err = cli("tiny-student", tmp_path / "s", "--corpus", corpus, "--layers", "3", "--hidden", "96",
                       "--heads", "6", "--vocab-size", "400", "--seed", "1")
    assert code == 0, err
    assert "3-layer Llama of width 96" in err
    config, _ = _load(tmp_path / "s")
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (3, 96, 6)
    assert config.intermediate_size == 192

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "s")
    assert len(model.model.layers) == 3 and model.config.vocab_size <= 400


def test_digits_are_single_tokens_by_default_and_merged_when_asked(cli, corpus, tmp_path):
    assert cli("tiny-student", tmp_path / "split", "--corpus", corpus, "--vocab-size", "400", "-q")[0] == 0
    assert cli("tiny-student", tmp_path / "bpe", "--corpus", corpus, "--vocab-size", "400", "--no-split-digits",
               "-q")[0] == 0
    text = "so 13 + 27 = 40. The answer is 40."
    _, split = _load(tmp_path / "split")
    pieces = _pieces(split, text)
    digits = [p.strip() for p in pieces if any(c.isdigit() for c in p)]
    assert digits == list("132740" + "40"), pieces
    assert split.decode(split(text, add_special_tokens=False)["input_ids"]) == text
    # Numbers the corpus repeats become single BPE tokens without the split.
    _, bpe = _load(tmp_path / "bpe")
    assert any(len(p.strip()) > 1 and p.strip().isdigit() for p in _pieces(bpe, text)), _pieces(bpe, text)


@pytest.mark.parametrize("args, message", [
    (("--hidden", "100", "--heads", "3"), "--hidden must be a positive multiple of --heads"),
    (("--layers", "0"), "--layers must be positive"),
    (("--vocab-size", "100"), "--vocab-size must be between 300 and 65536"),
])
def test_bad_sizes_get_one_line_and_write_nothing(cli, corpus, tmp_path, args, message):
    code, _, err = cli("tiny-student", tmp_path / "s", "--corpus", corpus, *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()
