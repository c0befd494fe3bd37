"""One decoding setup for local models: stop where the model's turn ends, decode truly greedily,
ask exactly as training rendered the prompt; tiny students in the conventions of real families."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import support_conventions as sc  # noqa: E402
import support_tiny as st  # noqa: E402

from kdpipe.evaluate import EvalOptions, run_eval  # noqa: E402
from kdpipe.prompt_format import render_prompt  # noqa: E402

END_OF_TURN = {"gemma": "<end_of_turn>", "phi3": "<|end|>", "qwen25_base": "<|im_end|>", "qwen3": "<|im_end|>"}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return st.build_student(tmp_path_factory.mktemp("base") / "student")


def _family(tmp_path: Path, family: str, base: Path) -> Path:
    return sc.build_family_student(tmp_path / family, family, base)


def _trained_run(tmp_path: Path, family: str, base: Path) -> Path:
    d = _family(tmp_path, family, base)
    sc.teach(d)
    return sc.as_run_dir(d)


@pytest.mark.parametrize("family", list(END_OF_TURN))
def test_stop_tokens_are_the_union_of_config_tokenizer_and_template(family, tmp_path, base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kdpipe.decoding import stop_tokens

    d = _family(tmp_path, family, base)
    tokenizer, model = AutoTokenizer.from_pretrained(d), AutoModelForCausalLM.from_pretrained(d)
    stops = stop_tokens(model, tokenizer)
    spec = sc.FAMILIES[family]
    assert set(stops) == {*spec["config_eos"], spec["eos"], END_OF_TURN[family]}
    assert all(tokenizer.convert_tokens_to_ids(t) == i for t, i in stops.items())


def _eval(run: Path, tmp_path: Path) -> tuple[dict, list[dict]]:
    ev = st.write_eval(tmp_path / "eval.jsonl")
    run_eval(ev, EvalOptions(model=str(run)), out=tmp_path / "eval.json")
    scores = json.loads((tmp_path / "eval.json").read_text())["models"][0]
    preds = [json.loads(x) for x in (tmp_path / "eval.predictions.jsonl").read_text().splitlines()]
    return scores, preds


# The union of stop tokens is checked for every family above; two trained students run by default.
@pytest.mark.parametrize("family", [pytest.param("gemma", marks=pytest.mark.slow),
                                    pytest.param("phi3", marks=pytest.mark.slow),
                                    pytest.param("qwen25_base"),
                                    pytest.param("qwen3")])
def test_a_trained_student_stops_at_the_end_of_its_turn(family, tmp_path, base):
    """A student that learned its family's turn structure answers and stops: the prediction is the
    answer alone (it ran on into the next user turn when only the tokenizer's EOS stopped it), and a
    Qwen3 student answers after the empty reasoning block its template writes (it was asked without
    the block, wrote it itself, and the answer was read as unparseable)."""
    scores, preds = _eval(_trained_run(tmp_path, family, base), tmp_path)
    wanted = {f"q{i}": f"({'abcdef'[st.CHOICES.index(a)]}) {a}" for i, (_, a) in enumerate(st.FACTS)}
    assert {p["id"]: p["text"] for p in preds} == wanted
    assert scores["accuracy"] == 1.0 and scores["unparsed"] == 0
    decoding = scores["decoding"]
    assert decoding["strategy"] == "greedy" and decoding["repetition_penalty"] == 1.0
    assert END_OF_TURN[family] in decoding["stop_tokens"]


def test_greedy_ignores_the_models_shipped_sampling_and_repetition_penalty(tmp_path, base):
    """A model whose generation config ships do_sample, temperature, top-k/top-p and repetition_penalty
    1.1 (as Qwen2.5-Instruct does) is decoded by argmax, token by token; eval.json says what it set aside."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = sc.as_run_dir(_family(tmp_path, "rep_penalty", base))
    scores, preds = _eval(run, tmp_path)
    tokenizer, model = AutoTokenizer.from_pretrained(run), AutoModelForCausalLM.from_pretrained(run)
    model.eval()
    by_id = {p["id"]: p["text"] for p in preds}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference loop recomputes every prefix: small work, best on one thread
    try:
        for i, (q, _) in enumerate(st.FACTS):
            user = render_prompt(sc.FORMAT, q, st.CHOICES, "answer")
            ids = tokenizer.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True,
                                                tokenize=True, return_dict=True)["input_ids"]
            out: list[int] = []
            with torch.no_grad():
                for _ in range(32):
                    nxt = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
                    if nxt == tokenizer.eos_token_id:
                        break
                    out.append(nxt)
            assert by_id[f"q{i}"] == tokenizer.decode(out, skip_special_tokens=True).strip()
    finally:
        torch.set_num_threads(threads)
    assert scores["decoding"]["model_config_ignored"] == {"repetition_penalty": 1.1, "do_sample": True,
                                                          "temperature": 0.7, "top_p": 0.8, "top_k": 20}


def test_prompt_is_the_conversation_rendered_whole_up_to_the_answer(tmp_path, base):
    """Qwen3's template writes an empty reasoning block before the answer of the last turn, so the
    training sequence (the conversation rendered whole) has it between the prompt and the answer;
    eval asks with it, and the training completion is then exactly the answer and the turn end."""
    from transformers import AutoTokenizer

    from kdpipe.student import encode_prompt

    for family, block in (("qwen3", "<think>\n\n</think>\n\n"), ("gemma", ""), ("qwen25_base", "")):
        tokenizer = AutoTokenizer.from_pretrained(_family(tmp_path, family, base))
        whole, _ = sc.conversation_ids(tokenizer, 0)
        asked = encode_prompt(tokenizer, render_prompt(sc.FORMAT, st.FACTS[0][0], st.CHOICES, "answer"), True)
        assert whole[:len(asked)] == asked, family
        assert tokenizer.decode(asked).endswith("assistant\n" + block if family != "gemma" else "model\n")
        rest = tokenizer.decode(whole[len(asked):])
        assert rest.startswith(f"(a) blue{END_OF_TURN[family]}"), (family, rest)
