"""The checks of generate's scaling options: --shard, --export-batch, --import-batch."""

from __future__ import annotations

from pathlib import Path

from kdpipe.errors import UsageError
from kdpipe.generate.shard import parse_shard


def scale_problems(opts) -> list[str]:
    """The problems with GenerateOptions `opts`'s scaling options, worded with their flags."""
    p: list[str] = []
    if opts.shard is not None:
        try:
            parse_shard(opts.shard)
        except UsageError as e:
            p.append(str(e))
        if opts.mode != "label":
            p.append("--shard is for label mode (expand samples from the whole seed set)")
    for flag, value in (("--export-batch", opts.export_batch), ("--import-batch", opts.import_batch)):
        if value is not None and opts.mode != "label":
            p.append(f"{flag} is for label mode")
    if opts.export_batch is not None and (opts.dry_run or opts.batch or opts.import_batch is not None):
        p.append("--export-batch sends nothing itself: not with --dry-run, --batch or --import-batch")
    if opts.import_batch is not None and not Path(opts.import_batch).is_file():
        p.append(f"--import-batch {opts.import_batch}: no such file")
    return p
