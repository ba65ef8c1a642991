"""How loud transformers is while rsmoe loads local model folders.

Loading a folder prints a "Loading weights" progress bar on stderr, which breaks rsmoe's promise that a user
error is one line and clutters every run; the load reports (missing or unexpected keys) stay visible unless a
caller knows they do not matter (:func:`quiet_transformers`).
"""
from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """Hide transformers' progress bars (warnings and load reports still print)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (e.g. the ignored vision keys of a CLIP folder)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with no_progress_bars():
            yield
    finally:
        hf_logging.set_verbosity(level)


__all__ = ["no_progress_bars", "quiet_transformers"]
