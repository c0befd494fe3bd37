"""`kdpipe filter`: keep only teacher output worth training a student on.

The rules are an ordered list (filter/rules.py); each can be switched off, and
the first rule that removes a record's last sample, or the record itself, is
its reason. Records are the unit of the contamination and duplicate rules:
the samples of one question are never duplicates of each other. Records with
no samples (gold-only seeds) meet only the record rules.

The record rules run record by record on chunks of lines (in worker processes
when the input is large), then contamination on each chunk's survivors; the
survivors stream to a temporary file. The set rules (duplicate,
near_duplicate) need the whole set and work on compact hashes (see dedup.py):
~90 bytes held per surviving record whatever its size, its shingle hashes (4
bytes a word) in a temporary file read back for candidate pairs only, and time
linear in the input. Ids must be unique, as everywhere: a hash of each (16
bytes a record, read back at the end) finds one used twice. A second pass
copies the survivors into the output. Numpy is imported when the stage runs,
not with the CLI.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from kdpipe.errors import InputError, KdpipeError, UsageError
from kdpipe.options import Options, option, options_block
from kdpipe.teacher.options import TeacherOptions
from kdpipe.filter.judged import JUDGE_FLAGS, JUDGE_HELPS, JUDGE_OFFERED, judge_flag
from kdpipe.filter.report import FilterReport, rules_help  # noqa: F401  (the stage's API)
from kdpipe.filter.rules import (  # noqa: F401  (judge, restates_answer: the rules' API)
    Reason, judge, kept_obj, rejected_obj, restates_answer, rules_in, unchanged_when_kept, with_reason,
)
from kdpipe.records import (
    atomic_file, cannot_write, check_input_file, check_outputs_differ, dumps, parse_json_line, read_records,
    prepare_output, record_at, write_meta,
)

_CHUNK = 2048  # lines per unit of work (and per batch of MinHash arithmetic)
_PARALLEL_FROM = 16 << 20  # bytes of input from which `workers=0` (auto) uses several processes


@dataclass
class FilterOptions(Options):
    drop_errors: bool = option(True, "teacher_error rule: drop samples `generate` marked as errors.",
                               flags="--drop-errors/--keep-errors")
    decomposition: bool = option(True, "malformed_decomposition rule: drop samples of a Socratic label prompt "
                                       "whose sub-questions and answers do not parse.",
                                 flags="--decomposition/--no-decomposition")
    gold: bool = option(True, "gold_mismatch rule: drop samples whose answer disagrees with the gold answer.",
                        flags="--gold/--no-gold")
    drop_rationalized: bool = option(False, "rationalized rule: drop the samples `generate --mode rationalize` wrote "
                                     "with the gold answer given.", flags="--drop-rationalized/--keep-rationalized")
    check_counterfactual: bool = option(True, "counterfactual_* rules: keep an edit the teacher labels as intended.",
                                        flags="--check-counterfactual/--no-check-counterfactual")
    rel_tol: float = option(1e-4, "Relative tolerance of non-integer numeric answers (integers compare "
                                  "exactly).")
    vote: bool = option(True, "no_consensus and minority_answer rules: majority vote over the samples of "
                              "records without gold.",
                        flags="--vote/--no-vote")
    min_agreement: float = option(0.5, "Share of samples the majority answer needs.")
    length: bool = option(True, "question_length and rationale_length rules: word bounds on question and "
                                "rationale.", flags="--length/--no-length")
    min_question_words: int = option(2)
    max_question_words: int = option(1000)
    min_rationale_words: int = option(3)
    max_rationale_words: int = option(1000)
    restated: bool = option(True, "rationale_restates_answer rule: drop a rationale that only restates the answer.",
                            flags="--restated/--no-restated")
    dedup: bool = option(True, "duplicate rule: drop exact duplicate questions (normalized).",
                         flags="--dedup/--no-dedup")
    near_dup: bool = option(True, "near_duplicate rule: drop a question near an earlier kept one (MinHash-LSH "
                                  "proposes pairs, so may miss one near the threshold; exact Jaccard decides).",
                            flags="--near-dup/--no-near-dup")
    near_threshold: float = option(0.6, "Jaccard similarity of word shingles from which a question is a "
                                        "near-duplicate.")
    shingle: int = option(2, "Words per shingle.")
    against: list[Path] = option(help="Eval records to decontaminate against (repeatable).",
                                 default_factory=list)
    ngram: int = option(13, "Length in words of a span shared with an eval question that counts as "
                            "contamination.")
    workers: int = option(0, "Processes for the record rules (0: one per CPU on a large input).")
    # judge_score rule: a judge model scores every usable sample first (kdpipe/filter/judged.py).
    judge: TeacherOptions = options_block(TeacherOptions, offered=JUDGE_OFFERED, renamed=JUDGE_FLAGS,
                                          helps=JUDGE_HELPS, not_required=True)
    min_score: float = option(7.0, "judge_score rule: lowest judge score (1-10) a sample keeps.")
    judge_prompt: Path | None = option(None, "Pointwise judge prompt (default: prompts/judge_score.txt).")

    def problems(self) -> list[str]:
        problems = []
        if not (0.0 <= self.rel_tol < 1.0):
            problems.append(f"--rel-tol must be in [0, 1), got {self.rel_tol}")
        if not (0.0 < self.min_agreement <= 1.0):
            problems.append(f"--min-agreement must be in (0, 1], got {self.min_agreement}")
        for name in ("min_question_words", "max_question_words", "min_rationale_words", "max_rationale_words"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')} must not be negative")
        if self.min_question_words > self.max_question_words:
            problems.append("--min-question-words is larger than --max-question-words")
        if self.min_rationale_words > self.max_rationale_words:
            problems.append("--min-rationale-words is larger than --max-rationale-words")
        if not (0.0 < self.near_threshold <= 1.0):
            problems.append(f"--near-threshold must be in (0, 1], got {self.near_threshold}")
        if not (1 <= self.shingle <= 20):
            problems.append(f"--shingle must be between 1 and 20 words, got {self.shingle}")
        if self.workers < 0:
            problems.append(f"--workers must not be negative, got {self.workers}")
        if not (1 <= self.ngram <= 100):
            problems.append(f"--ngram must be between 1 and 100 words, got {self.ngram}")
        for p in self.against:
            if not Path(p).is_file():
                problems.append(f"--against {p}: no such file")
        if self.judge.model:
            problems += self.judge.problems(judge_flag)
            if self.judge.dry_run:
                problems.append("filter --judge cannot dry-run: samples never scored would all be dropped")
            if not (1.0 <= self.min_score <= 10.0):
                problems.append(f"--min-score must be between 1 and 10, got {self.min_score:g}")
            if self.judge_prompt is not None and not Path(self.judge_prompt).is_file():
                problems.append(f"--judge-prompt {self.judge_prompt}: no such file")
        return problems


# ------------------------------------------------------------------ the stage


def load_eval_index(paths: list[Path], opts: FilterOptions):
    from kdpipe.filter import dedup

    if not paths:
        return None
    ids, words = [], []
    for p in paths:
        for rec in read_records(p):
            ids.append(rec.id)
            words.append(dedup.words_of(rec.question))
    return dedup.EvalIndex(ids, words, opts.ngram, opts.shingle, opts.near_threshold)


def run_filter(inp: str | Path, out: str | Path, opts: FilterOptions | None = None, *,
               rejected: str | Path | None = None, report: str | Path | None = None) -> FilterReport:
    """Filter the records of `inp` into `out` (and the dropped ones into `rejected`)."""
    import numpy as np

    from kdpipe.filter import dedup

    opts = opts or FilterOptions()
    opts.validate()
    inp, out = check_input_file(inp), Path(out)
    outputs = [Path(p) for p in (out, rejected, report) if p is not None]
    check_outputs_differ([inp, *opts.against], outputs)
    if len({p.resolve() for p in outputs}) < len(outputs):
        raise UsageError("-o, --rejected and --report must be different files")
    started = time.time()
    rep = FilterReport()
    evals = load_eval_index(opts.against, opts)

    for p in outputs:
        prepare_output(p)
    with contextlib.ExitStack() as stack:
        try:
            tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f".{out.name}.",
                                                                          dir=out.parent)))
        except OSError as e:
            raise cannot_write(out, e) from None
        survivors_path, early_rejects_path = tmpdir / "survivors.jsonl", tmpdir / "rejected.jsonl"
        if opts.judge.model:
            from kdpipe.filter.judged import judge_samples

            judged = tmpdir / "judged.jsonl"
            rep.judge_cost = judge_samples(inp, judged, opts)
        feats = _first_pass(judged if opts.judge.model else inp, opts, evals, rep, survivors_path,
                            early_rejects_path)
        dedup.check_unique_ids(inp, np.fromfile(tmpdir / "ids.bin", dtype=np.uint64).reshape(-1, 2))

        # The set rules over the whole set, on hashes only: each record's earlier match, and which rule.
        n = len(feats.exact)
        set_rules = rules_in("set", opts)
        dup_of = np.full(n, -1, dtype=np.int64)
        rule = np.full(n, -1, dtype=np.int8)  # index in set_rules
        for k, r in enumerate(set_rules if n else ()):
            # A record one rule took takes no part in the next (linked to its first match).
            hit = r.earlier(feats, opts, rule < 0)
            hit_ = hit >= 0
            dup_of[hit_], rule[hit_] = hit[hit_], k
        del feats
        heads = set(dup_of[dup_of >= 0].tolist())

        out_fp = stack.enter_context(atomic_file(out))
        rej_fp = stack.enter_context(atomic_file(rejected)) if rejected else None
        if rej_fp:
            with open(early_rejects_path, encoding="utf-8") as fp:
                for line in fp:
                    rej_fp.write(line)
        head_ids: dict[int, str] = {}
        with open(survivors_path, encoding="utf-8") as fp:
            for i, line in enumerate(fp):
                if i in heads:
                    head_ids[i] = json.loads(line)["id"]
                if rule[i] < 0:
                    out_fp.write(line)
                    continue
                obj = json.loads(line)
                n_samples = len(obj.get("samples") or [])
                r = set_rules[rule[i]]
                rep.records_dropped[r.name] += 1
                rep.samples_dropped[r.name] += n_samples
                rep.samples_kept -= n_samples
                rep.rationalized_gone(obj, r.name, [None] * n_samples)
                if rej_fp:
                    obj = with_reason(obj, Reason(r.name, f"{r.found} {head_ids[int(dup_of[i])]}"))
                    obj.pop("vote_share", None)
                    rej_fp.write(dumps(obj) + "\n")
        rep.kept = rep.input - sum(rep.records_dropped.values())
        rep.seconds = time.time() - started
        if report:
            rep_fp = stack.enter_context(atomic_file(report))
            json.dump(rep.to_dict(), rep_fp, indent=2)
            rep_fp.write("\n")
    write_meta(out, stage="filter", params=asdict(opts), inputs=[inp, *opts.against], counts=rep.to_dict(),
               started=started)
    return rep


@dataclass
class _Chunk:
    """What one chunk of input lines came to: survivor and rejected lines, counts, survivor hashes."""

    kept: list[str]
    rejected: list[str]
    report: FilterReport
    feats: object  # dedup.Features of the kept lines
    ids: object = None  # (records, 2) uint64: hash of the id and line number of every record read
    error: str | None = None
    exit_code: int = 1


_STATE: dict = {}  # per process: the input path, options and eval index the chunks are judged with


def _init_state(inp: Path, opts: FilterOptions, evals) -> None:
    _STATE.update(inp=inp, opts=opts, evals=evals)


def _judge_chunk(first_lineno: int, lines: list[bytes]) -> _Chunk:
    """The record and chunk rules over a chunk of raw lines (in a worker process, or inline)."""
    import numpy as np

    from kdpipe.filter import dedup

    inp, opts, evals = _STATE["inp"], _STATE["opts"], _STATE["evals"]
    rep = FilterReport()
    kept: list[tuple[str, list[str], list[str] | None, int, bool]] = []
    rejected: list[str] = []
    ids: list[tuple[int, int]] = []

    def reject(obj, reason: Reason, sample_reasons):
        rep.records_dropped[reason.rule] += 1
        # Samples that still stood go with the record and count under its rule.
        rep.samples_dropped[reason.rule] += sum(1 for r in sample_reasons if r is None)
        rep.rationalized_gone(obj, reason.rule, sample_reasons)
        rejected.append(dumps(rejected_obj(obj, reason, sample_reasons)))

    try:
        for lineno, raw in enumerate(lines, start=first_lineno):
            obj = parse_json_line(inp, lineno, raw)
            if obj is None:
                continue
            rec = record_at(inp, lineno, obj)
            ids.append((dedup.id_key(rec.id), lineno))
            rep.input += 1
            rep.samples_input += len(rec.samples)
            reason, sample_reasons = judge(rec, opts)
            rep.note_rationalized(rec.samples, sample_reasons)
            for r in sample_reasons:
                if r is not None:
                    rep.samples_dropped[r.rule] += 1
                    if r.rule == "teacher_error":
                        rep.teacher_errors[r.detail] += 1
            if reason is not None:
                reject(obj, reason, sample_reasons)
                continue
            if unchanged_when_kept(obj, rec, sample_reasons):
                # The common case: copy the line rather than encode the object again.
                line = raw.decode("utf-8").strip().lstrip("\ufeff")
            else:
                line = dumps(kept_obj(obj, rec, sample_reasons))
            rep.voted += rec.vote_share is not None
            kept.append((line, dedup.words_of(rec.question), rec.choices,
                         len(rec.samples) - sum(r is not None for r in sample_reasons),
                         "counterfactual" in rec.provenance))
    except KdpipeError as e:  # InputError does not survive pickling: send the message back
        return _Chunk([], [], rep, None, None, str(e), e.exit_code)

    word_lists = [k[1] for k in kept]
    words = dedup.Words.of(word_lists)
    feats = dedup.features(word_lists, [k[2] for k in kept], opts.shingle, words)
    keep = np.ones(len(kept), dtype=bool)
    for rule in rules_in("chunk", opts):
        for k, detail in enumerate(rule.check_chunk(evals, words, feats)):
            if detail is not None and keep[k]:
                keep[k] = False
                reject(json.loads(kept[k][0]), Reason(rule.name, detail), [None] * kept[k][3])
    dedup.apart(feats, [k[4] for k in kept])  # after the eval check: the set rules only
    survivors = [k[0] for k, k_ in zip(kept, keep) if k_]
    rep.samples_kept += sum(k[3] for k, k_ in zip(kept, keep) if k_)
    return _Chunk(survivors, rejected, rep, feats.select(keep), dedup.id_lines(ids))


def _read_chunks(inp: Path) -> Iterator[tuple[int, list[bytes]]]:
    with open(inp, "rb") as fp:
        lineno = 1
        while True:
            lines = list(itertools.islice(fp, _CHUNK))
            if not lines:
                return
            yield lineno, lines
            lineno += len(lines)


def _workers(opts: FilterOptions, inp: Path) -> int:
    if opts.workers:
        return opts.workers
    if inp.stat().st_size < _PARALLEL_FROM:
        return 1  # starting processes costs more than it saves on a small file
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()))


def _chunk_results(inp: Path, opts: FilterOptions, evals) -> Iterator[_Chunk]:
    workers = _workers(opts, inp)
    if workers == 1:
        _init_state(inp, opts, evals)
        for first, lines in _read_chunks(inp):
            yield _judge_chunk(first, lines)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, initializer=_init_state, initargs=(inp, opts, evals)) as pool:
        pending: collections.deque = collections.deque()
        for first, lines in _read_chunks(inp):
            pending.append(pool.submit(_judge_chunk, first, lines))
            if len(pending) >= 2 * workers:  # a bounded window: memory stays flat however big the file
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _first_pass(inp: Path, opts: FilterOptions, evals, rep: FilterReport, survivors_path: Path,
                rejects_path: Path):
    """The record and chunk rules chunk by chunk, in input order; survivors go to a temporary file,
    and their hashes (dedup.Features) are returned for the set rules."""
    import numpy as np

    from kdpipe.filter import dedup

    # The hashes of each chunk are appended to files and read back once at the end: memory then
    # holds the final arrays only (appending to numpy arrays would hold two copies or fragment).
    tmp = survivors_path.parent
    shapes = {"exact": (np.uint64, ()), "bands": (np.uint32, (dedup.BANDS,)), "set_sizes": (np.uint32, ()),
              "shingle_sets": (np.uint32, ())}
    with contextlib.ExitStack() as files:
        surv = files.enter_context(open(survivors_path, "w", encoding="utf-8"))
        rej = files.enter_context(open(rejects_path, "w", encoding="utf-8"))
        hashes = {name: files.enter_context(open(tmp / f"{name}.bin", "wb")) for name in shapes}
        ids = files.enter_context(open(tmp / "ids.bin", "wb"))
        for chunk in _chunk_results(inp, opts, evals):
            if chunk.error is not None:
                err = KdpipeError(chunk.error)
                err.exit_code = chunk.exit_code
                raise err
            for line in chunk.kept:
                surv.write(line + "\n")
            for line in chunk.rejected:
                rej.write(line + "\n")
            rep.merge(chunk.report)
            chunk.ids.tofile(ids)
            for name, fp in hashes.items():
                getattr(chunk.feats, name).tofile(fp)
    if not rep.input:
        raise InputError(inp, "empty file: no records")
    feats = {name: np.fromfile(tmp / f"{name}.bin", dtype=dtype).reshape(-1, *shape)
             for name, (dtype, shape) in shapes.items() if name != "shingle_sets"}
    # The shingle sets (~4 bytes a word) stay on disk: near_duplicate_of reads those of candidate pairs.
    sets_path = tmp / "shingle_sets.bin"
    sets = np.memmap(sets_path, dtype=np.uint32, mode="r") if sets_path.stat().st_size else np.zeros(0, np.uint32)
    return dedup.Features(sketch=None, shingle_sets=sets, **feats)

