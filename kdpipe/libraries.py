"""Quieting the heavy libraries (transformers, datasets, TRL) for every command that loads them."""

from __future__ import annotations


def quiet_libraries() -> None:
    """Silence the libraries' progress bars, info logs and deprecation notes: kdpipe says its
    own concise progress lines (and --quiet silences those)."""
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    # Deprecations raised inside transformers/TRL, about calls the user cannot change.
    warnings.filterwarnings("ignore", message=".*is deprecated and will be removed in v6.*", category=FutureWarning)
