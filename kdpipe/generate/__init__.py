"""`kdpipe generate`: the teacher stage.

label   every seed question goes to the teacher with a few-shot
        chain-of-thought prompt (prompts/<task>.txt or --prompt); each of the
        --samples completions is split into rationale and answer and kept on
        the record as a Sample, with a reason code when it gave no answer.
expand  Self-Instruct / LaMini style: the teacher sees k sampled seed
        questions and writes new ones of the same task; --num-new new,
        deduplicated questions come out as seed records for a label run.
        Seeds from `kdpipe probe` (the student's mistakes) get expand_hard.txt
        and requests anchored on them (Lion's generation step).
rationalize  teacher records whose every usable answer misses gold (what filter
        rejects as gold_mismatch) are asked again with the gold answer as a hint
        (prompts/rationalize.txt); the new samples are marked `rationalized`
        (generate/rationalize.py).
counterfactual  the teacher edits each question minimally so that its answer
        changes and states the new answer (prompts/counterfactual.txt); each
        edit is a new record for a label run, linked to its source
        (generate/counterfactual.py).

Every response goes through the teacher cache (kdpipe/teacher/cache.py), so a
rerun after a crash pays only for what never completed, and the output is
written whole, in input order, at the end.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from kdpipe.errors import UsageError
from kdpipe.generate.cost import open_cache
from kdpipe.generate.counterfactual import counterfactual
from kdpipe.generate.expand import expand, expand_prompt_name, parse_question_list  # noqa: F401  (the stage's API)
from kdpipe.generate.plan import NothingCached, merge_estimates, stand_ins
from kdpipe.generate.rationalize import rationalize
from kdpipe.generate.scale import scale_problems
from kdpipe.generate.shard import parse_shard, shard_meta, shard_of
from kdpipe.generate.result import GenerateResult, watching_failures
from kdpipe.generate.sample import to_sample
from kdpipe.label_prompts import PROMPTS_DIR, label_prompts, label_requests, read_prompt
from kdpipe.records import (
    SAMPLE_ERRORS, check_outputs_differ, load_records, meta_path, prepare_output, record_line, write_lines,
    write_meta, write_records,
)
from kdpipe.options import option
from kdpipe.teacher.backend import make_backend
from kdpipe.teacher.backend_dry_run import DryRunBackend
from kdpipe.teacher.batch_files import export_batch, import_batch
from kdpipe.teacher.client import Stats, TeacherConfig, complete
from kdpipe.teacher.spend_ledger import spending_recorded
from kdpipe.teacher.identity import endpoint_host
from kdpipe.teacher.pricing import Price
from kdpipe.teacher.estimate import estimate, token_counter
from kdpipe.teacher.options import TeacherOptions

MODES = ("label", "expand", "rationalize", "counterfactual")
# Modes whose prompt shows a question with its answer (gold, or the answer to change).
ANSWERED = {"rationalize": "rationalize.txt", "counterfactual": "counterfactual.txt"}


@dataclass
class GenerateOptions(TeacherOptions):
    """generate's options: the teacher's (who, how to reach and pay it: TeacherOptions) and these."""

    mode: str = option("label", "label: answer with rationales; expand: write new questions like the seeds; "
                                "rationalize: ask again, with the gold answer as a hint, for the questions whose "
                                "every answer missed gold (their new samples are marked rationalized); "
                                "counterfactual: minimal edits of each question that change its answer, as new "
                                "questions to label.")
    samples: int = option(1, "Completions per question (label and rationalize; counterfactual: edits asked per "
                             "question). Raising it later pays only for the "
                             "new samples at the same temperature; from 1 to several the default temperature "
                             "changes (0 to 0.7), so every sample is asked anew.")
    # None: 0 for one sample, 0.7 to sample several or to expand
    temperature: float | None = option(None, "Sampling temperature (default: 0 for one sample, 0.7 for several "
                                             "or for expand).")
    stop: list[str] | None = option(None, "Stop sequence (repeatable).")
    seed: int | None = option(None, "Sampling seed sent to the endpoint; also picks the seed examples of expand "
                                    "mode.")
    prompt: Path | None = option(None, "Prompt template (default: prompts/<task>.txt, prompts/expand.txt; "
                                       "prompts/expand_instruction.txt for instruction seeds, "
                                       "prompts/expand_hard.txt for `kdpipe probe` output; "
                                       "prompts/rationalize.txt, prompts/counterfactual.txt).")
    logprobs: int | None = option(None, "Also keep, per completion token, the teacher's logprob and its K most "
                                        "likely alternatives (1 to 20; label mode), for format --style kd.",
                                  metavar="K")
    shard: str | None = option(None, "Label only shard I of N of the input (by a hash of each record's id), "
                                     "e.g. 2/8, so N machines share one job, each with its own cache; "
                                     "`kdpipe merge` joins the shard outputs.", metavar="I/N")
    export_batch: Path | None = option(None, "Send nothing: write the requests the cache cannot answer to FILE as "
                                             "OpenAI batch JSONL (for vllm run-batch, Ray Data LLM or the Batch "
                                             "API), then stop (label mode).", metavar="FILE")
    import_batch: Path | None = option(None, "Store the answers of a batch output FILE (of --export-batch's "
                                             "requests) in the cache first; the run then asks only what it "
                                             "lacks (label mode).", metavar="FILE")
    num_new: int = option(100, "New questions to write (expand mode only).")
    seeds_per_prompt: int = option(3, "Seed questions shown per expansion request (expand mode only).")
    # A dry run of label mode before expansion ran: also price expanding and labelling this many (plan.py).
    expect_new: int = option(0, "With --dry-run in label mode: also price writing this many new questions by "
                                "expansion and labelling them (the seeds stand in for the questions not yet "
                                "written): one estimate for the whole run.")
    expand_prompt: Path | None = option(None, "The expansion prompt --expect-new prices (default: "
                                              "prompts/expand.txt).")
    round: int | None = option(None, "Loop round recorded in each new question's provenance (expand mode).")

    def resolved_temperature(self) -> float:
        if self.temperature is not None:
            return self.temperature
        return 0.0 if self.mode != "expand" and self.samples == 1 else 0.7

    def teacher_config(self) -> TeacherConfig:
        return self.client_config(temperature=self.resolved_temperature(), stop=self.stop or None, seed=self.seed,
                                  logprobs=self.logprobs)

    def problems(self) -> list[str]:
        p = []
        if self.mode not in MODES:
            p.append(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.samples < 1:
            p.append("--samples must be at least 1")
        if self.num_new < 1:
            p.append("--num-new must be at least 1")
        if self.seeds_per_prompt < 1:
            p.append("--seeds-per-prompt must be at least 1")
        # An option of the other mode would be silently ignored: say so instead.
        if self.mode == "expand" and self.samples != GenerateOptions.samples:
            p.append("--samples is for label mode (expand asks for one completion per request)")
        if self.mode in ("expand", "counterfactual") and self.logprobs is not None:
            p.append(f"--logprobs is for label mode ({self.mode} writes questions, not training targets)")
        if self.mode != "expand":
            wrong = [flag for flag, name in (("--num-new", "num_new"), ("--seeds-per-prompt", "seeds_per_prompt"))
                     if getattr(self, name) != getattr(GenerateOptions, name)]
            if wrong:
                p.append(f"{' and '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} for expand mode, "
                         f"not {self.mode} mode")
        p += scale_problems(self)
        if self.round is not None and (self.mode != "expand" or self.round < 1):
            p.append("--round is a loop round (1, 2, ...) of expand mode")
        if self.expect_new < 0:
            p.append("--expect-new must not be negative")
        elif self.expect_new and (self.mode != "label" or not self.dry_run):
            p.append("--expect-new is for a dry run of label mode (--mode label --dry-run)")
        if self.expand_prompt is not None and not self.expect_new:
            p.append("--expand-prompt goes with --expect-new")
        elif self.expand_prompt is not None and not Path(self.expand_prompt).is_file():
            p.append(f"--expand-prompt {self.expand_prompt}: no such file")
        if self.prompt is not None:
            placeholders = ["{examples}"] if self.mode == "expand" else ["{question}"] + (
                ["{answer}"] if self.mode in ANSWERED else [])
            if not Path(self.prompt).is_file():
                p.append(f"--prompt {self.prompt}: no such file")
            for placeholder in placeholders:
                if Path(self.prompt).is_file() and placeholder not in Path(self.prompt).read_text(
                        encoding="utf-8", errors="replace"):
                    p.append(f"--prompt {self.prompt}: {self.mode} mode needs a {placeholder} placeholder in it")
        return p + super().problems()


def run_generate(seeds: Path, out: Path, opts: GenerateOptions,
                 on_progress: Callable[[Stats], None] | None = None,
                 on_batch_step: Callable[[str, str], None] | None = None,
                 on_price: Callable[[Price | None], None] | None = None) -> GenerateResult:
    """Run label or expand mode from a seeds file to `out` (+ `out.meta.json`).

    `on_price` hears the price the run is billed at (None: unknown) before anything is sent,
    for a progress line that shows the cost so far.

    With opts.dry_run nothing is sent or written: the result's extra["estimate"] holds the
    cost estimate (kdpipe/teacher/estimate.py)."""
    problems = opts.problems()
    if problems:
        raise UsageError("; ".join(problems))
    sends = not (opts.dry_run or opts.export_batch)
    if sends:  # checked before anything is paid for
        check_outputs_differ([seeds], [out, meta_path(out)])
        prepare_output(out)
        prepare_output(meta_path(out))
    records = load_records(seeds)
    if opts.shard:
        index, count = parse_shard(opts.shard)
        records = [r for r in records if shard_of(r.id, count) == index]
    started = time.time()
    price = opts.price()
    if on_price is not None:
        on_price(price)
    config = opts.teacher_config()
    stats = Stats()
    budget = opts.budget(price)  # less what the runs in --spend-ledger spent
    causes: Counter = Counter()
    with open_cache(opts.cache_path(), not sends) as cache, \
            spending_recorded(opts.spend_ledger if sends else None, out, stats, budget, price):
        backend = make_backend(opts, budget, on_batch_step)
        send = backend.complete
        if sends:
            send = watching_failures(send, causes)
        if opts.mode == "label":
            prompts = label_prompts(records, opts.prompt)
            if opts.import_batch:
                imported = import_batch(config, label_requests(records, prompts, opts.samples), cache,
                                        opts.import_batch)
            lines = [None] * len(records) if sends else None
            result_records, counts = label(records, prompts, config, opts.samples, cache, stats, on_progress, send,
                                           lines)
        elif opts.mode in ANSWERED:
            template = read_prompt(opts.prompt or PROMPTS_DIR / ANSWERED[opts.mode])
            prompts = {template[0]: template}
            make = rationalize if opts.mode == "rationalize" else counterfactual
            result_records, counts, *unusable = make(records, template, config, opts.samples, cache, stats,
                                                     on_progress, send)
        else:
            template = read_prompt(opts.prompt or PROMPTS_DIR / expand_prompt_name(records))
            prompts = {template[0]: template}
            result_records, counts = expand(records, template, config, opts, cache, stats, on_progress, send)
        if opts.export_batch:
            exported = export_batch(config, backend.requests, cache, opts.export_batch)
            return GenerateResult(counts, stats, price, extra={"exported": (*exported, opts.export_batch)},
                                  mode=opts.mode, dry_run=True, out=out, max_tokens=opts.max_tokens)
        if opts.dry_run:
            counter = token_counter(opts.tokenizer)
            total = estimate(config, backend.requests, cache, counter, price, opts.batch)
            if opts.expect_new:
                total = merge_estimates(total, *_expected_new(records, opts, cache, counter, price))
            return GenerateResult(counts, stats, price, extra={"estimate": total, "expect_new": opts.expect_new},
                                  mode=opts.mode, dry_run=True, out=out, max_tokens=opts.max_tokens)
    if opts.mode == "label":
        write_lines(out, lines)
    else:
        write_records(out, result_records)
    cost = price.cost(stats.prompt_tokens, stats.completion_tokens) if price else None
    usage = {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens,
             "cost_usd": None if cost is None else round(cost, 6),
             "requests": stats.requests, "retries": stats.retries, "cached_samples": stats.cached,
             "batch": opts.batch, "price": None if price is None else {"input": price.input, "output": price.output},
             "max_usd": opts.max_usd, "stopped_at_max_usd": bool(budget and budget.stopped),
             "max_usd_spent_earlier": None if budget is None else round(budget.earlier, 6),
             "not_sent_samples": stats.not_sent,
             # Responses that did not say what they cost: cost_usd leaves them out; --max-usd
             # counted them at their worst case (max_usd_counted).
             "responses_without_usage": stats.no_usage, "duplicate_samples": stats.duplicates,
             "max_usd_counted": None if budget is None else round(budget.spent, 6), "replicas": stats.replicas,
             "rate_limit": stats.limits}
    params = asdict(opts)  # write_meta writes paths as text
    params["temperature"] = config.temperature
    hosts = [endpoint_host(u) for u in config.base_urls()]
    params["base_url"] = hosts[0] if len(hosts) == 1 else hosts
    digests = {name: digest for name, digest, _ in prompts.values()}
    extra = {"usage": usage, "prompts": digests}
    if opts.mode == "counterfactual":
        extra["unusable"] = unusable[0]  # each reply that gave no counterfactual, with its source and reason
    if opts.import_batch:
        extra["imported_batch"] = {"file": str(opts.import_batch), **imported}
    if opts.shard:
        extra["shard"] = shard_meta(seeds, *parse_shard(opts.shard), params, digests, len(result_records))
    write_meta(out, stage="generate", params=params, inputs=[seeds], counts=counts, started=started, extra=extra)
    return GenerateResult(counts, stats, price, cost, extra={"budget": budget}, mode=opts.mode, out=out,
                          max_tokens=opts.max_tokens, causes=causes)


def _expected_new(records, opts: GenerateOptions, cache, counter, price):
    """The estimates of expanding opts.expect_new new questions (the first round of requests)
    and of labelling that many stand-ins for them (generate/plan.py)."""
    expand_opts = replace(opts, mode="expand", num_new=opts.expect_new, samples=1, temperature=None,
                          prompt=opts.expand_prompt, expect_new=0, expand_prompt=None)
    dry = DryRunBackend()
    template = read_prompt(opts.expand_prompt or PROMPTS_DIR / "expand.txt")
    expand(records, template, expand_opts.teacher_config(), expand_opts, cache, Stats(), None, dry.complete)
    expansion = estimate(expand_opts.teacher_config(), dry.requests, cache, counter, price, opts.batch)
    new = stand_ins(records, opts.expect_new)
    requests = label_requests(new, label_prompts(new, opts.prompt), opts.samples)
    return expansion, estimate(opts.teacher_config(), requests, NothingCached(cache), counter, price, opts.batch)


# ------------------------------------------------------------------ label


def label(records, prompts, config: TeacherConfig, samples: int, cache, stats, on_progress, send=complete,
          lines: list | None = None):
    """Label records in place with `samples` teacher samples each; returns (records, counts).
    `send` answers the requests: a teacher backend's complete (kdpipe/teacher/backend.py).
    `lines` (one None per record): each record's output line (record_line) is put there as soon
    as it is labelled, so that the writing at the end only joins them."""
    counts: Counter = Counter()
    provenance = {name: {**config.provenance(), "samples": samples, "prompt": name, "prompt_digest": digest}
                  for name, digest, _ in prompts.values()}

    def answered(r: int, completions) -> None:
        # Called as each record's samples are known: the parsing overlaps the wait for the others.
        record = records[r]
        record.samples = [to_sample(c, record) for c in completions]
        record.provenance = {**record.provenance, "teacher": {**provenance[prompts[record.task][0]]}}
        for s in record.samples:
            counts["samples"] += 1
            counts["ok" if s.ok else s.error] += 1
        counts["records"] += 1
        counts["records_labeled"] += any(s.ok for s in record.samples)
        if lines is not None:
            lines[r] = record_line(record)

    send(config, label_requests(records, prompts, samples), cache, stats, on_progress, on_answered=answered)
    counts["cached"] = stats.cached
    return records, {k: counts[k] for k in ("records", "records_labeled", "samples", "ok", *SAMPLE_ERRORS,
                                            "cached")}
