"""teacher serve --model: a local model behind the OpenAI API, its logprobs its own log-softmax."""

import pytest
import torch

from kdpipe.generate import GenerateOptions, run_generate
from kdpipe.label_prompts import label_prompts, label_requests
from kdpipe.loopback import running
from kdpipe.loopback.model import ModelTeacher
from kdpipe.records import load_records, write_records
from kdpipe.token_text import token_id, vocabulary
from support_tiny import build_student, eval_records


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return ModelTeacher(model_dir=build_student(tmp_path_factory.mktemp("teacher") / "model"))


def test_generate_logprobs_against_a_served_model_match_its_own_log_softmax(teacher, tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    write_records(seeds, [r for r in eval_records()[:3]])
    out = tmp_path / "out.jsonl"
    with running(teacher=teacher) as srv:
        r = run_generate(seeds, out, GenerateOptions(model="local", base_url=srv.base_url, logprobs=5,
                                                     max_tokens=10, cache=tmp_path / "c.sqlite"))
        sent = srv.stats["requests"]
        run_generate(seeds, tmp_path / "again.jsonl", GenerateOptions(
            model="local", base_url=srv.base_url, logprobs=5, max_tokens=10, cache=tmp_path / "c.sqlite"))
        assert srv.stats["requests"] == sent == 3
    assert r.counts["samples"] == 3
    records = load_records(out)
    assert [s.logprobs for rec in records for s in rec.samples] == \
        [s.logprobs for rec in load_records(tmp_path / "again.jsonl") for s in rec.samples]
    requests = label_requests(records, label_prompts(records, None), 1)
    vocab = vocabulary(teacher.tokenizer)
    for rec, req in zip(records, requests):
        lp = rec.samples[0].logprobs
        n = len(lp["tokens"])
        assert n > 0 and "".join(lp["tokens"]) == rec.samples[0].text
        ids = [token_id(vocab, t, b) for t, b in zip(lp["tokens"], lp.get("bytes") or [None] * n)]
        assert None not in ids
        prompt = teacher.prompt_ids(req.messages)
        with torch.no_grad():
            logits = teacher.model(input_ids=torch.tensor([prompt + ids])).logits[0].float()
        logp = torch.log_softmax(logits[len(prompt) - 1: -1], -1)
        tops = lp.get("top_bytes") or [[None] * 5] * n
        for pos in range(n):
            assert int(torch.argmax(logp[pos])) == ids[pos]  # temperature 0: greedy
            assert lp["logprobs"][pos] == pytest.approx(float(logp[pos, ids[pos]]), abs=1e-3)
            want = torch.topk(logp[pos], 5).values.tolist()
            assert lp["top_logprobs"][pos] == pytest.approx(want, abs=1e-3)
            for text, raw, value in zip(lp["top_tokens"][pos], tops[pos], lp["top_logprobs"][pos]):
                alt = token_id(vocab, text, raw)
                assert alt is not None and float(logp[pos, alt]) == pytest.approx(value, abs=1e-3)


def test_sampling_is_seeded_and_a_stop_string_cuts_text_and_tokens(teacher):
    body = {"messages": [{"role": "user", "content": "What colour is snow?"}], "temperature": 1.0, "n": 2,
            "max_tokens": 8, "seed": 3}
    first, _ = teacher.answer(body)
    assert first == teacher.answer(body)[0]  # the same seed, the same samples
    stop = first[0][2:4]
    cut, _ = teacher.answer({**body, "stop": [stop]})
    assert stop not in cut[0] and first[0].startswith(cut[0])
    assert "".join(item["token"] for item in cut[0].logprobs["content"]) == cut[0]
