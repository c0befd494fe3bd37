"""`kdpipe probe`: find the training questions the current student gets wrong (Lion's "discrimination").

The student is asked a probe pool of training questions exactly as `eval` asks it
(kdpipe/local_answers.py: its stored prompt format, greedily) and its answer is compared
by kdpipe/answers.py with the reference: the gold answer, else the teacher's answer
(the first usable sample, as `filter` left it). The questions it gets wrong, with its
answer and the reason, are written as seed records for `generate --mode expand`, with a
share of the easy ones for balance (Lion keeps some: a loop fed only failures drifts
toward the oddest corners of the task).

The pool is drawn by a seeded hash of each id (kdpipe/keys.py split_rank), so it does not
depend on file order, and a question that is also in --against (the eval file) is never
probed: the loop must not learn which eval questions are hard.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kdpipe.answers import answers_agree
from kdpipe.errors import KdpipeError
from kdpipe.keys import question_key, split_rank
from kdpipe.options import Options, option
from kdpipe.records import (
    Record, check_outputs_differ, load_records, meta_path, prepare_output, write_meta, write_records,
)


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
    max_new_tokens: int | None = option(None, "New-token limit (default: 256 for CoT students, 32 otherwise).")

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
    reasons: dict[str, int] = field(default_factory=dict)


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
    usable = [r for r in records if reference(r) is not None and r.task != "instruction"]
    clean = [r for r in usable if question_key(r.question, r.choices) not in held_out]
    pool = sorted(clean, key=lambda r: split_rank(r.id, opts.seed))[:opts.pool]
    result = ProbeResult(read=len(records), no_reference=len(records) - len(usable),
                         in_eval=len(usable) - len(clean), probed=len(pool), wrong=0, hard=0, easy=0)
    if not pool:
        raise KdpipeError(f"{seeds}: no training question to probe (each needs a gold or teacher answer, "
                          "outside --against)")
    src = resolve_source(opts.model)
    texts, fmt, _, _ = answer_locally(opts.model, pool, opts.batch_size, opts.max_new_tokens,
                                      fmt_override=src.prompt_format)
    task = inference_task(fmt)
    hard, easy = [], []
    for rec, text in zip(pool, texts):
        ref = reference(rec)
        answer, error = read_answer(text, task, rec, fmt)
        correct = answers_agree(answer, ref, rec.task, rec.choices)
        reason = None if correct else (error or "wrong")
        if reason is not None:
            result.reasons[reason] = result.reasons.get(reason, 0) + 1
        probe = {"model": opts.model, "hard": not correct, "text": text, "answer": answer, "reference": ref,
                 "reason": reason, **({"round": opts.round} if opts.round is not None else {})}
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
               counts={k: v for k, v in asdict(result).items() if k != "reasons"},
               extra={"reasons": result.reasons})
    return result
