"""`kdpipe probe`: find the training questions the current student gets wrong (Lion's "discrimination").

The student is asked a probe pool of training questions exactly as `eval` asks it
(kdpipe/local_answers.py: its stored prompt format, greedily) and its answer is compared
by kdpipe/answers.py with the reference: the gold answer, else the teacher's answer
(the first usable sample, as `filter` left it). The questions it gets wrong, with its
answer and the reason, are written as seed records for `generate --mode expand`, with a
share of the easy ones for balance (Lion keeps some: a loop fed only failures drifts
toward the oddest corners of the task).

Instruction records have no answer to match: with --judge, a judge model (kdpipe/judging.py,
reached like the teacher, cached) scores the student's response beside the reference (the
gold response, else the teacher's), and a score below --min-score is hard, the judge's
score and reason kept with it (Lion's referee compares the student with the teacher the
same way). A reply with no score decides nothing: the record is counted and left out.
Without --judge, instruction records are left out.

The pool is drawn by a seeded hash of each id (kdpipe/keys.py split_rank), so it does not
depend on file order, and a question that is also in --against (the eval file) is never
probed: the loop must not learn which eval questions are hard.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from typing import Any

from kdpipe.answers import answers_agree, student_text
from kdpipe.errors import KdpipeError
from kdpipe.keys import question_key, split_rank
from kdpipe.options import Options, flag_namer, option, options_block
from kdpipe.teacher.options import TeacherOptions
from kdpipe.records import (
    Record, check_outputs_differ, load_records, meta_path, prepare_output, write_meta, write_records,
)

# The judge's options probe offers, under --judge* names (as eval's).
JUDGE_OFFERED = ("model", "base_url", "api_key_env", "cache", "concurrency", "max_tokens", "max_usd", "price_in",
                 "price_out", "prices", "spend_ledger")
JUDGE_FLAGS = {name: "--judge" + ("" if name == "model" else "-" + name.replace("_", "-")) for name in JUDGE_OFFERED}
JUDGE_HELPS = {"model": "Instruction records: this judge model (OpenAI-compatible, cached like the teacher) scores "
                        "the student's response beside the reference; without it they are left out.",
               "spend_ledger": "Spending ledger (JSONL) shared with generate and eval --teacher (their "
                               "--spend-ledger): the judge appends what it spent, and --judge-max-usd caps it "
                               "with the ledger's runs (it may spend what they left)."}
judge_flag = flag_namer(TeacherOptions, JUDGE_FLAGS)


@dataclass
class ProbeOptions(Options):
    model: str = option("", "Run directory of `kdpipe train` (the current student), or a model folder / id.",
                        required=True)
    against: list[Path] | None = option(None, "Eval records (repeatable): their questions are never probed.")
    pool: int | None = option(None, "Probe at most N training questions (default: all), drawn by --seed.")
    max: int | None = option(None, "Write at most N hard questions (the first of the seeded order).")
    easy_share: float = option(0.1, "Easy questions added for balance, as a share of the hard ones written.")
    seed: int = option(0, "Seed of the probe pool's order and of the easy sample.")
    round: int | None = option(None, "Loop round recorded in each written record's provenance.")
    batch_size: int = option(16, "Questions per generation batch.")
    max_new_tokens: int | None = option(None, "New-token limit (default: 256 for CoT students and instruction "
                                              "records, 32 otherwise).")
    judge: TeacherOptions = options_block(TeacherOptions, offered=JUDGE_OFFERED, renamed=JUDGE_FLAGS,
                                          helps=JUDGE_HELPS, not_required=True)
    min_score: float = option(7.0, "Instruction records: a response the judge scores below this (1-10) is hard.")
    judge_prompt: Path | None = option(None, "Judge prompt for instruction records, with {instruction}, "
                                             "{reference} and {response} (default: prompts/judge_reference.txt).")

    def problems(self) -> list[str]:
        p = []
        if not self.model:
            p.append("--model is required")
        for name in ("pool", "max"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                p.append(f"--{name} must be positive")
        if not 0 <= self.easy_share <= 1:
            p.append("--easy-share must be between 0 and 1")
        if self.batch_size <= 0:
            p.append("--batch-size must be positive")
        if self.max_new_tokens is not None and self.max_new_tokens <= 0:
            p.append("--max-new-tokens must be positive")
        for path in self.against or ():
            if not Path(path).is_file():
                p.append(f"--against {path}: no such file")
        if self.judge.model:
            p += self.judge.problems(judge_flag)
        if not 1 <= self.min_score <= 10:
            p.append("--min-score must be between 1 and 10")
        if self.judge_prompt is not None:
            if not Path(self.judge_prompt).is_file():
                p.append(f"--judge-prompt {self.judge_prompt}: no such file")
            elif "{response}" not in Path(self.judge_prompt).read_text(encoding="utf-8", errors="replace"):
                p.append(f"--judge-prompt {self.judge_prompt}: needs a {{response}} placeholder")
        return p


@dataclass
class ProbeResult:
    read: int
    no_reference: int
    in_eval: int
    probed: int
    wrong: int
    hard: int
    easy: int
    no_judge: int = 0  # instruction records left out: no --judge
    unjudged: int = 0  # instruction records the judge gave no score: left out
    reasons: dict[str, int] = field(default_factory=dict)
    judge_cost: dict[str, Any] | None = None


def reference(rec: Record) -> str | None:
    """What the student's answer is compared with: gold, else the teacher's first usable answer."""
    if rec.gold is not None:
        return rec.gold
    return next((s.answer for s in rec.samples if s.ok and s.answer is not None), None)


def run_probe(seeds: str | Path, out: str | Path, opts: ProbeOptions) -> ProbeResult:
    """Probe the student on training questions from `seeds`; write the hard ones (and a few easy) to `out`."""
    opts.validate()
    check_outputs_differ([seeds, *(opts.against or [])], [out, meta_path(out)])
    prepare_output(Path(out))
    prepare_output(meta_path(out))
    from kdpipe.local_answers import answer_locally, read_answer
    from kdpipe.prompt_format import inference_task
    from kdpipe.student import resolve_source

    started = time.time()
    records = load_records(seeds)
    held_out = {question_key(r.question, r.choices) for path in opts.against or () for r in load_records(path)}
    referenced = [r for r in records if reference(r) is not None]
    usable = [r for r in referenced if r.task != "instruction" or opts.judge.model]
    clean = [r for r in usable if question_key(r.question, r.choices) not in held_out]
    pool = sorted(clean, key=lambda r: split_rank(r.id, opts.seed))[:opts.pool]
    result = ProbeResult(read=len(records), no_reference=len(records) - len(referenced),
                         in_eval=len(usable) - len(clean), probed=len(pool), wrong=0, hard=0, easy=0,
                         no_judge=len(referenced) - len(usable))
    if not pool:
        raise KdpipeError(f"{seeds}: no training question to probe (each needs a gold or teacher answer, "
                          "outside --against" + (", and instruction records need --judge)" if result.no_judge
                                                 else ")"))
    src = resolve_source(opts.model)
    texts, fmt, _, _ = answer_locally(opts.model, pool, opts.batch_size, opts.max_new_tokens,
                                      fmt_override=src.prompt_format)
    task = inference_task(fmt)
    judged = _judge(pool, texts, opts, result, Path(out))
    hard, easy = [], []
    for i, (rec, text) in enumerate(zip(pool, texts)):
        ref = reference(rec)
        verdict = {}
        if rec.task == "instruction":
            answer, score = student_text(text).strip(), judged[i]
            verdict = {"judge": score.to_dict(opts.judge.model)}
            if score.score is None:
                result.unjudged += 1
                continue
            correct = score.score >= opts.min_score
            reason = None if correct else "judge_score"
        else:
            answer, error = read_answer(text, task, rec, fmt)
            correct = answers_agree(answer, ref, rec.task, rec.choices)
            reason = None if correct else (error or "wrong")
        if reason is not None:
            result.reasons[reason] = result.reasons.get(reason, 0) + 1
        probe = {"model": opts.model, "hard": not correct, "text": text, "answer": answer, "reference": ref,
                 "reason": reason, **verdict, **({"round": opts.round} if opts.round is not None else {})}
        seed_record = Record(id=rec.id, question=rec.question, task=rec.task, choices=rec.choices, gold=rec.gold,
                             provenance={**rec.provenance, "probe": probe})
        (easy if correct else hard).append(seed_record)
    result.wrong = len(hard)
    hard = hard[:opts.max]
    # The easy sample: the first of the seeded order, so a rerun picks the same ones.
    easy = easy[:math.ceil(opts.easy_share * len(hard))]
    result.hard, result.easy = len(hard), len(easy)
    write_records(out, hard + easy)
    write_meta(out, stage="probe", params=asdict(opts), inputs=[seeds, *(opts.against or [])], started=started,
               counts={k: v for k, v in asdict(result).items() if k not in ("reasons", "judge_cost")},
               extra={"reasons": result.reasons, **({"judge_cost": result.judge_cost} if result.judge_cost else {})})
    return result


def _judge(pool: list[Record], texts: list[str], opts: ProbeOptions, result: ProbeResult,
           out: Path) -> dict[int, Any]:
    """The judge's Score of each instruction record's response, by its place in the pool; a
    judge stopped at --judge-max-usd stops the probe (a record it never scored is no easy one)."""
    places = [i for i, r in enumerate(pool) if r.task == "instruction"]
    if not places:
        return {}
    from kdpipe.judging import Judge

    judge = Judge(opts.judge, reference_prompt=opts.judge_prompt, ledger_out=out, flag=judge_flag)
    scores = judge.score_beside([(pool[i].question, reference(pool[i]), student_text(texts[i]).strip())
                                 for i in places])
    if judge.stopped is not None:
        from kdpipe.teacher.spend_ledger import stopped_at_cap

        raise stopped_at_cap("probe", judge.stopped, judge_flag, f"{judge.stopped.refused} of {len(places)} "
                             "instruction records not judged, so nothing is written")
    result.judge_cost = {"model": opts.judge.model, **judge.cost.to_dict()}
    return dict(zip(places, scores))
