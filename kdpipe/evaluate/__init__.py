"""`kdpipe eval`: score the student (and a baseline, and the teacher) on held-out questions.

Each model is asked exactly the way the student was trained (the run's
stored prompt format; `dss` students get the label task alone), greedily,
in batches. Answers are read and compared by kdpipe/answers.py, the same
rules `filter` kept the training data with. Accuracy comes with a Wilson
95% interval: on a few hundred questions the interval is wide, and a
scorecard without it invites reading noise as progress.

Outputs: `eval.json` (one entry per scored model), `<eval>.predictions.jsonl`
(one line per model and question) and `<eval>.md` (the Markdown scorecard).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from kdpipe.answers import answers_agree
from kdpipe.demos import DemoPool
from kdpipe.errors import KdpipeError, UsageError
from kdpipe.evaluate.teacher import (
    TEACHER_FLAGS, TEACHER_HELPS, TEACHER_OFFERED, ask_teacher, prepare_teacher, teacher_problems,
)
from kdpipe.intervals import wilson_interval
from kdpipe.local_answers import answer_locally, read_answer  # read_answer: imported from here by users
from kdpipe.options import Options, flag_namer, option, options_block
from kdpipe.prompt_format import PromptFormat, inference_task
from kdpipe.shards import parse_shard
from kdpipe.teacher.options import TeacherOptions
from kdpipe.records import (
    JsonlWriter, Record, atomic_file, check_outputs_differ, file_digest, load_records, meta_path, prepare_output,
    write_meta,
)


JUDGE_OFFERED = ("model", "base_url", "api_key_env", "cache", "max_tokens", "price_in", "price_out")
JUDGE_FLAGS = {name: "--judge" + ("" if name == "model" else "-" + name.replace("_", "-")) for name in JUDGE_OFFERED}
JUDGE_HELPS = {"model": "Instruction records: this judge model (OpenAI-compatible, cached like the teacher) compares "
                        "the student with the teacher and the baseline, both orders."}
judge_flag = flag_namer(TeacherOptions, JUDGE_FLAGS)


@dataclass
class EvalOptions(Options):
    model: str = option("", "Run directory of `kdpipe train`, or a model folder / id.", required=True)
    baseline: str | None = option(None, "Also score this model (e.g. the untrained student), asked the same "
                                        "way as the student.")
    batch_size: int = option(16, "Questions per generation batch.")
    # None: 256 new tokens for CoT students (the rationale comes first), 32 for answer-only students.
    max_new_tokens: int | None = option(None, "New-token limit (default: 256 for CoT students, 32 otherwise).")
    limit: int | None = option(None, "Score only the first N questions.")
    predictions: Path | None = option(None, "Per-question predictions JSONL (default: <out>.predictions.jsonl).")
    shard: str | None = option(None, "Score only share I of N of the questions (by id), e.g. 2/4; `kdpipe merge` "
                                     "joins the N outputs into what one eval writes (needs -o).")
    # The teacher is scored through the API when teacher.model (--teacher) is set.
    teacher: TeacherOptions = options_block(TeacherOptions, offered=TEACHER_OFFERED, renamed=TEACHER_FLAGS,
                                            helps=TEACHER_HELPS, not_required=True)
    teacher_prompt: Path | None = option(None, "Teacher prompt template (default: prompts/<task>.txt).")
    # Instruction records: a judge compares the student with the teacher and the baseline (evaluate/instruction.py).
    judge: TeacherOptions = options_block(TeacherOptions, offered=JUDGE_OFFERED, renamed=JUDGE_FLAGS,
                                          helps=JUDGE_HELPS, not_required=True)

    def problems(self) -> list[str]:
        problems = []
        if not self.model:
            problems.append("--model is required")
        if self.batch_size <= 0:
            problems.append("--batch-size must be positive")
        if self.max_new_tokens is not None and self.max_new_tokens <= 0:
            problems.append("--max-new-tokens must be positive")
        if self.limit is not None and self.limit <= 0:
            problems.append("--limit must be positive")
        if self.shard is not None:
            try:
                parse_shard(self.shard)
            except UsageError as e:
                problems.append(str(e))
        if self.teacher.model:
            problems += teacher_problems(self.teacher, self.teacher_prompt)
        if self.judge.model:
            problems += self.judge.problems(judge_flag)
            if not (self.teacher.model or self.baseline):
                problems.append("--judge compares the student with --teacher or --baseline: give one")
        return problems


@dataclass
class Prediction:
    id: str
    model: str  # role: student | baseline | teacher
    text: str
    answer: str | None
    gold: str | None
    correct: bool
    error: str | None = None
    demos: list[str] | None = None  # format --icl-shots: the ids of the demonstrations it was asked with


@dataclass
class ModelScore:
    role: str
    model: str
    prompt_style: str
    asked_task: str
    n: int
    correct: int
    accuracy: float
    ci95: tuple[float, float]
    unparsed: int
    seconds: float
    examples_per_s: float
    cost_usd: float | None = None
    tokens: dict[str, int] | None = None
    decoding: dict[str, Any] | None = None  # local models: strategy, settings and stop tokens (kdpipe/decoding.py)


def score(role: str, model: str, records: list[Record], texts: list[str], asked_task: str,
          prompt_style: str, seconds: float, fmt: PromptFormat | None = None) -> tuple[ModelScore, list[Prediction]]:
    preds = []
    for rec, text in zip(records, texts):
        answer, error = read_answer(text, asked_task, rec, fmt)
        preds.append(Prediction(rec.id, role, text, answer, rec.gold,
                                answers_agree(answer, rec.gold, rec.task, rec.choices), error))
    n, correct = len(preds), sum(p.correct for p in preds)
    return ModelScore(role=role, model=model, prompt_style=prompt_style, asked_task=asked_task, n=n,
                      correct=correct, accuracy=correct / n if n else 0.0,
                      ci95=wilson_interval(correct, n), unparsed=sum(p.answer is None for p in preds),
                      seconds=round(seconds, 3), examples_per_s=round(n / seconds, 2) if seconds > 0 else 0.0,
                      ), preds


def ask_local_model(spec: str, records: list[Record], opts: EvalOptions,
                    fmt_override: dict[str, Any] | None = None
                    ) -> tuple[list[str], PromptFormat, float, dict[str, Any]]:
    """Greedy answers of a run directory or model; returns (texts, prompt format, seconds, decoding record)."""
    return answer_locally(spec, records, opts.batch_size, opts.max_new_tokens, fmt_override)


def load_eval_records(path: str | os.PathLike, limit: int | None) -> tuple[list[Record], int]:
    records = load_records(path)
    # An instruction needs no reference: the judge compares responses.
    scored = [r for r in records if r.gold is not None or r.task == "instruction"]
    if not scored:
        raise KdpipeError(f"{path}: no record has a gold answer to score against")
    if limit:
        scored = scored[:limit]
    return scored, len(records) - len([r for r in records if r.gold is not None or r.task == "instruction"])


@dataclass
class EvalReport:
    eval_path: str
    n: int
    skipped_no_gold: int
    models: list[ModelScore]
    predictions: list[Prediction] = field(default_factory=list)
    instruction: dict[str, Any] | None = None  # instruction records: judge and ROUGE-L (evaluate/instruction.py)

    def to_dict(self) -> dict[str, Any]:
        if self.instruction is not None:
            return {"eval": self.eval_path, "eval_digest": file_digest(self.eval_path), "n": self.n,
                    "skipped_no_gold": self.skipped_no_gold, **self.instruction}
        return {"eval": self.eval_path, "eval_digest": file_digest(self.eval_path), "n": self.n,
                "skipped_no_gold": self.skipped_no_gold, "models": [asdict(m) for m in self.models]}


def run_eval(eval_path: str | os.PathLike, opts: EvalOptions, out: str | os.PathLike | None = None,
             progress: Callable[[str], None] | None = None) -> EvalReport:
    """Score the student (and baseline, teacher) on `eval_path`; write outputs when `out` is set."""
    say = progress or (lambda _m: None)
    opts.validate()
    if opts.shard and out is None:
        raise UsageError("--shard needs -o FILE: `kdpipe merge` joins the shards' files")
    if out is not None:  # before any model loads or any teacher request is paid for
        outputs = [Path(out), predictions_path(Path(out), opts), markdown_path(Path(out)), meta_path(out)]
        check_outputs_differ([eval_path], outputs)
        for path in outputs:
            prepare_output(path)
    from kdpipe.student import resolve_source

    records, skipped = load_eval_records(eval_path, opts.limit)
    shard = None
    if opts.shard:
        from kdpipe.evaluate.shard import take_shard

        records, shard = take_shard(records, Path(eval_path), asdict(opts))
    teacher_client = None
    if opts.teacher.model:
        teacher_client = prepare_teacher(opts.teacher, opts.teacher_prompt, Path(out if out is not None else eval_path))
    student_src = resolve_source(opts.model)  # fails fast on a bad path, before any model loads
    if opts.baseline:
        resolve_source(opts.baseline)
    started = time.time()
    scores, preds = [], []
    instruction = shard is None and all(r.task == "instruction" for r in records)  # a shard may hold none
    asked: dict[str, dict[str, Any]] = {}  # instruction records: each role's texts for the judge
    runs = [("student", opts.model)] + ([("baseline", opts.baseline)] if opts.baseline else [])
    for role, spec in runs:
        say(f"eval: asking the {role} ({spec}) {len(records)} questions")
        texts, fmt, seconds, decoding = ask_local_model(spec, records, opts, fmt_override=student_src.prompt_format)
        if instruction:
            asked[role] = {"model": spec, "texts": texts, "seconds": seconds, "decoding": decoding}
            continue
        s, p = score(role, spec, records, texts, inference_task(fmt), fmt.style, seconds, fmt)
        s.decoding = decoding
        if fmt.icl_shots:
            pool = DemoPool(fmt)
            for pred, rec in zip(p, records):
                pred.demos = pool.prompt(rec.id, rec.question, rec.choices, rec.task, inference_task(fmt))[1]
        scores.append(s)
        preds.extend(p)
    if teacher_client is not None:
        say(f"eval: asking the teacher ({opts.teacher.model}) {len(records)} questions")
        texts, seconds, cost, tokens = ask_teacher(teacher_client, records)
        if instruction:
            asked["teacher"] = {"model": opts.teacher.model, "texts": texts, "seconds": seconds, "cost_usd": cost,
                                "tokens": tokens}
        else:
            s, p = score("teacher", opts.teacher.model, records, texts, "cot", "generate label prompt", seconds)
            s.cost_usd, s.tokens = cost, tokens
            scores.append(s)
            preds.extend(p)
    report = EvalReport(str(eval_path), len(records), skipped, scores, preds)
    if instruction:
        from kdpipe.evaluate.instruction import score_instructions

        report.models = []
        report.instruction, report.predictions = score_instructions(records, asked, opts.judge, say)
    if out is not None:
        write_report(report, Path(out), predictions_path(Path(out), opts), asdict(opts), started, shard)
    if shard is None:  # a shard's scorecard is a part: the merge records the whole one
        record_card(report, say)
    return report


def record_card(report: EvalReport, say: Callable[[str], None]) -> None:
    from kdpipe.hub.cards import record_eval

    for card in record_eval(report.to_dict(), markdown(report)):
        say(f"eval: scorecard added to the model card {card}")


def merge_eval(shards: list[Path], out: Path, seeds: Path | None = None,
               progress: Callable[[str], None] | None = None) -> EvalReport:
    """Join the outputs of one `eval --shard` run into what the unsharded eval writes (evaluate/shard.py)."""
    from kdpipe.evaluate.shard import merge_parts

    started = time.time()
    out = Path(out)
    predictions = out.with_name(out.stem + ".predictions.jsonl")
    outputs = [out, predictions, markdown_path(out), meta_path(out)]
    merged = merge_parts([Path(s) for s in shards], outputs, seeds)
    for path in outputs:
        prepare_output(path)
    report = EvalReport(merged.eval_path, merged.n, merged.skipped_no_gold,
                        [ModelScore(**m) for m in merged.models], [Prediction(**p) for p in merged.predictions])
    write_report(report, out, predictions, merged.params, started)
    record_card(report, progress or (lambda _m: None))
    return report


def predictions_path(out: Path, opts: EvalOptions) -> Path:
    return Path(opts.predictions) if opts.predictions else out.with_name(out.stem + ".predictions.jsonl")


def prediction_obj(p: Prediction) -> dict[str, Any]:
    obj = asdict(p)
    if obj["demos"] is None:  # only students asked with demonstrations have them
        del obj["demos"]
    return obj


def markdown_path(out: Path) -> Path:
    return out.with_name(out.stem + ".md")


def write_report(report: EvalReport, out: Path, predictions: Path, params: dict[str, Any], started: float,
                 shard: dict[str, Any] | None = None) -> None:
    with atomic_file(predictions) as fp:
        JsonlWriter(fp).write_all(p if isinstance(p, dict) else prediction_obj(p) for p in report.predictions)
    with atomic_file(markdown_path(out)) as fp:
        fp.write(markdown(report) + "\n")
    with atomic_file(out) as fp:
        json.dump(report.to_dict(), fp, indent=2, ensure_ascii=False)
        fp.write("\n")
    write_meta(out, stage="eval", params=params, inputs=[report.eval_path], started=started,
               counts={"questions": report.n, "skipped_no_gold": report.skipped_no_gold,
                       "models": len(report.models)}, extra={"shard": shard} if shard else None)


def markdown(report: EvalReport) -> str:
    """The scorecard: one row per model, side by side."""
    if report.instruction is not None:
        from kdpipe.evaluate.instruction import instruction_markdown

        return instruction_markdown(report.eval_path, report.n, report.instruction)
    lines = [f"Accuracy on {report.n} questions ({Path(report.eval_path).name}); 95% Wilson interval.",
             "",
             "| role | model | asked | accuracy | 95% CI | correct / n | unparsed | examples/s | cost |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for m in report.models:
        cost = "-" if m.cost_usd is None else f"${m.cost_usd:.4f}"
        lines.append(f"| {m.role} | `{m.model}` | {m.asked_task} | {100 * m.accuracy:.1f}% | "
                     f"{100 * m.ci95[0]:.1f}–{100 * m.ci95[1]:.1f}% | {m.correct} / {m.n} | {m.unparsed} | "
                     f"{f'{m.examples_per_s:.1f}' if m.examples_per_s else '-'} | {cost} |")
    for m in report.models:
        if m.tokens is not None:
            t = m.tokens
            lines += ["", f"Teacher `{m.model}`: {t['prompt_tokens']} prompt + {t['completion_tokens']} completion "
                          f"tokens for {m.n} answers ({t['cached_answers']} from the cache, "
                          f"{t['transport_errors']} failed); cost "
                          + ("unknown (no price: pass --price-in/--price-out)" if m.cost_usd is None
                             else f"${m.cost_usd:.4f} at list price") + "."]
    return "\n".join(lines)
