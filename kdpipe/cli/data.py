"""`kdpipe filter`, `format` and `export-dataset`: flags in, a stage function called, a summary out.

The options are built from FilterOptions, FormatOptions and ExportOptions; only inputs, outputs,
--rejected/--report and --quiet are declared here (`kdpipe seed` is in cli/seed.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdpipe.cli.build import QUIET_PARAM, command, fields, param
from kdpipe.cli.common import say

# ------------------------------------------------------------------ filter and format

from kdpipe.filter import FilterOptions  # (light: numpy only)
from kdpipe.filter.report import rules_help
from kdpipe.format import FormatOptions


def _filter(opts, inp: Path, out: Path, rejected: Optional[Path], report: Optional[Path], quiet: bool) -> None:
    """Drop wrong, broken, duplicate and contaminated teacher output; report counts per rule."""
    from kdpipe.filter import run_filter

    rep = run_filter(inp, out, opts, rejected=rejected, report=report)
    say(quiet, rep.table())
    if rep.judge_cost is not None:
        c = rep.judge_cost
        say(quiet, f"judge: {c['replies']} scores ({c['cached']} from the cache), "
                   + (f"${c['usd']:.4f} at list price, ${c['spent_usd']:.4f} spent now" if c["usd"] is not None
                      else "cost unknown (no price for the judge model)"))
    say(quiet, f"filter: {rep.kept} of {rep.input} records kept ({rep.samples_kept} samples) in "
               f"{rep.seconds:.1f} s -> {out}" + (f"; rejected -> {rejected}" if rejected else ""))


_filter.__doc__ += "\n\n" + rules_help(FilterOptions)  # the rules, from the filter's own list
filter_ = command(FilterOptions, _filter, [
    param("inp", Path, typer.Argument(..., help="Teacher records (JSONL) from `generate`, or seed records.",
                                      show_default=False)),
    param("out", Path, typer.Option(..., "-o", "--out", help="Kept records (JSONL) to write.", show_default=False)),
    param("rejected", Optional[Path], typer.Option(None, "--rejected",
                                                   help="Write every dropped record here, with its reason.")),
    param("report", Optional[Path], typer.Option(None, "--report", help="Write the counts per rule here (JSON).")),
    *fields(FilterOptions, "against", "drop_errors", "decomposition", "gold", "drop_rationalized",
            "check_counterfactual", "rel_tol", "vote", "min_agreement", "length",
            "min_question_words", "max_question_words", "min_rationale_words", "max_rationale_words",
            "restated", "dedup", "near_dup", "near_threshold", "shingle", "ngram", "workers", "judge.model",
            "min_score", "judge_prompt", "judge.base_url", "judge.api_key_env", "judge.cache", "judge.concurrency",
            "judge.max_tokens", "judge.max_usd", "judge.price_in", "judge.price_out", "judge.prices", "judge.batch"),
    QUIET_PARAM])


def _format(opts, inp: Path, out: Path, quiet: bool) -> None:
    """Turn records into prompt/completion rows for SFT (Distilling step-by-step, CoT, label, gold)."""
    from kdpipe.format import run_format

    r = run_format(inp, out, opts)
    skipped = "".join(f"; skipped {v} ({k})" for k, v in r.skipped.items())
    say(quiet, f"format: {r.records} records -> {r.rows} rows ({r.train} train, {r.val} val), "
               f"style {opts.style} -> {out}{skipped}")
    if r.icl:
        say(quiet, f"format: {r.icl['shots']} demonstrations per prompt from a pool of {r.icl['pool']} training "
                   f"records ({r.icl['rows_with_fewer_demos']} rows with fewer)")


format_ = command(FormatOptions, _format, [
    param("inp", Path, typer.Argument(..., help="Filtered records (JSONL).", show_default=False)),
    param("out", Path, typer.Option(..., "-o", "--out", help="SFT rows (JSONL) to write.", show_default=False)),
    *fields(FormatOptions),
    QUIET_PARAM])


# ------------------------------------------------------------------ export-dataset

from kdpipe.hub.export import ExportOptions  # (light: datasets and huggingface_hub load when it runs)


def _export_dataset(opts, inp: Path, out: Path, quiet: bool) -> None:
    """Write filter or format output as a Hub dataset: data/<split>.jsonl and a dataset card saying how the
    data were made (teacher, prompts, filter drops, licence notes); --push-to-hub uploads it."""
    from kdpipe.hub.export import run_export

    r = run_export(inp, out, opts)
    say(quiet, f"export-dataset: {r.kind} -> {out} (" + ", ".join(f"{s} {n}" for s, n in r.splits.items())
               + ")" + (f"; pushed to {opts.push_to_hub}: {r.pushed}" if r.pushed else ""))


export_dataset = command(ExportOptions, _export_dataset, [
    param("inp", Path, typer.Argument(..., help="Filtered records (`filter -o`) or SFT rows (`format -o`).",
                                      show_default=False)),
    param("out", Path, typer.Option(..., "-o", "--out", help="Dataset folder to write.", show_default=False)),
    *fields(ExportOptions),
    QUIET_PARAM])
