"""`kdpipe loop-report`: the scorecard of `make loop`, read from the files each round left.

Round 0 is the one-pass pipeline ($(WORK)/filtered.jsonl, student/, eval.json); round N
lives in $(WORK)/round-N/ (hard.jsonl from `probe`, expanded.jsonl and teacher.jsonl from
`generate`, filtered.jsonl, student/, eval.json). Each figure comes from a file's
.meta.json or from eval.json, so the scorecard says what the stages recorded and nothing
else: accuracy with its Wilson interval, hard questions found, new questions kept, and the
teacher tokens and dollars the round's generate runs spent (answers already in the cache
cost nothing and count nothing). A round not run yet shows dashes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdpipe.options import Options, option


@dataclass
class LoopReportOptions(Options):
    rounds: int = option(1, "Loop rounds to report after round 0 (the one-pass pipeline).")

    def problems(self) -> list[str]:
        return [] if self.rounds >= 0 else ["--rounds must not be negative"]


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _meta(path: Path) -> dict[str, Any] | None:
    return _json(path.with_name(path.name + ".meta.json"))


def round_row(work: Path, n: int) -> dict[str, Any]:
    """One round's figures; None where the round has not written the file yet."""
    d = work if n == 0 else work / f"round-{n}"
    row: dict[str, Any] = {"round": n, "accuracy": None, "ci95": None, "n": None, "hard": None, "kept": None,
                           "prompt_tokens": 0, "completion_tokens": 0, "usd": 0.0, "usd_known": True}
    ev = _json(d / "eval.json")
    student = next((m for m in (ev or {}).get("models", []) if m.get("role") == "student"), None)
    if student is not None:
        row.update(accuracy=student["accuracy"], ci95=student["ci95"], n=student["n"])
    probe = _meta(d / "hard.jsonl")
    if probe is not None:
        row["hard"] = probe["counts"]["hard"]
    filtered = _meta(d / "filtered.jsonl")
    if filtered is not None:
        row["kept"] = filtered["counts"]["kept"]
    for name in ("expanded.jsonl", "teacher.jsonl"):
        usage = (_meta(d / name) or {}).get("usage")
        if usage:
            row["prompt_tokens"] += usage.get("prompt_tokens") or 0
            row["completion_tokens"] += usage.get("completion_tokens") or 0
            if usage.get("cost_usd") is None and (usage.get("prompt_tokens") or usage.get("completion_tokens")):
                row["usd_known"] = False
            row["usd"] += usage.get("cost_usd") or 0.0
    return row


def scorecard(work: str | Path, rounds: int) -> str:
    """The Markdown scorecard of rounds 0..rounds."""
    rows = [round_row(Path(work), n) for n in range(rounds + 1)]
    lines = ["| round | student accuracy | 95% CI | hard found | new kept | teacher tokens (in + out) | teacher $ |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    total = 0.0
    for r in rows:
        acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}% of {r['n']}"
        ci = "-" if r["ci95"] is None else f"{100 * r['ci95'][0]:.1f}–{100 * r['ci95'][1]:.1f}%"
        hard = "-" if r["hard"] is None else str(r["hard"]) if r["round"] else "(seeds)"
        kept = "-" if r["kept"] is None else str(r["kept"])
        total += r["usd"]
        usd = f"${r['usd']:.4f}" if r["usd_known"] else "unknown (no price)"
        lines.append(f"| {r['round']} | {acc} | {ci} | {hard} | {kept} | "
                     f"{r['prompt_tokens']} + {r['completion_tokens']} | {usd} |")
    lines += ["", f"Teacher spending over the rounds shown: ${total:.4f} (cached answers are free and not counted)."]
    return "\n".join(lines)
