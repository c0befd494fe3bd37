"""`filter --judge`: a judge model scores every usable sample before the rules run.

The scores are written onto a copy of the input (sample field `judge`: model, score,
reason), line for line, so that the rules, and any error they report, see the same
line numbers; the judge_score rule (rules.py) then reads them like any other field,
and kept and rejected samples alike carry their score.
"""

from __future__ import annotations

from pathlib import Path

from kdpipe.options import flag_namer
from kdpipe.records import atomic_file, dumps, iter_json_objects, record_at
from kdpipe.teacher.options import TeacherOptions

# The judge's options filter offers: the teacher options, under --judge* names where filter has no
# teacher of its own to tell them from.
JUDGE_OFFERED = ("model", "base_url", "api_key_env", "cache", "concurrency", "max_tokens", "max_usd", "price_in",
                 "price_out", "prices", "batch")
JUDGE_FLAGS = {"model": "--judge", "base_url": "--judge-base-url", "api_key_env": "--judge-api-key-env",
               "max_tokens": "--judge-max-tokens"}
JUDGE_HELPS = {"model": "judge_score rule: score every usable sample with this judge model (OpenAI-compatible, "
                        "cached like the teacher) and keep its score on the sample."}
judge_flag = flag_namer(TeacherOptions, JUDGE_FLAGS)


def judge_samples(inp: Path, out: Path, opts) -> dict:
    """Score the usable samples of `inp` into `out` with the judge of FilterOptions `opts`; the judge's
    model, prompt (name and digest) and cost, for the report."""
    from kdpipe.judging import Judge

    objs: list[tuple[int, dict]] = []
    items, where = [], []
    for lineno, obj in iter_json_objects(inp):
        rec = record_at(inp, lineno, obj)
        objs.append((lineno, obj))
        for k, s in enumerate(rec.samples):
            if s.ok:
                # What a student would learn to write: an instruction's response (its reasoning block set
                # aside), else the whole completion, rationale and answer.
                items.append((rec.question, s.answer if rec.task == "instruction" else s.text or s.answer))
                where.append((len(objs) - 1, k))
    judge = Judge(opts.judge, score_prompt=opts.judge_prompt)
    for (i, k), score in zip(where, judge.score(items)):
        objs[i][1]["samples"][k]["judge"] = score.to_dict(opts.judge.model)
    with atomic_file(out) as fp:
        at = 0
        for lineno, obj in objs:
            fp.write("\n" * (lineno - at - 1) + dumps(obj) + "\n")
            at = lineno
    name, digest, _ = judge.prompts()["score"]
    return {"model": opts.judge.model, "prompt": name, "prompt_digest": digest, **judge.cost.to_dict()}
