"""`kdpipe export-dataset`: a filter or format output as a dataset the Hub (and
`datasets.load_dataset`) loads: FOLDER/data/<split>.jsonl and a README.md dataset card
that declares the splits and says how the data were made (lineage.py).

A command of its own rather than an option of `filter` or `format`: it takes the output
of either, reads how it was made from the .meta.json files behind it, and is the one
place that publishes (--push-to-hub), so the stages themselves stay offline.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kdpipe.errors import InputError, KdpipeError
from kdpipe.hub.push import repo_problem
from kdpipe.options import Options, option

SPLIT_NAMES = {"train": "train", "val": "validation"}  # an SFT row's split -> the Hub's split name


@dataclass
class ExportOptions(Options):
    name: str | None = option(None, "The dataset's name in its card (default: the output folder's name).")
    license: str = option("other", "Licence identifier for the card (Hub ids: mit, apache-2.0, cc-by-4.0, other); "
                                   "the teacher's terms of use still apply.")
    overwrite: bool = option(False, "Replace an existing output folder.")
    push_to_hub: str | None = option(None, "Also upload the folder to this Hub dataset repository (owner/name); "
                                           "the token comes from HF_TOKEN or `hf auth login`.")
    private: bool = option(False, "Create the Hub repository private (with --push-to-hub).")

    def problems(self) -> list[str]:
        return [p for p in [repo_problem("--push-to-hub", self.push_to_hub)] if p]


@dataclass
class ExportResult:
    folder: Path
    kind: str  # "records" or "sft"
    splits: dict[str, int]
    pushed: str | None


def _split_lines(inp: Path) -> tuple[str, dict[str, list[str]]]:
    """(kind, {split: JSON lines}) of a records file (one train split) or SFT rows (train/validation)."""
    lines = [line for line in inp.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise InputError(inp, "empty file: nothing to export")
    try:
        rows = [json.loads(line) for line in lines]
    except json.JSONDecodeError as e:
        raise InputError(inp, f"not JSON Lines: {e.msg}") from None
    if all("prompt" in r and "completion" in r for r in rows):
        splits: dict[str, list[str]] = {}
        for line, r in zip(lines, rows):
            splits.setdefault(SPLIT_NAMES.get(r.get("split"), r.get("split") or "train"), []).append(line)
        return "sft", splits
    if all("question" in r and "id" in r for r in rows):
        return "records", {"train": lines}
    raise InputError(inp, "neither kdpipe records (filter output) nor SFT rows (format output)")


def run_export(inp: str | Path, out: str | Path, opts: ExportOptions | None = None) -> ExportResult:
    from kdpipe.hub.cards import dataset_card
    from kdpipe.hub.lineage import lineage

    opts = opts or ExportOptions()
    opts.validate()
    inp, out = Path(inp), Path(out)
    if not inp.is_file():
        raise InputError(inp, "no such file")
    if out.exists() and not opts.overwrite and (not out.is_dir() or any(out.iterdir())):
        raise KdpipeError(f"{out}: exists; pass --overwrite to replace it")
    kind, splits = _split_lines(inp)
    name = opts.name or out.resolve().name
    card = dataset_card(name, lineage(inp), {s: len(v) for s, v in splits.items()}, kind, opts.license)
    # Built beside the target and renamed into place: never a half-written dataset folder.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "data").mkdir()
        for split, rows in splits.items():
            (tmp / "data" / f"{split}.jsonl").write_text("".join(r + "\n" for r in rows), encoding="utf-8")
        (tmp / "README.md").write_text(card, encoding="utf-8")
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    pushed = None
    if opts.push_to_hub:
        from kdpipe.hub.push import push_folder

        pushed = push_folder(out, opts.push_to_hub, "dataset", private=opts.private,
                             message=f"Upload {name} ({kind}) from kdpipe")
    return ExportResult(out, kind, {s: len(v) for s, v in splits.items()}, pushed)
