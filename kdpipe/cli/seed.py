"""`kdpipe seed`: flags in, the seed stage called, a summary out.

The options are built from SeedOptions; only the input, the output and --quiet are declared here.
A module of its own, so that running `kdpipe seed` imports none of the later stages' options."""

from __future__ import annotations

from pathlib import Path

import typer

from kdpipe.cli.build import QUIET_PARAM, command, fields, param
from kdpipe.cli.common import say
from kdpipe.seed import SeedOptions  # (light: no heavy imports)


def _seed(opts, src: Path, out: Path, quiet: bool) -> None:
    """Import questions (and gold answers) into seed records with stable ids."""
    from kdpipe.seed import run_seed

    r = run_seed(src, out, opts)
    q = "+".join(r.fields["question"])
    say(quiet, f"seed: {r.read} read, {r.duplicates} duplicates removed, {r.written} written to {out}"
               + (f", {r.held_out} held out to {opts.eval_out}" if opts.eval_out else "")
               + f" (task {r.task}; question: {q}, answer: {r.fields['answer'] or '-'}"
               + (f", choices: {r.fields['choices']}" if r.fields["choices"] else "") + ")")


seed = command(SeedOptions, _seed, [
    param("src", Path, typer.Argument(..., help="JSONL, JSON array, CSV, Parquet, a folder saved with "
                                                "datasets' save_to_disk, a Hub dataset id (openai/gsm8k) or a "
                                                "local dataset folder (data files, or a repo layout with "
                                                "its README's configs).", show_default=False)),
    param("out", Path, typer.Option(..., "-o", "--out", help="Seed records (JSONL) to write.", show_default=False)),
    *fields(SeedOptions, "eval_out", "eval_frac", "seed", "task", "question_field", "answer_field",
            "choices_field", "id_field", "split", "config", "revision", "limit"),
    QUIET_PARAM])
