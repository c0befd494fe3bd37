"""`kdpipe eval` on instruction records: no answer to match, so a judge and reference overlap.

Each model's responses (the student's and baseline's, greedy, as trained; the teacher's
through its instruction prompt) are compared pairwise by the judge (kdpipe/judging.py:
both orders, a win only when they agree), student vs teacher and student vs baseline,
with win / tie / loss rates and 95 % intervals; ROUGE-L F1 against the reference where a
record has one (a cheap check of content, blind to a good answer worded otherwise); the
judge's cost beside the scores.

Knows nothing of how the models were asked: run_eval (evaluate/__init__.py) hands it texts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdpipe.answers import parse_completion, student_text
from kdpipe.records import Record
from kdpipe.rouge import rouge_l

# Who each model is compared with, in the scorecard's order.
PAIRS = (("student", "teacher"), ("student", "baseline"), ("baseline", "teacher"))


def responses_of(role: str, texts: list[str]) -> list[str]:
    """What a model said: the teacher's response as generate reads it, a local model's text
    without a reasoning block or an invented next example."""
    if role == "teacher":
        return [parse_completion(t, "instruction").answer or "" for t in texts]
    return [student_text(t).strip() for t in texts]


def score_instructions(records: list[Record], asked: dict[str, dict[str, Any]], judge_options=None,
                       say=lambda _m: None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the scorecard's instruction block, one prediction per model and record).

    `asked`: role -> {"model", "texts", "seconds", and for the teacher "cost_usd", "tokens"};
    `judge_options`: TeacherOptions of the judge (None or no model: ROUGE-L only)."""
    responses = {role: responses_of(role, a["texts"]) for role, a in asked.items()}
    refs = [i for i, r in enumerate(records) if r.gold]
    models, preds = [], []
    for role, a in asked.items():
        said = responses[role]
        rouges = {i: rouge_l(said[i], records[i].gold) for i in refs}
        models.append({"role": role, "model": a["model"], "n": len(records), "empty": sum(not s for s in said),
                       "mean_words": round(sum(len(s.split()) for s in said) / max(1, len(said)), 1),
                       "rouge_l": round(sum(rouges.values()) / len(refs), 4) if refs else None,
                       "with_reference": len(refs), "seconds": round(a.get("seconds", 0.0), 3),
                       **{k: a[k] for k in ("cost_usd", "tokens", "decoding") if k in a}})
        preds += [{"id": r.id, "model": role, "text": said[i], "reference": r.gold, "rouge_l": rouges.get(i)}
                  for i, r in enumerate(records)]
    block: dict[str, Any] = {"task": "instruction", "models": models, "pairwise": [], "judge": None}
    if judge_options is None or not judge_options.model:
        return block, preds
    from kdpipe.judging import Judge

    judge = Judge(judge_options)
    by_key = {(p["model"], p["id"]): p for p in preds}
    for x, y in PAIRS:
        if x not in responses or y not in responses:
            continue
        say(f"eval: the judge ({judge_options.model}) compares {x} with {y} on {len(records)} instructions, "
            "both orders")
        outcomes, rates = judge.compare([(r.question, responses[x][i], responses[y][i])
                                         for i, r in enumerate(records)])
        block["pairwise"].append({"model": x, "against": y, **rates.to_dict()})
        for r, outcome in zip(records, outcomes):
            by_key[(x, r.id)][f"vs_{y}"] = outcome
    name, digest, _ = judge.prompts()["pair"]
    block["judge"] = {"model": judge_options.model, "prompt": name, "prompt_digest": digest,
                      "cost": judge.cost.to_dict()}
    return block, preds


def instruction_markdown(eval_path: str, n: int, block: dict[str, Any]) -> str:
    """The instruction scorecard: pairwise rates with intervals, ROUGE-L, and what the judge cost."""
    lines = [f"Instruction following on {n} instructions ({Path(eval_path).name}).", ""]
    if block["pairwise"]:
        lines += [("Judged pairwise, each pair in both orders; a win counts only when both orders agree "
                   "(else a tie). 95% Wilson intervals."), "",
                  "| model | against | win | tie | loss | n | order disagreed | unreadable |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for p in block["pairwise"]:
            cells = [f"{100 * p[f'{k}_rate']:.1f}% ({100 * p[f'{k}_ci95'][0]:.1f}–{100 * p[f'{k}_ci95'][1]:.1f})"
                     for k in ("win", "tie", "loss")]
            lines.append(f"| {p['model']} | {p['against']} | {' | '.join(cells)} | {p['n']} | "
                         f"{p['inconsistent']} | {p['unreadable']} |")
        lines.append("")
    lines += ["| role | model | ROUGE-L (with reference) | empty | mean words | cost |", "|---|---|---:|---:|---:|---:|"]
    for m in block["models"]:
        rouge = "-" if m["rouge_l"] is None else f"{m['rouge_l']:.3f} ({m['with_reference']})"
        cost = "-" if m.get("cost_usd") is None else f"${m['cost_usd']:.4f}"
        lines.append(f"| {m['role']} | `{m['model']}` | {rouge} | {m['empty']} | {m['mean_words']} | {cost} |")
    j = block["judge"]
    if j is not None:
        c = j["cost"]
        lines += ["", f"Judge `{j['model']}` ({j['prompt']}): {c['replies']} verdicts ({c['cached']} from the cache), "
                      f"{c['prompt_tokens']} prompt + {c['completion_tokens']} completion tokens; cost "
                  + ("unknown (no price: pass --judge-price-in/--judge-price-out)" if c["usd"] is None
                     else f"${c['usd']:.4f} at list price, ${c['spent_usd']:.4f} spent in this run") + "."]
    else:
        lines += ["", "No judge (--judge): ROUGE-L only, which rewards wording close to the reference, not quality."]
    return "\n".join(lines)
