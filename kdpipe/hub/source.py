"""Seed questions from a dataset that `datasets` loads: a Hub id, or a local dataset folder
(data files, or a script-free repo layout with a README declaring its configs).

Both go through the same call (`load_dataset_builder`, then the download and the split:
what `datasets.load_dataset` does), so a local repo layout is read exactly as its Hub
copy would be. The source's id, config, split and resolved revision are returned for
provenance and the `.meta.json`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from kdpipe.errors import InputError

# Endings of the files seed reads itself: a missing file with one of these is a typo, not a Hub id.
FILE_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".parquet", ".pq", ".txt")
# "name" or "owner/name", as the Hub spells repository ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_SAVED_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")


def is_saved_dataset(folder: Path) -> bool:
    """A folder written by `save_to_disk` (read with load_from_disk, not as a dataset repo)."""
    return any((folder / m).exists() for m in _SAVED_MARKERS)


def is_dataset_source(src: str | Path) -> bool:
    """True for a local dataset folder that is no save_to_disk folder, or a Hub id that is no local path."""
    path = Path(src)
    if path.exists():
        return path.is_dir() and not is_saved_dataset(path)
    text = str(src)
    return bool(_HUB_ID.match(text)) and not text.lower().endswith(FILE_SUFFIXES)


def choose_split(src: str | Path, names: list[str], split: str | None) -> str:
    """The split asked for, else "train", else the only one; several and none asked: an error."""
    chosen = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
    if chosen not in names:
        if split:
            raise InputError(src, f"has no split {split!r} (splits: {', '.join(names)})")
        raise InputError(src, f"has splits {', '.join(names)}: choose one with --split")
    return chosen


@dataclass
class DatasetSource:
    """Rows of one split and where they came from."""

    source: str  # the Hub id, or the folder as given
    config: str | None
    split: str
    revision: str | None  # the commit the rows were read at (Hub ids); None for a local folder
    requested_revision: str | None
    local: bool
    rows: list[dict[str, Any]] = field(repr=False, default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # a local folder's data files read: path -> digest

    def provenance(self) -> dict[str, Any]:
        """What each record's provenance says of its source (beside its row number)."""
        out = {"source": self.source, "config": self.config, "split": self.split}
        if self.revision:
            out["revision"] = self.revision
        return out

    def describe(self) -> dict[str, Any]:
        """The source for the `.meta.json`."""
        return {"kind": "local dataset folder" if self.local else "hub dataset", **self.provenance(),
                "requested_revision": self.requested_revision, "rows": len(self.rows),
                **({"files": self.files} if self.files else {})}

    def numbered(self) -> Iterator[tuple[int, dict[str, Any]]]:
        yield from enumerate(self.rows, start=1)


def open_dataset(src: str | Path, config: str | None = None, split: str | None = None,
                 revision: str | None = None, limit: int | None = None) -> DatasetSource:
    """Load one split of a Hub dataset or local dataset folder; a user's mistake (no such dataset,
    no network, no such config or split) is one InputError line."""
    import datasets
    from huggingface_hub.utils import logging as hub_logging

    # The error below says it in one line: no progress bars, no retry warnings.
    datasets.disable_progress_bars()
    hub_logging.set_verbosity_error()
    local = Path(src).is_dir()
    spec = str(src)
    if local and revision:
        raise InputError(src, "--revision applies to Hub datasets, not to a local folder")
    try:
        builder = datasets.load_dataset_builder(spec, name=config, revision=revision)
    except ConnectionError:
        raise InputError(src, "not a local file or folder, and the Hub cannot be reached to find it "
                              "(offline, or HF_HUB_OFFLINE=1)") from None
    except datasets.exceptions.DatasetNotFoundError as e:
        raise InputError(src, _one_line(e)) from None
    except ValueError as e:  # an unknown config name, with the names datasets knows
        raise InputError(src, _one_line(e)) from None
    except FileNotFoundError as e:
        raise InputError(src, _one_line(e) if local else "no such file, folder or Hub dataset") from None
    except RuntimeError as e:  # a dataset that needs a loading script, which datasets no longer runs
        raise InputError(src, _one_line(e)) from None
    names = list(builder.info.splits or {})
    chosen = choose_split(src, names, split) if names else split or "train"
    try:
        builder.download_and_prepare()
        ds = builder.as_dataset(split=chosen)
    except (ValueError, KeyError):
        names = list(builder.info.splits or {})
        raise InputError(src, f"has no split {chosen!r} (splits: {', '.join(names) or 'none'})") from None
    except ConnectionError:
        raise InputError(src, "the Hub cannot be reached to download its files (offline, or "
                              "HF_HUB_OFFLINE=1)") from None
    except datasets.exceptions.DatasetsError as e:
        raise InputError(src, f"cannot be read ({type(e).__name__}: {_one_line(e)})") from None
    if len(ds) == 0:
        raise InputError(src, f"split {chosen!r} is empty: no rows")
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    revision_read = None if local else (getattr(builder, "hash", None) or revision)
    return DatasetSource(spec, builder.config.name, chosen, revision_read, revision, local, ds.to_list(),
                         _digests(builder, chosen, Path(src)) if local else {})


def _digests(builder, split: str, folder: Path) -> dict[str, str]:
    """The digest of each data file of the split read, by its path inside the folder."""
    from kdpipe.outputs import file_digest

    files = (builder.config.data_files or {}).get(split) or []
    root = folder.resolve()
    return {Path(f).resolve().relative_to(root).as_posix(): file_digest(f) for f in files if Path(f).is_file()}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
