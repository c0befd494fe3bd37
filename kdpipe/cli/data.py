"""`kdpipe seed`, `filter` and `format`: flags in, a stage function called, a summary out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdpipe.cli.common import QUIET, reports_errors, say

# ------------------------------------------------------------------ seed

from kdpipe.seed import SeedOptions as _Seed  #  (light: no heavy imports)


@reports_errors
def seed(
    src: Path = typer.Argument(..., help="JSONL, JSON array, CSV, Parquet, or a folder saved with "
                                         "datasets' save_to_disk.", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Seed records (JSONL) to write.", show_default=False),
    eval_out: Optional[Path] = typer.Option(_Seed.eval_out, "--eval-out",
                                            help="Also hold out eval questions into this file."),
    eval_frac: float = typer.Option(_Seed.eval_frac, "--eval-frac", help="Share of questions held out."),
    seed_: int = typer.Option(_Seed.seed, "--seed", help="Seed of the held-out split."),
    task: Optional[str] = typer.Option(_Seed.task, "--task",
                                       help="numeric | choice | text (detected when omitted)."),
    question_field: Optional[str] = typer.Option(
        _Seed.question_field, "--question-field",
        help="Field(s) holding the question; several comma-separated fields are joined with a newline."),
    answer_field: Optional[str] = typer.Option(_Seed.answer_field, "--answer-field",
                                               help="Field holding the gold answer."),
    choices_field: Optional[str] = typer.Option(_Seed.choices_field, "--choices-field",
                                                help="Field holding the options of a multiple-choice question."),
    id_field: Optional[str] = typer.Option(_Seed.id_field, "--id-field",
                                           help="Field holding an id (else ids are content hashes)."),
    split: Optional[str] = typer.Option(_Seed.split, "--split", help="Split of a saved DatasetDict."),
    limit: Optional[int] = typer.Option(_Seed.limit, "--limit", help="Read only the first N rows."),
    quiet: bool = QUIET,
) -> None:
    """Import questions (and gold answers) into seed records with stable ids."""
    from kdpipe.seed import SeedOptions, run_seed

    opts = SeedOptions(question_field=question_field, answer_field=answer_field,
                       choices_field=choices_field, id_field=id_field, task=task, split=split,
                       eval_out=eval_out, eval_frac=eval_frac, seed=seed_, limit=limit)
    r = run_seed(src, out, opts)
    q = "+".join(r.fields["question"])
    say(quiet, f"seed: {r.read} read, {r.duplicates} duplicates removed, {r.written} written to {out}"
               + (f", {r.held_out} held out to {eval_out}" if eval_out else "")
               + f" (task {r.task}; question: {q}, answer: {r.fields['answer'] or '-'}"
               + (f", choices: {r.fields['choices']}" if r.fields["choices"] else "") + ")")


# ------------------------------------------------------------------ filter and format

from kdpipe.filter import FilterOptions as _Filter  #  (light: numpy only)
from kdpipe.filter.report import rules_help as _rules_help
from kdpipe.format import FormatOptions as _Format


@reports_errors
def filter_(
    inp: Path = typer.Argument(..., help="Teacher records (JSONL) from `generate`, or seed records.",
                               show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Kept records (JSONL) to write.", show_default=False),
    rejected: Optional[Path] = typer.Option(None, "--rejected",
                                            help="Write every dropped record here, with its reason."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the counts per rule here (JSON)."),
    against: list[Path] = typer.Option([], "--against", help="Eval records to decontaminate against "
                                       "(repeatable)."),
    drop_errors: bool = typer.Option(_Filter.drop_errors, "--drop-errors/--keep-errors",
                                     help="teacher_error rule: drop samples `generate` marked as errors."),
    gold: bool = typer.Option(_Filter.gold, "--gold/--no-gold",
                              help="gold_mismatch rule: drop samples whose answer disagrees with the gold "
                                   "answer."),
    rel_tol: float = typer.Option(_Filter.rel_tol, "--rel-tol", help="Relative tolerance of numeric answers."),
    vote: bool = typer.Option(_Filter.vote, "--vote/--no-vote",
                              help="no_consensus and minority_answer rules: majority vote over the samples "
                                   "of records without gold."),
    min_agreement: float = typer.Option(_Filter.min_agreement, "--min-agreement",
                                        help="Share of samples the majority answer needs."),
    length: bool = typer.Option(_Filter.length, "--length/--no-length",
                                help="question_length and rationale_length rules: word bounds on question "
                                     "and rationale."),
    min_question_words: int = typer.Option(_Filter.min_question_words, "--min-question-words"),
    max_question_words: int = typer.Option(_Filter.max_question_words, "--max-question-words"),
    min_rationale_words: int = typer.Option(_Filter.min_rationale_words, "--min-rationale-words"),
    max_rationale_words: int = typer.Option(_Filter.max_rationale_words, "--max-rationale-words"),
    restated: bool = typer.Option(_Filter.restated, "--restated/--no-restated",
                                  help="rationale_restates_answer rule: drop a rationale that only restates "
                                       "the answer."),
    dedup: bool = typer.Option(_Filter.dedup, "--dedup/--no-dedup",
                               help="duplicate rule: drop exact duplicate questions (normalized)."),
    near_dup: bool = typer.Option(_Filter.near_dup, "--near-dup/--no-near-dup",
                                  help="near_duplicate rule: drop a question near an earlier kept one (MinHash-LSH "
                                       "proposes pairs, so may miss one near the threshold; exact "
                                       "Jaccard decides)."),
    near_threshold: float = typer.Option(_Filter.near_threshold, "--near-threshold",
                                         help="Jaccard similarity of word shingles from which a question "
                                              "is a near-duplicate."),
    shingle: int = typer.Option(_Filter.shingle, "--shingle", help="Words per shingle."),
    ngram: int = typer.Option(_Filter.ngram, "--ngram",
                              help="Length in words of a span shared with an eval question that "
                                   "counts as contamination."),
    workers: int = typer.Option(_Filter.workers, "--workers",
                                help="Processes for the record rules (0: one per CPU on a large input)."),
    quiet: bool = QUIET,
) -> None:
    """Drop wrong, broken, duplicate and contaminated teacher output; report counts per rule."""
    from kdpipe.filter import FilterOptions, run_filter

    opts = FilterOptions(drop_errors=drop_errors, gold=gold, rel_tol=rel_tol, vote=vote,
                         min_agreement=min_agreement, length=length, min_question_words=min_question_words,
                         max_question_words=max_question_words, min_rationale_words=min_rationale_words,
                         max_rationale_words=max_rationale_words, restated=restated, dedup=dedup,
                         near_dup=near_dup, near_threshold=near_threshold, shingle=shingle,
                         against=list(against), ngram=ngram, workers=workers)
    rep = run_filter(inp, out, opts, rejected=rejected, report=report)
    say(quiet, rep.table())
    say(quiet, f"filter: {rep.kept} of {rep.input} records kept ({rep.samples_kept} samples) in "
               f"{rep.seconds:.1f} s -> {out}" + (f"; rejected -> {rejected}" if rejected else ""))


filter_.__doc__ = (filter_.__doc__ or "") + "\n\n" + _rules_help(_Filter)  # from the filter's list of rules


@reports_errors
def format_(
    inp: Path = typer.Argument(..., help="Filtered records (JSONL).", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="SFT rows (JSONL) to write.", show_default=False),
    style: str = typer.Option(_Format.style, "--style", help="dss | cot | label | gold."),
    chat: bool = typer.Option(_Format.chat, "--chat/--no-chat",
                              help="Chat messages (for a chat template) or plain strings."),
    val_frac: float = typer.Option(_Format.val_frac, "--val-frac",
                                   help="Share of records whose rows go to the validation split."),
    seed_: int = typer.Option(_Format.seed, "--seed", help="Seed of the split and the shuffle."),
    label_prefix: str = typer.Option(_Format.label_prefix, "--label-prefix", help="dss label task prefix."),
    rationale_prefix: str = typer.Option(_Format.rationale_prefix, "--rationale-prefix",
                                         help="dss rationale task prefix."),
    answer_sentence: str = typer.Option(_Format.answer_sentence, "--answer-sentence",
                                        help="How a cot completion ends; must contain {answer}."),
    quiet: bool = QUIET,
) -> None:
    """Turn records into prompt/completion rows for SFT (Distilling step-by-step, CoT, label, gold)."""
    from kdpipe.format import FormatOptions, run_format

    opts = FormatOptions(style=style, chat=chat, val_frac=val_frac, seed=seed_, label_prefix=label_prefix,
                         rationale_prefix=rationale_prefix, answer_sentence=answer_sentence)
    r = run_format(inp, out, opts)
    skipped = "".join(f"; skipped {v} ({k})" for k, v in r.skipped.items())
    say(quiet, f"format: {r.records} records -> {r.rows} rows ({r.train} train, {r.val} val), "
               f"style {style} -> {out}{skipped}")
