"""Distillation methods compared on the toy colour task, at the same number of steps, on the CPU.

    python bench/bench_kd.py --steps 60

A tiny teacher (hidden 64) is trained (full fine-tuning) on the toy task of tests/support_tiny.py; a
narrower student (hidden 32, the same tokenizer) is then trained from scratch by each method:

    sft            `kdpipe train` on the teacher's text (no teacher model)
    fwd-offline    --teacher-model, --kd offline --divergence forward
    rev-offline    --teacher-model, --kd offline --divergence reverse
    gkd-on-policy  --teacher-model, --kd on-policy --divergence jsd --beta 0.5 (--on-policy-frac 0.5)

and reports, per method, the held-out forward KL to the teacher (mean per completion token on the
`val` rows, computed by kdpipe's own distillation loss at alpha 0), the eval accuracy on the six
questions, and training tokens/s. The numbers are about a toy: they show the code paths run and
how they compare at this size, not what they do for a real pair.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

METHODS = {
    "sft": {},
    "fwd-offline": {"kd": "offline", "divergence": "forward"},
    "rev-offline": {"kd": "offline", "divergence": "reverse"},
    "gkd-on-policy": {"kd": "on-policy", "divergence": "jsd", "beta": 0.5},
}


def held_out_kl(student: Path, teacher: Path, sft: Path, scratch: Path) -> float:
    """Forward KL(teacher || student) per completion token on the val rows."""
    from kdpipe.train import TrainOptions, build_trainer, prepare_data

    opts = TrainOptions(student=str(student), teacher_model=str(teacher), kd_alpha=0.0, full=True,
                        max_length=96, batch_size=8, max_steps=1)
    prep = prepare_data(sft, scratch, opts)
    trainer = build_trainer(prep, scratch, opts, [])[0]
    return float(trainer.evaluate()["eval_loss"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--teacher-steps", type=int, default=60)
    ap.add_argument("--out", type=Path, help="JSON results to write")
    args = ap.parse_args()

    import support_tiny as st

    from kdpipe.evaluate import EvalOptions, run_eval
    from kdpipe.tiny_student import TinyOptions, build_tiny_student
    from kdpipe.train import TrainOptions, run_train

    common = dict(batch_size=8, max_length=96, log_every=10, eval_every=1000, full=True)
    with tempfile.TemporaryDirectory(prefix="bench-kd-") as tmp:
        d = Path(tmp)
        sft = st.write_sft(d / "sft.jsonl", "label")
        eval_path = st.write_eval(d / "eval.jsonl")
        teacher = d / "teacher"
        run_train(sft, teacher, TrainOptions(student=str(st.build_student(d / "teacher-base")),
                                             max_steps=args.teacher_steps, learning_rate=1e-3, **common))
        student = build_tiny_student(d / "student", st.corpus_texts(),
                                     TinyOptions(vocab_size=400, hidden_size=32, seed=1))
        rows = {"teacher": {"accuracy": run_eval(eval_path, EvalOptions(model=str(teacher))).models[0].accuracy,
                            "held_out_kl": 0.0},
                "untrained student": {"accuracy": run_eval(eval_path, EvalOptions(model=str(student))).models[0]
                                      .accuracy, "held_out_kl": held_out_kl(student, teacher, sft, d / "kl0")}}
        for name, flags in METHODS.items():
            run = d / name
            extra = {"teacher_model": str(teacher), **flags} if flags else {}
            r = run_train(sft, run, TrainOptions(student=str(student), max_steps=args.steps, learning_rate=3e-3,
                                                 **common, **extra))
            rows[name] = {"accuracy": run_eval(eval_path, EvalOptions(model=str(run))).models[0].accuracy,
                          "held_out_kl": held_out_kl(run, teacher, sft, d / f"kl-{name}"),
                          "tokens_per_s": r.tokens_per_s, "seconds": r.seconds, "train_loss": r.train_loss}
    print("| method | held-out KL(teacher‖student) per token | accuracy | train tokens/s | seconds |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        tps = row.get("tokens_per_s")
        print(f"| {name} | {row['held_out_kl']:.3f} | {100 * row['accuracy']:.0f}% | "
              f"{'-' if tps is None else f'{tps:.0f}'} | {row.get('seconds', 0):.1f} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
