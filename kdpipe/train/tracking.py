"""`train --report-to`: the experiment trackers a run reports to, beside kdpipe's own
metrics.jsonl and loss.png (which are written whatever is chosen).

The trackers are transformers' own integrations; kdpipe only names the run after its
run directory and keeps TensorBoard's event files inside it (RUN_DIR/tensorboard).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

TRACKERS = ("tensorboard", "wandb", "trackio")
TENSORBOARD_DIR = "tensorboard"
# The package each tracker needs, and how a user gets it.
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


def report_targets(value: str) -> list[str]:
    """`none` -> []; `tensorboard,wandb` -> both (in the order given, once each)."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    return [] if names == ["none"] else list(dict.fromkeys(names))


def report_problem(value: str) -> str | None:
    """An unknown tracker, or `none` mixed with trackers, as a message; else None."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in TRACKERS and n != "none"]
    if not names or unknown or ("none" in names and len(names) > 1):
        return (f"--report-to must be none or a comma list of {', '.join(TRACKERS)}, got {value!r}")
    return None


def check_trackers(targets: list[str]) -> None:
    """Every tracker's package is installed (checked before the model loads)."""
    from kdpipe.errors import KdpipeError

    missing = [t for t in targets if importlib.util.find_spec(_PACKAGES[t]) is None]
    if missing:
        raise KdpipeError(f"--report-to {','.join(missing)} needs the {' and '.join(_PACKAGES[t] for t in missing)} "
                          f"package: pip install {' '.join(_PACKAGES[t] for t in missing)}")


def run_name(run_dir: Path) -> str:
    """The name trackers show for a run: its run directory's name."""
    return Path(run_dir).resolve().name


def place_tensorboard(trainer, run_dir: Path) -> Path | None:
    """Point transformers' TensorBoard callback at RUN_DIR/tensorboard (its default is a dated folder
    under the checkpoints); TENSORBOARD_LOGGING_DIR, when a user sets it, still wins."""
    for cb in trainer.callback_handler.callbacks:
        if type(cb).__name__ == "TensorBoardCallback":
            if not os.environ.get("TENSORBOARD_LOGGING_DIR"):
                cb.logging_dir = str(Path(run_dir) / TENSORBOARD_DIR)
            return Path(cb.logging_dir)
    return None
