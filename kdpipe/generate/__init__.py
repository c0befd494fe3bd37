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

Every response goes through the teacher cache (kdpipe/teacher/cache.py), so a
rerun after a crash pays only for what never completed, and the output is
written whole, in input order, at the end.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from kdpipe import answers
from kdpipe.errors import UsageError
from kdpipe.generate.cost import open_cache
from kdpipe.generate.plan import NothingCached, merge_estimates, stand_ins
from kdpipe.generate.result import GenerateResult, watching_failures
from kdpipe.keys import question_key
from kdpipe.label_prompts import PROMPTS_DIR, label_prompts, label_requests, read_prompt
from kdpipe.records import (
    SAMPLE_ERRORS, Record, Sample, check_outputs_differ, load_records, meta_path, prepare_output, write_meta,
    write_records,
)
from kdpipe.options import option
from kdpipe.teacher.backend import make_backend
from kdpipe.teacher.backend_dry_run import DryRunBackend
from kdpipe.teacher.client import ChatRequest, Completion, Stats, TeacherConfig, complete
from kdpipe.teacher.pricing import Price
from kdpipe.teacher.budget import NOT_SENT
from kdpipe.teacher.estimate import estimate, token_counter
from kdpipe.teacher.options import TeacherOptions

MODES = ("label", "expand")
NEW_PER_REQUEST = 8  # questions asked for in one expansion request
MAX_EMPTY_ROUNDS = 3  # expansion rounds in a row without a new question before giving up


@dataclass
class GenerateOptions(TeacherOptions):
    """generate's options: the teacher's (who, how to reach and pay it: TeacherOptions) and these."""

    mode: str = option("label", "label: answer with rationales; expand: write new questions like the seeds.")
    samples: int = option(1, "Completions per question (label mode only). Raising it later pays only for the "
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
                                       "prompts/expand_hard.txt for `kdpipe probe` output).")
    logprobs: int | None = option(None, "Also keep, per completion token, the teacher's logprob and its K most "
                                        "likely alternatives (1 to 20; label mode), for format --style kd.",
                                  metavar="K")
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
        return 0.0 if self.mode == "label" and self.samples == 1 else 0.7

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
        if self.mode == "expand" and self.logprobs is not None:
            p.append("--logprobs is for label mode (expand writes questions, not training targets)")
        if self.mode == "label":
            wrong = [flag for flag, name in (("--num-new", "num_new"), ("--seeds-per-prompt", "seeds_per_prompt"))
                     if getattr(self, name) != getattr(GenerateOptions, name)]
            if wrong:
                p.append(f"{' and '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} for expand mode, "
                         "not label mode")
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
            placeholder = "{examples}" if self.mode == "expand" else "{question}"
            if not Path(self.prompt).is_file():
                p.append(f"--prompt {self.prompt}: no such file")
            elif placeholder not in Path(self.prompt).read_text(encoding="utf-8", errors="replace"):
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
    if not opts.dry_run:  # checked before anything is paid for
        check_outputs_differ([seeds], [out, meta_path(out)])
        prepare_output(out)
        prepare_output(meta_path(out))
    records = load_records(seeds)
    started = time.time()
    price = opts.price()
    if on_price is not None:
        on_price(price)
    config = opts.teacher_config()
    stats = Stats()
    budget = opts.budget(price)
    causes: Counter = Counter()
    with open_cache(opts.cache_path(), opts.dry_run) as cache:
        backend = make_backend(opts, budget, on_batch_step)
        send = backend.complete
        if not opts.dry_run:
            send = watching_failures(send, causes)
        if opts.mode == "label":
            prompts = label_prompts(records, opts.prompt)
            result_records, counts = label(records, prompts, config, opts.samples, cache, stats, on_progress, send)
        else:
            template = read_prompt(opts.prompt or PROMPTS_DIR / expand_prompt_name(records))
            prompts = {template[0]: template}
            result_records, counts = expand(records, template, config, opts, cache, stats, on_progress, send)
        if opts.dry_run:
            counter = token_counter(opts.tokenizer)
            total = estimate(config, backend.requests, cache, counter, price, opts.batch)
            if opts.expect_new:
                total = merge_estimates(total, *_expected_new(records, opts, cache, counter, price))
            return GenerateResult(counts, stats, price, extra={"estimate": total, "expect_new": opts.expect_new},
                                  mode=opts.mode, dry_run=True, out=out, max_tokens=opts.max_tokens)
    write_records(out, result_records)
    cost = price.cost(stats.prompt_tokens, stats.completion_tokens) if price else None
    usage = {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens,
             "cost_usd": None if cost is None else round(cost, 6),
             "requests": stats.requests, "retries": stats.retries, "cached_samples": stats.cached,
             "batch": opts.batch, "price": None if price is None else {"input": price.input, "output": price.output},
             "max_usd": opts.max_usd, "stopped_at_max_usd": bool(budget and budget.stopped),
             "not_sent_samples": stats.not_sent,
             # Responses that did not say what they cost: cost_usd leaves them out; --max-usd
             # counted them at their worst case (max_usd_counted).
             "responses_without_usage": stats.no_usage, "duplicate_samples": stats.duplicates,
             "max_usd_counted": None if budget is None else round(budget.spent, 6)}
    params = asdict(opts)  # write_meta writes paths as text
    params["temperature"] = config.temperature
    params["base_url"] = config.provenance()["base_url_host"]
    write_meta(out, stage="generate", params=params, inputs=[seeds], counts=counts, started=started,
               extra={"usage": usage, "prompts": {name: digest for name, digest, _ in prompts.values()}})
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


# ------------------------------------------------------------------ prompts


# ------------------------------------------------------------------ label


def label(records, prompts, config: TeacherConfig, samples: int, cache, stats, on_progress, send=complete):
    """Label records in place with `samples` teacher samples each; returns (records, counts).
    `send` answers the requests: a teacher backend's complete (kdpipe/teacher/backend.py)."""
    results = send(config, label_requests(records, prompts, samples), cache, stats, on_progress)
    counts: Counter = Counter()
    for record, completions in zip(records, results):
        name, digest, _ = prompts[record.task]
        record.samples = [to_sample(c, record) for c in completions]
        record.provenance = {**record.provenance, "teacher": {
            **config.provenance(), "samples": samples, "prompt": name, "prompt_digest": digest}}
        for s in record.samples:
            counts["samples"] += 1
            counts["ok" if s.ok else s.error] += 1
        counts["records"] += 1
        counts["records_labeled"] += any(s.ok for s in record.samples)
    counts["cached"] = stats.cached
    return records, {k: counts[k] for k in ("records", "records_labeled", "samples", "ok", *SAMPLE_ERRORS,
                                            "cached")}


def to_sample(c: Completion, record: Record) -> Sample:
    """A teacher completion as a Sample: rationale and answer, or the reason there is none."""
    if c.error is not None:
        return Sample(index=c.index, error=c.error if c.error in SAMPLE_ERRORS else "transport", detail=c.detail,
                      usage=c.usage, cached=c.cached)
    p = answers.parse_completion(c.text, record.task, record.choices)
    s = Sample(index=c.index, text=c.text, rationale=p.rationale, answer=p.answer,
               finish_reason=c.finish_reason, error=p.error, detail=p.detail, usage=c.usage, cached=c.cached,
               logprobs=c.logprobs)
    if c.finish_reason == "length" and s.error != "empty" and (p.answer is None or not answers.runs_on(c.text)):
        # Cut off before (or inside) its answer: "The answer is 12" may have been "125".
        s.error, s.answer = "truncated", None
        s.detail = "stopped at --max-tokens (finish_reason length)" + (
            f"; the cut text reads {p.answer!r}" if p.answer else "")
    elif c.finish_reason == "content_filter" and s.answer is None:
        s.error, s.detail = "refusal", "the endpoint's content filter stopped the completion"
    return s


# ------------------------------------------------------------------ expand

_LIST_ITEM = re.compile(r"^\s*(?:\(?\d{1,3}[.):]|[-*•]|Q\d*[.:])\s+(.*\S)\s*$")
_QUESTION_PREFIX = re.compile(r"^(?:\*\*)?(?:new\s+)?question\s*\d*\s*[:.]\s*(?:\*\*)?\s*", re.I)


def parse_question_list(text: str | None) -> list[str]:
    """New questions from a numbered list, a bullet list or a JSON array (of strings or
    of objects with a "question" field); an item may run over several lines."""
    if not text or not text.strip():
        return []
    s = answers.unfenced(text)
    if s.startswith("["):
        try:
            items = json.loads(s)
        except ValueError:
            items = None
        if isinstance(items, list):
            out = [i.get("question") if isinstance(i, dict) else i for i in items]
            return [_clean_question(q) for q in out if isinstance(q, str) and _clean_question(q)]
    questions: list[list[str]] = []
    open_item = False  # a blank line closes an item: what follows it is commentary, not question
    for line in s.splitlines():
        m = _LIST_ITEM.match(line)
        if m:
            questions.append([m.group(1)])
            open_item = True
        elif not line.strip():
            open_item = False
        elif open_item:
            questions[-1].append(line.strip())
    return [q for q in (_clean_question("\n".join(parts)) for parts in questions) if q]


def _clean_question(q: str) -> str:
    return _QUESTION_PREFIX.sub("", q.strip()).strip().strip("*").strip()


def expand_prompt_name(seeds) -> str:
    """Instruction seeds get the Self-Instruct prompt (new tasks, with inputs where needed); the questions
    `kdpipe probe` found hard get expand_hard.txt (new questions of that kind and difficulty); others expand.txt."""
    if seeds and all(r.task == "instruction" for r in seeds):
        return "expand_instruction.txt"
    return "expand_hard.txt" if probed(seeds) else "expand.txt"


def probed(seeds) -> bool:
    """Seeds written by `kdpipe probe` (each carries the student's answer and whether it was wrong)."""
    return bool(seeds) and all("probe" in r.provenance for r in seeds)


def render_expand_prompt(template: str, examples: list[str], num: int) -> str:
    listing = "\n".join(f"{i}. {q}" for i, q in enumerate(examples, 1))
    return template.replace("{k}", str(len(examples))).replace("{examples}", listing).replace("{num}", str(num))


def expand(seeds, template, config: TeacherConfig, opts: GenerateOptions, cache, stats, on_progress,
           send=complete):
    """New seed records written by the teacher from sampled seeds; returns (records, counts)."""
    name, digest, text = template
    tasks = sorted({r.task for r in seeds})
    if "choice" in tasks:
        raise UsageError("--mode expand writes numeric and text questions; multiple-choice seeds are not supported")
    pools = {t: [r for r in seeds if r.task == t] for t in tasks}
    seen = {question_key(r.question) for r in seeds}
    new: list[Record] = []
    counts: Counter = Counter()
    teacher = {**config.provenance(), "prompt": name, "prompt_digest": digest}
    hard_seeds = probed(seeds)
    loop = {} if opts.round is None else {"round": opts.round}
    j, empty_rounds = 0, 0
    while len(new) < opts.num_new and empty_rounds < MAX_EMPTY_ROUNDS:
        missing = opts.num_new - len(new)
        batch = -(-missing // NEW_PER_REQUEST)  # duplicates and failures are made up in the next round
        plans = [(_hard_plan(seeds, pools, opts, j + b) if hard_seeds else _expansion_plan(pools, tasks, opts, j + b))
                 for b in range(batch)]
        # Request j is sample j of the expansion: two requests that happen to show the same seeds
        # are still two draws from the teacher, cached apart.
        requests = [ChatRequest([{"role": "user", "content": render_expand_prompt(
                        text, [r.question for r in chosen], NEW_PER_REQUEST)}], n=1, first_sample=j + b)
                    for b, (_, chosen) in enumerate(plans)]
        results = send(config, requests, cache, stats, on_progress)
        before = len(new)
        # Requests are read in their own order, not in the order they finished: same output every run.
        counts["requests"] += len(plans)
        for (task, chosen), (c,) in zip(plans, results):
            if c.error is not None:
                counts[c.error if c.error in (NOT_SENT, "malformed") else "transport"] += 1
                continue
            proposed = parse_question_list(c.text)
            if c.finish_reason == "length" and proposed:
                # Cut off by --max-tokens: the last item is the one being written ("... How").
                proposed.pop()
                counts["truncated"] += 1
            for q in proposed:
                counts["proposed"] += 1
                key = question_key(q)
                if not key or key in seen:
                    counts["duplicates"] += 1
                    continue
                seen.add(key)
                hard = [r.id for r in chosen if r.provenance.get("probe", {}).get("hard")]
                new.append(Record(id=_new_id(task, q), question=q, task=task, provenance={
                    "source": "expand", "inspired_by": [r.id for r in chosen], **loop,
                    **({"inspired_by_hard": hard} if hard_seeds else {}), "teacher": teacher}))
                if len(new) == opts.num_new:
                    break
            if len(new) == opts.num_new:
                break
        j += batch
        empty_rounds = empty_rounds + 1 if len(new) == before else 0
        if counts[NOT_SENT]:  # the spending cap was reached (or a dry run): no further rounds
            break
    counts["written"] = len(new)
    counts["short_of_target"] = opts.num_new - len(new)
    return new, dict(counts)


def _expansion_plan(pools, tasks, opts: GenerateOptions, j: int) -> tuple[str, list[Record]]:
    """The task and seed examples of expansion request j: a pure function of (seed, j)."""
    task = tasks[j % len(tasks)]
    rng = random.Random(f"{opts.seed or 0}:{j}")
    pool = pools[task]
    return task, rng.sample(pool, min(opts.seeds_per_prompt, len(pool)))


def _hard_plan(seeds, pools, opts: GenerateOptions, j: int) -> tuple[str, list[Record]]:
    """Expansion request j from probed seeds: one seed drawn from them all decides the task, so the
    new questions follow the kinds the student failed (round robin over tasks would not), and the
    other examples come from its task. A pure function of (seed, j)."""
    rng = random.Random(f"hard:{opts.seed or 0}:{j}")
    anchor = rng.choice(seeds)
    others = [r for r in pools[anchor.task] if r is not anchor]
    return anchor.task, [anchor, *rng.sample(others, min(opts.seeds_per_prompt - 1, len(others)))]


def _new_id(task: str, question: str) -> str:
    return "x-" + hashlib.sha256(f"{task}\0{question}".encode("utf-8")).hexdigest()[:16]
