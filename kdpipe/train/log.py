"""Per-step training metrics as JSONL, throughput, and the loss-curve picture."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from transformers import TrainerCallback  # noqa: F401  (this module is imported lazily by the train stage)


class MetricsLog(TrainerCallback):
    """Appends every log event (loss, learning rate, eval loss, tokens/s) to a JSONL file, and
    says one progress line per event through `say` (the library's own printer stays off).

    Appending keeps the lines of an interrupted run when it is resumed.
    """

    def __init__(self, path: Path, say: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.say = say or (lambda _m: None)
        self._start: float | None = None
        self._last: tuple[float, float] | None = None  # (time, cumulative tokens) at the last log
        self.tokens_before = 0  # tokens trained before this session (a resumed run)

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.time()
        row = {"step": state.global_step, "epoch": state.epoch, **logs, "time": round(now, 3)}
        tokens = logs.get("num_tokens")
        if tokens is not None and "loss" in logs and self._start is not None:
            since, before = self._last or (self._start, self.tokens_before)
            if now > since:
                row["tokens_per_s"] = round((tokens - before) / (now - since), 1)
            self._last = (now, tokens)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fp:
            fp.write(json.dumps(row, default=str) + "\n")
        line = progress_line(row, state.max_steps)
        if line:
            self.say(line)

    def tokens_per_s(self) -> float | None:
        """Training tokens (prompt + completion, no padding) per second of training so far."""
        if self._last is None or self._start is None or self._last[0] <= self._start:
            return None
        return round((self._last[1] - self.tokens_before) / (self._last[0] - self._start), 1)


@dataclass
class ResumePoint:
    """Where a resumed run starts: the checkpoint's step, the sum of the step losses up to it (None when
    no loss was logged by then) and the training tokens up to it."""

    step: int
    loss_sum: float | None
    tokens: int


def resume_point(checkpoints: Path) -> ResumePoint | None:
    """What the last checkpoint's log history says of the run so far.

    Each logged loss is the mean over the steps since the log before it, so the logged losses weighted
    by their intervals sum the step losses exactly up to the last log; steps between that log and the
    checkpoint (when --save-every is not a multiple of --log-every) count at the logged mean.
    """
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(checkpoints)) if Path(checkpoints).is_dir() else None
    if last is None:
        return None
    state = json.loads((Path(last) / "trainer_state.json").read_text(encoding="utf-8"))
    step = int(state["global_step"])
    prev, total, tokens = 0, 0.0, 0
    for h in state.get("log_history", []):
        if "loss" in h and h["step"] <= step:
            total += h["loss"] * (h["step"] - prev)
            prev = h["step"]
            tokens = h.get("num_tokens", tokens)
    return ResumePoint(step, total / prev * step if prev else None, int(tokens))


def progress_line(row: dict, total_steps: int) -> str | None:
    """'train: step 5/40 loss 2.3456 lr 2.00e-04 1234 tokens/s' for a training log event,
    'train: step 20/40 eval loss 1.2345' for a validation one; None for the end-of-run summary."""
    parts = []
    if "loss" in row:
        parts.append(f"loss {row['loss']:.4f}")
        if row.get("learning_rate") is not None:
            parts.append(f"lr {row['learning_rate']:.2e}")
        if row.get("tokens_per_s") is not None:
            parts.append(f"{row['tokens_per_s']:.0f} tokens/s")
    if "eval_loss" in row:
        parts.append(f"eval loss {row['eval_loss']:.4f}")
    if not parts:
        return None
    return f"train: step {row['step']}/{total_steps} " + " ".join(parts)


def plot_losses(metrics: Path, out: Path) -> Path | None:
    """Training and validation loss against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = [], []
    if not Path(metrics).is_file():
        return None
    for line in Path(metrics).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if "loss" in row:
            train.append((row["step"], row["loss"]))
        if "eval_loss" in row:
            val.append((row["step"], row["eval_loss"]))
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), marker="o", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (completion tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
