"""`kdpipe format`: filtered records -> prompt/completion rows for TRL's SFTTrainer.

Styles (one example per kept teacher sample, so several samples of a
question give several examples, as in Fine-tune-CoT):

    dss    Distilling step-by-step: two rows per sample, task "label"
           ("predict: <question>" -> answer) and task "rationale"
           ("explain: <question>" -> rationale); `train` weights the
           rationale rows, `eval` asks only the label task.
    cot    one row, task "cot": question -> rationale + "The answer is X."
    label  one row, task "answer": question -> the teacher's answer only
    gold   one row per record, task "answer": question -> the gold answer
           (needs no teacher: works on seed records)
    response  instruction records only: one row per sample, task "answer":
           instruction (and input) -> the teacher's whole response, verbatim
    socratic  Socratic CoT: one row per sample labelled with a Socratic prompt, task "socratic":
           question -> "Q1: ...\nA1: ...\n...\nThe answer is X." (kdpipe/socratic.py), so
           one student asks and answers its own sub-questions; a malformed
           decomposition is skipped and counted under its problem. With
           --socratic-roles two: 2 rows per step instead, tasks "subquestion"
           (question generator) and "subanswer" (solver): socratic_roles.py
    kd     one row per sample with teacher logprobs (generate --logprobs), task
           "cot": question -> the teacher's completion exactly as sampled, and
           a "teacher" field with its per-token logprobs and top-K alternatives
           (kdpipe/token_logprobs.py) for the sparse distillation loss

A dss or cot row whose completion is the teacher's text exactly carries the
"teacher" field too (the logprobs belong to that text and no other).

Every row: {"id", "sample", "task", "split", "prompt", "completion"}; prompt
and completion are chat messages by default, plain strings with --no-chat.
The split is decided per record id (all rows of one question land on the same
side), the rows are shuffled with --seed, and the prompt format is stored in
`<out>.meta.json` under "prompt_format" so that `eval` asks the student the
way it was trained (`render_prompt` with `PromptFormat.from_dict`).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from kdpipe.demos import DemoPool, demonstration, with_demos
from kdpipe.errors import KdpipeError, UsageError
from kdpipe.options import Options, option
from kdpipe.keys import split_rank
from kdpipe.prompt_format import PromptFormat, render_answer, render_completion, render_prompt
from kdpipe.socratic import render_decomposition, sample_decomposition
from kdpipe.socratic_roles import role_examples
from kdpipe.records import Record, check_outputs_differ, read_records, write_meta, write_records

@dataclass
class FormatOptions(Options):
    style: str = option("dss", "dss | cot | label | gold | response (instruction records: the whole response) | kd "
                               "(needs generate --logprobs) | socratic (the teacher's sub-questions and answers, "
                               "from a Socratic label prompt: prompts/socratic.txt).")
    chat: bool = option(True, "Chat messages (for a chat template) or plain strings.", flags="--chat/--no-chat")
    val_frac: float = option(0.1, "Share of records whose rows go to the validation split.")
    seed: int = option(0, "Seed of the split and the shuffle.")
    label_prefix: str = option(PromptFormat.label_prefix, "dss label task prefix.")
    rationale_prefix: str = option(PromptFormat.rationale_prefix, "dss rationale task prefix.")
    answer_sentence: str = option(PromptFormat.answer_sentence, "How a cot completion ends; must contain {answer}.")
    icl_shots: int = option(0, "In-context distillation: put K demonstrations (another training question of the "
                               "same task and its completion in this style) before each prompt, never the record's own question nor "
                               "a validation or eval record; stored with the prompt format, so eval asks with K "
                               "demonstrations from the same pool.",
                            metavar="K")
    socratic_roles: str = option("one", "With --style socratic: one (one model asks and answers its own "
                                        "sub-questions) or two (rows of a question generator, task subquestion, "
                                        "and of a solver, task subanswer; eval runs them in turn).")
    icl_pool: int = option(256, "With --icl-shots: the training records per task that demonstrations are drawn "
                                "from (stored in the prompt format; chosen by --seed).", metavar="N")

    def prompt_format(self) -> PromptFormat:
        return PromptFormat(style=self.style, chat=self.chat, label_prefix=self.label_prefix,
                            rationale_prefix=self.rationale_prefix, answer_sentence=self.answer_sentence,
                            socratic_roles=self.socratic_roles)

    def problems(self) -> list[str]:
        problems = []
        if not (0.0 <= self.val_frac < 1.0):
            problems.append(f"--val-frac must be in [0, 1), got {self.val_frac}")
        if self.icl_shots < 0:
            problems.append(f"--icl-shots must not be negative, got {self.icl_shots}")
        elif self.icl_shots and self.icl_pool <= self.icl_shots:
            problems.append(f"--icl-pool ({self.icl_pool}) must be larger than --icl-shots ({self.icl_shots})")
        if self.icl_shots and self.socratic_roles == "two":
            problems.append("--icl-shots does not go with --socratic-roles two (one model's rows only)")
        try:
            self.prompt_format().validate()
        except UsageError as e:
            problems.append(str(e))
        return problems


@dataclass
class FormatResult:
    records: int
    rows: int
    train: int
    val: int
    skipped: Counter
    icl: dict | None = None  # --icl-shots: shots, pool size, rows with fewer demonstrations


def val_ids(ids: list[str], val_frac: float, seed: int) -> set[str]:
    """round(n * val_frac) record ids, chosen by a hash of seed and id (stable, order-free)."""
    n_val = round(len(ids) * val_frac)
    ranked = sorted(ids, key=lambda i: split_rank(i, seed))
    return set(ranked[:n_val])


def examples_of(rec: Record, fmt: PromptFormat, skipped: Counter) -> list[tuple[int | None, str, str, str]]:
    """(sample index, task, prompt text, completion text) for one record."""
    if fmt.style == "kd":
        return kd_examples(rec, fmt, skipped)
    q, ch = rec.question, rec.choices
    if fmt.style == "gold":
        if rec.gold is None:
            skipped["no gold answer"] += 1
            return []
        return [(None, "answer", render_prompt(fmt, q, ch, "answer"), render_answer(fmt, rec.gold, ch))]
    if fmt.style == "response" and rec.task != "instruction":
        skipped[f"{rec.task} record (style response is for instruction records)"] += 1
        return []
    if fmt.style in ("dss", "cot", "label", "socratic") and rec.task == "instruction":
        # An open-ended response has no rationale or short answer to split out.
        skipped["instruction record (use --style response)"] += 1
        return []
    if fmt.style == "socratic":
        return socratic_examples(rec, fmt, skipped)
    rows = []
    usable = [s for s in rec.samples if s.ok and s.reason is None]
    if len(usable) < len(rec.samples):
        skipped["sample not usable (error or filtered out)"] += len(rec.samples) - len(usable)
    if not rec.samples:
        skipped["record without teacher samples"] += 1
    for s in usable:
        if fmt.style in ("dss", "cot") and not (s.rationale and s.rationale.strip()):
            skipped["sample without rationale"] += 1
            continue
        if fmt.style == "dss":
            rows.append((s.index, "label", render_prompt(fmt, q, ch, "label"), render_answer(fmt, s.answer, ch)))
            rows.append((s.index, "rationale", render_prompt(fmt, q, ch, "rationale"),
                         render_completion(fmt, "rationale", s.answer, ch, s.rationale)))
        elif fmt.style == "cot":
            rows.append((s.index, "cot", render_prompt(fmt, q, ch, "cot"),
                         render_completion(fmt, "cot", s.answer, ch, s.rationale)))
        elif fmt.style == "response":
            rows.append((s.index, "answer", render_prompt(fmt, q, ch, "answer"), s.answer))
        else:
            rows.append((s.index, "answer", render_prompt(fmt, q, ch, "answer"), render_answer(fmt, s.answer, ch)))
    return rows


def kd_examples(rec: Record, fmt: PromptFormat, skipped: Counter) -> list[tuple[int | None, str, str, str]]:
    rows = []
    for s in rec.samples:
        if not (s.ok and s.reason is None):
            skipped["sample not usable (error or filtered out)"] += 1
        elif not s.logprobs or not s.logprobs["tokens"]:
            skipped["sample without teacher logprobs (generate --logprobs)"] += 1
        else:
            rows.append((s.index, "cot", render_prompt(fmt, rec.question, rec.choices, "cot"), s.text))
    if not rec.samples:
        skipped["record without teacher samples"] += 1
    return rows


def with_pool(fmt: PromptFormat, train: list[Record], opts: FormatOptions) -> PromptFormat:
    """`fmt` with the demonstration pool of --icl-shots: per task, the first --icl-pool training records
    (ranked by a hash of --seed and id) that give rows, each with the completion of every task of its rows
    (its first usable sample's)."""
    pool, per_task = [], Counter()
    for rec in sorted(train, key=lambda r: split_rank(r.id, opts.seed)):
        if per_task[rec.task] >= opts.icl_pool:
            continue
        completions: dict[str, str] = {}
        for _, task, _, completion in examples_of(rec, fmt, Counter()):
            completions.setdefault(task, completion)
        if completions:
            pool.append(demonstration(rec.id, rec.task, rec.question, rec.choices, completions))
            per_task[rec.task] += 1
    short = [t for t in sorted(per_task) if per_task[t] <= opts.icl_shots]
    if short:
        raise KdpipeError(f"--icl-shots {opts.icl_shots}: too few training records to draw demonstrations from ("
                          + ", ".join(f"{t}: {per_task[t]}" for t in short)
                          + f"; each task needs more than {opts.icl_shots}); lower --icl-shots or --val-frac")
    return replace(fmt, icl_shots=opts.icl_shots, icl_seed=opts.seed, demonstrations=pool)


def socratic_examples(rec: Record, fmt: PromptFormat, skipped: Counter) -> list[tuple[int | None, str, str, str]]:
    """One row per sample whose decomposition parses (kdpipe/socratic.py): the question -> "Q1: ... A1: ...
    ... The answer is X."; a malformed one is skipped and counted under its problem."""
    rows = []
    for s in rec.samples:
        if not (s.ok and s.reason is None):
            skipped["sample not usable (error or filtered out)"] += 1
            continue
        d = sample_decomposition(rec, s)
        if d.problem is not None:
            skipped[f"malformed decomposition ({d.problem})"] += 1
            continue
        if fmt.socratic_roles == "two":
            rows += [(s.index, *row) for row in role_examples(fmt, rec.question, rec.choices, d.steps, s.answer)]
        else:
            rows.append((s.index, "socratic", render_prompt(fmt, rec.question, rec.choices, "socratic"),
                         render_decomposition(fmt, d.steps, s.answer, rec.choices)))
    if not rec.samples:
        skipped["record without teacher samples"] += 1
    return rows


def teacher_of(rec: Record, sample: int | None, completion: str) -> dict | None:
    """The teacher's logprobs for a row, when its completion is exactly the text they belong to."""
    s = next((s for s in rec.samples if s.index == sample), None)
    return s.logprobs if s is not None and s.logprobs and s.text == completion else None


def run_format(inp: str | Path, out: str | Path, opts: FormatOptions | None = None) -> FormatResult:
    opts = opts or FormatOptions()
    opts.validate()
    inp, out = Path(inp), Path(out)
    check_outputs_differ([inp], [out])
    started = time.time()
    fmt = opts.prompt_format()
    records = list(read_records(inp))
    held = val_ids([r.id for r in records], opts.val_frac, opts.seed)
    if opts.icl_shots:
        fmt = with_pool(fmt, [r for r in records if r.id not in held], opts)
    pool = DemoPool(fmt)
    skipped: Counter = Counter()
    rows = []
    for rec in records:
        split = "val" if rec.id in held else "train"
        for sample, task, prompt, completion in examples_of(rec, fmt, skipped):
            teacher = teacher_of(rec, sample, completion)
            demos = pool.draw(rec.id, rec.question, rec.choices, rec.task, task)
            prompt = with_demos(fmt, demos, task, prompt)
            if opts.chat:
                prompt = [{"role": "user", "content": prompt}]
                completion = [{"role": "assistant", "content": completion}]
            rows.append({"id": rec.id, "sample": sample, "task": task, "split": split,
                         "prompt": prompt, "completion": completion, **({"teacher": teacher} if teacher else {}),
                         **({"demos": [d["id"] for d in demos]} if fmt.icl_shots else {})})
    if not rows:
        why = ", ".join(f"{k}: {v}" for k, v in skipped.items()) or "no records"
        raise KdpipeError(f"{inp}: no training examples for style {opts.style} ({why})")
    random.Random(opts.seed).shuffle(rows)
    write_records(out, rows)
    counts = {"records": len(records), "rows": len(rows), "tasks": dict(Counter(r["task"] for r in rows)),
              "rows_with_teacher_logprobs": sum("teacher" in r for r in rows),
              "train": sum(r["split"] == "train" for r in rows), "val": sum(r["split"] == "val" for r in rows),
              "skipped": dict(skipped)}
    if fmt.icl_shots:
        counts["icl"] = {"shots": fmt.icl_shots, "pool": len(fmt.demonstrations),
                         "rows_with_fewer_demos": sum(len(r["demos"]) < fmt.icl_shots for r in rows)}
    write_meta(out, stage="format", params=asdict(opts), inputs=[inp], counts=counts, started=started,
               extra={"prompt_format": fmt.to_dict()})
    return FormatResult(records=len(records), rows=len(rows), train=counts["train"], val=counts["val"],
                        skipped=skipped, icl=counts.get("icl"))

