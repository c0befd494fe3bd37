"""`kdpipe loop-report`: the scorecard of `make loop`, read from the files each round left.

Round 0 is the one-pass pipeline ($(WORK)/filtered.jsonl, student/, eval.json); round N
lives in $(WORK)/round-N/ (hard.jsonl from `probe`, expanded.jsonl and teacher.jsonl from
`generate`, filtered.jsonl, student/, eval.json). Each figure comes from a file's
.meta.json or from eval.json, so the scorecard says what the stages recorded and nothing
else: accuracy with its Wilson interval, hard questions found, new questions kept, and the
teacher tokens and dollars the round's generate runs spent (answers already in the cache
cost nothing and count nothing). With --spend-ledger (generate's spending ledger, which
`make loop` keeps), tokens and dollars come from the ledger instead: every run that paid,
including one stopped at --max-usd or repeated after a change, whose .meta.json no longer
says so. A round not run yet shows dashes.
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
    spend_ledger: Path | None = option(None, "The spending ledger of the loop's generate runs (generate "
                                             "--spend-ledger): the teacher's tokens and dollars from it.",
                                       metavar="FILE")
    max_usd: float | None = option(None, "The loop's budget, shown beside what the ledger says was spent.")

    def problems(self) -> list[str]:
        p = [] if self.rounds >= 0 else ["--rounds must not be negative"]
        if self.max_usd is not None and self.spend_ledger is None:
            p.append("--max-usd goes with --spend-ledger (what was spent of it)")
        return p


def ledger_lines(path: Path | None) -> list[dict[str, Any]] | None:
    """The ledger's runs (None without a ledger; a line that does not read is skipped: the report
    only reads, and generate refuses a broken ledger before it spends)."""
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("out"), str):
            out.append(entry)
    return out


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _meta(path: Path) -> dict[str, Any] | None:
    return _json(path.with_name(path.name + ".meta.json"))


def round_row(work: Path, n: int, ledger: list[dict[str, Any]] | None = None) -> dict[str, Any]:
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
    if ledger is not None:
        here = d.resolve()
        usages = [{"prompt_tokens": e.get("prompt_tokens"), "completion_tokens": e.get("completion_tokens"),
                   "cost_usd": e.get("usd")} for e in ledger if Path(e["out"]).resolve().parent == here]
    else:
        usages = [(_meta(d / name) or {}).get("usage") for name in ("expanded.jsonl", "teacher.jsonl")]
    for usage in usages:
        if usage:
            row["prompt_tokens"] += usage.get("prompt_tokens") or 0
            row["completion_tokens"] += usage.get("completion_tokens") or 0
            if usage.get("cost_usd") is None and (usage.get("prompt_tokens") or usage.get("completion_tokens")):
                row["usd_known"] = False
            row["usd"] += usage.get("cost_usd") or 0.0
    return row


def scorecard(work: str | Path, rounds: int, spend_ledger: Path | None = None, max_usd: float | None = None) -> str:
    """The Markdown scorecard of rounds 0..rounds."""
    ledger = ledger_lines(spend_ledger)
    rows = [round_row(Path(work), n, ledger) for n in range(rounds + 1)]
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
    if ledger is not None:
        paid = sum(e.get("usd") or 0.0 for e in ledger)
        lines.append(f"Paid in all ({spend_ledger}, {len(ledger)} runs): ${paid:.4f}"
                     + (f" of the budget of ${max_usd:g}" if max_usd is not None else "") + ".")
    return "\n".join(lines)
