"""`kdpipe filter`: keep only teacher output worth training a student on.

Rules, applied in this order (each can be switched off); the first rule that
removes a record's last sample, or the record itself, is its reason:

    1. teacher_error     sample marked by `generate` (unparseable, empty,
                         truncated, refusal, transport) or with no answer
    2. gold_mismatch     sample whose answer disagrees with the gold answer
                         (answers.answers_agree: numbers within a tolerance,
                         choices by letter or text, text normalized)
    3. no_consensus /    no gold and several samples: majority vote on
       minority_answer   answers.answer_key; when the top answer's share
                         reaches --min-agreement its samples are kept (and
                         `vote_share` recorded), else the record goes
    4. question_length   question outside the word bounds (record)
       rationale_length  rationale outside the word bounds (sample)
       rationale_restates_answer  rationale with nothing but the answer in it
    5. contaminated      (--against EVAL) question sharing a long n-gram with
                         an eval question, or near-duplicating one
    6. duplicate         same question as an earlier kept record, after
                         normalization (and the same options)
    7. near_duplicate    MinHash-LSH estimated Jaccard of word shingles with
                         an earlier record >= --near-threshold; the first of
                         each cluster is kept

Records are the unit of 6 and 7: the samples of one question are never
duplicates of each other. Records with no samples (gold-only seeds) meet only
rules 4-7. Numpy is imported when the stage runs, not with the CLI. Rules 1-5 run record by record while reading; 6 and 7 need the
whole set and work on compact hashes (see dedup.py), so memory per record is
~130 bytes whatever its size, and the time is linear in the input.
"""

from __future__ import annotations

import contextlib
import functools
import json
import string
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kdpipe import answers
from kdpipe.errors import InputError, UsageError
from kdpipe.records import (
    Record, atomic_file, check_outputs_differ, dumps, iter_json_objects, read_records, write_meta,
)

RULES = ("teacher_error", "gold_mismatch", "no_consensus", "minority_answer", "question_length",
         "rationale_length", "rationale_restates_answer", "contaminated", "duplicate", "near_duplicate")

# Words that may surround an answer without making a rationale of it ("So the answer is 42.").
_FILLER = frozenset("so thus therefore hence answer is it final correct we get that this which "
                    "means option choice result equals".split())
_ARTICLES = frozenset(("a", "an", "the"))
_PUNCT = string.punctuation + "“”‘’"
_BATCH = 4096


@dataclass
class FilterOptions:
    drop_errors: bool = True
    gold: bool = True
    rel_tol: float = 1e-4
    vote: bool = True
    min_agreement: float = 0.5
    length: bool = True
    min_question_words: int = 2
    max_question_words: int = 1000
    min_rationale_words: int = 3
    max_rationale_words: int = 1000
    restated: bool = True
    dedup: bool = True
    near_dup: bool = True
    near_threshold: float = 0.6
    shingle: int = 2
    against: list[Path] = field(default_factory=list)
    ngram: int = 13

    def validate(self) -> None:
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
        if not (1 <= self.ngram <= 100):
            problems.append(f"--ngram must be between 1 and 100 words, got {self.ngram}")
        for p in self.against:
            if not Path(p).is_file():
                problems.append(f"--against {p}: no such file")
        if problems:
            raise UsageError("; ".join(problems))


@dataclass
class FilterReport:
    input: int = 0
    kept: int = 0
    samples_input: int = 0
    samples_kept: int = 0
    records_dropped: Counter = field(default_factory=Counter)
    samples_dropped: Counter = field(default_factory=Counter)
    teacher_errors: Counter = field(default_factory=Counter)
    voted: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "input": self.input, "kept": self.kept, "dropped": self.input - self.kept,
            "samples_input": self.samples_input, "samples_kept": self.samples_kept,
            "rules": [{"rule": r, "records": self.records_dropped[r], "samples": self.samples_dropped[r]}
                      for r in RULES],
            "teacher_errors": dict(self.teacher_errors), "voted_records": self.voted,
            "seconds": round(self.seconds, 3),
        }

    def table(self) -> str:
        lines = [f"{'rule':<27} {'records':>9} {'samples':>9}", f"{'input':<27} {self.input:>9} "
                 f"{self.samples_input:>9}"]
        for r in RULES:
            if self.records_dropped[r] or self.samples_dropped[r]:
                lines.append(f"  - {r:<23} {self.records_dropped[r]:>9} {self.samples_dropped[r]:>9}")
        lines.append(f"{'kept':<27} {self.kept:>9} {self.samples_kept:>9}")
        return "\n".join(lines)


# ------------------------------------------------------------------ record rules


@functools.lru_cache(maxsize=1 << 16)
def _agree(pred, gold, task, choices, rel_tol):
    return answers.answers_agree(pred, gold, task, list(choices) if choices else None, rel_tol)


@functools.lru_cache(maxsize=1 << 16)
def _key(answer, task, choices):
    return answers.answer_key(answer, task, list(choices) if choices else None)


@functools.lru_cache(maxsize=1 << 16)
def _answer_words(answer: str) -> frozenset[str]:
    return frozenset(answers.normalize_text(answer).split())


def restates_answer(rationale: str, answer: str) -> bool:
    """Whether a rationale says nothing but the answer: fewer than two words of its own.

    Words of the answer, filler words ("so", "the answer is") and single
    letters (option labels) are not the rationale's own.
    """
    answer_words = _answer_words(answer)
    own = 0
    for w in rationale.split():
        # Fast path on raw words: most rationales show two words of their own at once.
        w = w.strip(_PUNCT).casefold()
        if len(w) > 1 and w.isalpha() and w not in answer_words and w not in _FILLER and w not in _ARTICLES:
            own += 1
            if own >= 2:
                return False
    own_words = [w for w in answers.normalize_text(rationale).split()
                 if w not in answer_words and w not in _FILLER and not (len(w) == 1 and w.isalpha())]
    return len(own_words) < 2


def judge(rec: Record, opts: FilterOptions) -> tuple[str | None, list[str | None]]:
    """Apply rules 1-4 to one record: (the record's reason or None, each sample's reason or None)."""
    reasons: list[str | None] = [None] * len(rec.samples)
    choices = tuple(rec.choices) if rec.choices else None

    def alive():
        return [i for i, r in enumerate(reasons) if r is None] if reasons else reasons

    def drop(i, rule, detail=""):
        reasons[i] = rule + (f": {detail}" if detail else "")

    def record_reason(rule):
        # The record goes when the rule took its last sample.
        return rule if reasons and None not in reasons else None

    rec.vote_share = None
    if opts.drop_errors:
        for i, s in enumerate(rec.samples):
            if s.error is not None or s.answer is None:
                drop(i, "teacher_error", s.error or "no answer")
        if (why := record_reason("teacher_error")):
            return why, reasons
    if opts.gold and rec.gold is not None:
        for i in alive():
            a = rec.samples[i].answer
            if not _agree(a, rec.gold, rec.task, choices, opts.rel_tol):
                drop(i, "gold_mismatch", f"answer {a!r}, gold {rec.gold!r}")
        if (why := record_reason("gold_mismatch")):
            return why, reasons
    if opts.vote and rec.gold is None and len(alive()) > 1:
        live = alive()
        keys = {i: _key(rec.samples[i].answer, rec.task, choices) for i in live}
        counts = Counter(k for k in keys.values() if k is not None)
        top = counts.most_common(2)
        share = top[0][1] / len(live) if top else 0.0
        tied = len(top) > 1 and top[0][1] == top[1][1]
        if not top or tied or share < opts.min_agreement:
            for i in live:
                drop(i, "no_consensus", f"top answer share {share:.2f}" + (" (tie)" if tied else ""))
            return "no_consensus", reasons
        for i in live:
            if keys[i] != top[0][0]:
                drop(i, "minority_answer", f"majority {top[0][0]!r} with share {share:.2f}")
        rec.vote_share = round(share, 4)
    if opts.length:
        n = len(rec.question.split())
        if not (opts.min_question_words <= n <= opts.max_question_words):
            return (f"question_length: {n} words, bounds {opts.min_question_words}-"
                    f"{opts.max_question_words}"), reasons
        for i in alive():
            s = rec.samples[i]
            n = len(s.rationale.split()) if s.rationale else 0
            if not (opts.min_rationale_words <= n <= opts.max_rationale_words):
                drop(i, "rationale_length", f"{n} words, bounds {opts.min_rationale_words}-"
                                            f"{opts.max_rationale_words}")
        if (why := record_reason("rationale_length")):
            return why, reasons
    if opts.restated:
        for i in alive():
            s = rec.samples[i]
            if s.rationale and restates_answer(s.rationale, s.answer):
                drop(i, "rationale_restates_answer")
        if (why := record_reason("rationale_restates_answer")):
            return why, reasons
    return None, reasons


def _rule_of(reason: str) -> str:
    return reason.split(":", 1)[0]


def _rejected_obj(obj: dict, reason: str, sample_reasons: list[str | None]) -> dict:
    out = dict(obj)
    out["reason"] = reason
    if sample_reasons:
        out["samples"] = [dict(s, reason=r) if r else s for s, r in zip(obj["samples"], sample_reasons)]
    return out


def _kept_obj(obj: dict, rec: Record, sample_reasons: list[str | None]) -> dict:
    out = dict(obj)
    out.pop("reason", None)
    if sample_reasons:
        out["samples"] = [s for s, r in zip(obj["samples"], sample_reasons) if r is None]
    if rec.vote_share is not None:
        out["vote_share"] = rec.vote_share
    else:
        out.pop("vote_share", None)
    return out


# ------------------------------------------------------------------ the stage


def load_eval_index(paths: list[Path], opts: FilterOptions):
    from kdpipe import dedup

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

    from kdpipe import dedup

    opts = opts or FilterOptions()
    opts.validate()
    inp, out = Path(inp), Path(out)
    outputs = [p for p in (out, rejected, report) if p is not None]
    check_outputs_differ([inp, *opts.against], outputs)
    if len({Path(p).resolve() for p in outputs}) < len(outputs):
        raise UsageError("-o, --rejected and --report must be different files")
    started = time.time()
    rep = FilterReport()
    evals = load_eval_index(opts.against, opts)

    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent)))
        survivors_path, early_rejects_path = tmpdir / "survivors.jsonl", tmpdir / "rejected.jsonl"
        feats = _first_pass(inp, opts, evals, rep, survivors_path, early_rejects_path)

        # Rules 6 and 7 over the whole set, on hashes only.
        n = len(feats.exact)
        dup_of = np.full(n, -1, dtype=np.int64)
        rule = np.zeros(n, dtype=np.int8)  # 1 duplicate, 2 near_duplicate
        if opts.dedup and n:
            first = dedup.first_of_exact(feats.exact)
            is_dup = first != np.arange(n)
            dup_of[is_dup], rule[is_dup] = first[is_dup], 1
        if opts.near_dup and n:
            unique = np.flatnonzero(rule == 0)
            near = dedup.near_duplicate_of(feats.bands[unique], feats.sketch[unique], opts.near_threshold)
            hit = near >= 0
            dup_of[unique[hit]], rule[unique[hit]] = unique[near[hit]], 2
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
                if rule[i] == 0:
                    out_fp.write(line)
                    continue
                obj = json.loads(line)
                n_samples = len(obj.get("samples") or [])
                name = "duplicate" if rule[i] == 1 else "near_duplicate"
                rep.records_dropped[name] += 1
                rep.samples_dropped[name] += n_samples
                rep.samples_kept -= n_samples
                if rej_fp:
                    what = "same question as" if rule[i] == 1 else "near-copy of the question of"
                    obj["reason"] = f"{name}: {what} {head_ids[int(dup_of[i])]}"
                    obj.pop("vote_share", None)
                    rej_fp.write(dumps(obj) + "\n")
        rep.kept = rep.input - sum(rep.records_dropped.values())
        rep.seconds = time.time() - started
        if report:
            rep_fp = stack.enter_context(atomic_file(report))
            json.dump(rep.to_dict(), rep_fp, indent=2)
            rep_fp.write("\n")
    params = {k: (v if not isinstance(v, list) else [str(p) for p in v]) for k, v in asdict(opts).items()}
    write_meta(out, stage="filter", params=params, inputs=[inp, *opts.against], counts=rep.to_dict(),
               started=started)
    return rep


def _first_pass(inp: Path, opts: FilterOptions, evals, rep: FilterReport, survivors_path: Path,
                rejects_path: Path):
    """Rules 1-5 record by record; the survivors go to a temporary file, their hashes (dedup.Features)
    are returned."""
    import numpy as np

    from kdpipe import dedup

    parts: list[dedup.Features] = []
    batch: list[tuple[dict, list[str], list[str] | None, int]] = []
    with open(survivors_path, "w", encoding="utf-8") as surv, open(rejects_path, "w", encoding="utf-8") as rej:

        def reject(obj, reason, sample_reasons, n_samples):
            name = _rule_of(reason)
            rep.records_dropped[name] += 1
            # Samples that still stood go with the record and count under its rule.
            rep.samples_dropped[name] += sum(1 for r in sample_reasons if r is None) if sample_reasons else 0
            rej.write(dumps(_rejected_obj(obj, reason, sample_reasons)) + "\n")

        def flush():
            word_lists = [b[1] for b in batch]
            words = dedup.Words.of(word_lists)
            f = dedup.features(word_lists, [b[2] for b in batch], opts.shingle, words)
            why = evals.contaminated(words, f) if evals is not None else [None] * len(batch)
            keep = np.array([w is None for w in why], dtype=bool)
            for (obj, _, _, n_samples), w in zip(batch, why):
                if w is None:
                    surv.write(dumps(obj) + "\n")
                else:
                    rep.samples_kept -= n_samples
                    reject(obj, f"contaminated: {w}", [None] * n_samples, n_samples)
            parts.append(dedup.Features(f.exact[keep], f.bands[keep], f.sketch[keep]))
            batch.clear()

        for lineno, obj in iter_json_objects(inp):
            try:
                rec = Record.from_dict(obj)
            except (ValueError, TypeError) as e:
                raise InputError(inp, str(e), lineno) from None
            rep.input += 1
            rep.samples_input += len(rec.samples)
            reason, sample_reasons = judge(rec, opts)
            for r in sample_reasons:
                if r is not None:
                    rep.samples_dropped[_rule_of(r)] += 1
                    if r.startswith("teacher_error"):
                        rep.teacher_errors[r.split(": ", 1)[1]] += 1
            if reason is not None:
                reject(obj, reason, sample_reasons, len(rec.samples))
                continue
            kept = _kept_obj(obj, rec, sample_reasons)
            n_kept = len(kept.get("samples") or [])
            rep.samples_kept += n_kept
            rep.voted += rec.vote_share is not None
            batch.append((kept, dedup.words_of(rec.question), rec.choices, n_kept))
            if len(batch) >= _BATCH:
                flush()
        if batch:
            flush()
    if not parts:
        return dedup.Features(np.zeros(0, np.uint64), np.zeros((0, dedup.BANDS), np.uint32),
                              np.zeros((0, dedup.PERMS), np.uint8))
    return dedup.Features(np.concatenate([p.exact for p in parts]), np.concatenate([p.bands for p in parts]),
                          np.concatenate([p.sketch for p in parts]))
