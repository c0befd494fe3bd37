"""The sparse top-K distillation loss and trainer (format --style kd rows), on a tiny student on the CPU."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import support_tiny as st  # noqa: E402

from kdpipe.format import FormatOptions, run_format  # noqa: E402
from kdpipe.records import write_records  # noqa: E402
from kdpipe.token_logprobs import from_api  # noqa: E402
from kdpipe.token_text import piece  # noqa: E402
from kdpipe.train import TrainOptions, build_trainer, prepare_data, run_train  # noqa: E402
from kdpipe.train.trainers.sparse_kd import sparse_kd_loss  # noqa: E402

FAST = dict(max_steps=6, batch_size=4, max_length=96, learning_rate=3e-3, log_every=2, eval_every=3)


def test_the_loss_equals_a_hand_computation():
    logits = torch.tensor([[[0.5, 1.0, -0.5, 0.2, 0.0],
                            [1.5, 0.3, 0.1, -1.0, 0.4],
                            [0.0, 0.0, 2.0, 0.5, -0.3],
                            [0.9, 0.1, 0.1, 0.1, 0.1]]])
    labels = torch.tensor([[-100, 1, 2, 4]])  # three completion tokens; the last has no teacher
    kd_tokens = torch.tensor([[1, 2]])
    kd_ids = torch.tensor([[[1, 3], [2, -1]]])
    kd_lp = torch.tensor([[[math.log(0.6), math.log(0.3)], [math.log(0.9), 0.0]]])
    alpha, tau = 0.3, 2.0

    def softmax(row):
        z = [math.exp(x) for x in row]
        return [x / sum(z) for x in z]

    def tempered(p):
        w = [x ** (1 / tau) for x in p]
        return [x / sum(w) for x in w]

    rows = logits[0].tolist()
    teacher = [([1, 3], [0.6, 0.3]), ([2], [0.9])]
    want = 0.0
    for pos, target in enumerate([1, 2, 4]):
        q = softmax(rows[pos])
        ce = -math.log(q[target])
        if pos < 2:
            ids, p = teacher[pos]
            pt = tempered(p + [1 - sum(p)])
            ps = tempered([q[i] for i in ids] + [1 - sum(q[i] for i in ids)])
            kl = sum(a * math.log(a / b) for a, b in zip(pt, ps))
            want += alpha * ce + (1 - alpha) * tau ** 2 * kl
        else:
            want += ce
    got = sparse_kd_loss(logits, labels, kd_tokens, kd_ids, kd_lp, alpha, tau)
    assert float(got) == pytest.approx(want / 3, rel=1e-5)
    # From the first token the student splits otherwise, the row is plain CE.
    wrong = sparse_kd_loss(logits, labels, torch.tensor([[3, 2]]), kd_ids, kd_lp, alpha, tau)
    plain = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:])
    assert float(wrong) == pytest.approx(float(plain), rel=1e-6)


@pytest.fixture(scope="module")
def kd_data(tmp_path_factory):
    """A tiny model (the teacher, and the student's starting point: one tokenizer), and kd rows written by
    `format --style kd` whose top-5 are the teacher's own log-softmax over the colour answers."""
    d = tmp_path_factory.mktemp("kd")
    model_dir = st.build_student(d / "model")
    from kdpipe.student import load_student, resolve_source

    model, tok = load_student(resolve_source(str(model_dir)))
    records = st.teacher_records(2)
    for rec in records:
        for s in rec.samples:
            s.logprobs = teacher_logprobs(model, tok, rec.question, s.text, 5)
    write_records(d / "records.jsonl", records)
    run_format(d / "records.jsonl", d / "kd.jsonl", FormatOptions(style="kd", val_frac=1 / 6, seed=0))
    return model_dir, d / "kd.jsonl"


def teacher_logprobs(model, tok, question: str, text: str, k: int) -> dict:
    prompt = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                     tokenize=True, return_dict=True)["input_ids"]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + ids])).logits[0].float(), -1)
    content = []
    for pos, token in enumerate(ids):
        row = logp[len(prompt) + pos - 1]
        context = prompt + ids[:pos]

        def entry(t):
            t_text, raw = piece(tok, context, int(t))
            return {"token": t_text, "logprob": float(row[t]), "bytes": list(raw)}
        content.append({**entry(token), "top_logprobs": [entry(t) for t in torch.topk(row, k).indices]})
    return from_api({"content": content})


def test_alpha_one_is_the_sft_loss_and_lower_alpha_adds_the_kl(kd_data, tmp_path):
    model_dir, sft = kd_data
    losses = {}
    for alpha in (1.0, 0.0):
        opts = TrainOptions(student=str(model_dir), full=True, kd_alpha=alpha, **FAST)
        prep = prepare_data(sft, tmp_path / f"run{alpha}", opts)
        assert prep.recipe.name == "sparse_kd"
        trainer, _, _ = build_trainer(prep, tmp_path / f"run{alpha}", opts, [])
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.model.eval()
        with torch.no_grad():
            losses[alpha] = float(trainer.compute_loss(trainer.model, dict(batch)))
            assert batch["kd_ids"].shape[-1] == 5 and (batch["kd_tokens"] >= 0).any()
            plain = {k: v for k, v in batch.items() if not k.startswith("kd_")}
            sft_loss = float(super(type(trainer), trainer).compute_loss(trainer.model, plain))
        if alpha == 1.0:
            assert losses[alpha] == pytest.approx(sft_loss, rel=1e-5)
    # The student starts as the teacher: with the KL alone its only loss is the end-of-turn CE and the
    # folded tail, far below the CE of every token.
    assert losses[0.0] < losses[1.0]


def test_a_tiny_kd_run_trains_saves_and_reloads(kd_data, tmp_path):
    model_dir, sft = kd_data
    result = run_train(sft, tmp_path / "run", TrainOptions(student=str(model_dir), kd_alpha=0.5,
                                                           kd_temperature=2.0, kd_top_k=3, **FAST))
    assert result is not None
    config = json.loads((tmp_path / "run" / "train_config.json").read_text())["resolved"]
    assert config["trainer"] == "sparse_kd" and "tau 2" in config["loss"] and "K 3" in config["loss"]
    from peft import AutoPeftModelForCausalLM

    reloaded = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "run")).eval()
    with torch.no_grad():
        assert torch.isfinite(reloaded(input_ids=torch.tensor([[1, 2, 3]])).logits).all()


def test_kd_options_on_data_without_teacher_logprobs_are_reported_not_ignored(kd_data, tmp_path):
    model_dir, _ = kd_data
    plain = st.write_sft(tmp_path / "sft.jsonl", "cot")
    prep = prepare_data(plain, tmp_path / "run", TrainOptions(student=str(model_dir), kd_alpha=0.2, **FAST))
    assert prep.recipe.name == "sft" and any("--kd-alpha" in note for note in prep.notes)


def test_a_teacher_token_the_student_lacks_is_refused_in_one_line(kd_data, cli, tmp_path):
    model_dir, sft = kd_data
    rows = [json.loads(x) for x in sft.read_text().splitlines()]
    rows[0]["teacher"]["top_tokens"][0][1] = "\u2603snowman"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "bad.jsonl.meta.json").write_text(Path(str(sft) + ".meta.json").read_text())
    code, _, err = cli("train", bad, "-o", tmp_path / "run", "--student", model_dir)
    assert code == 1 and err.count("\n") == 1
    assert "teacher token '\u2603snowman'" in err and "shares the teacher's tokenizer" in err
    assert not (tmp_path / "run").exists()
    code, _, err = cli("train", sft, "-o", tmp_path / "run", "--student", model_dir, "--kd-top-k", "9")
    assert code == 2 and "only 5 teacher alternatives" in err
