"""Where a converter writes: refusing to overwrite without ``--force``, and writing atomically.

A converted file is written through :func:`rsmoe.io.atomic.atomic_path`, a converted transformers directory through
:func:`rsmoe.io.atomic.atomic_directory` (a hidden temporary directory renamed into place when complete), so an
interrupted conversion never leaves a half-written model under the requested name."""
from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError


def check_output(out: Path, *, force: bool) -> None:
    """Refuse an existing ``out`` (file, or non-empty directory) unless ``force``; create its parent folder."""
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not force:
        raise CheckpointError(f"{out} already exists; pass --force to overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)


__all__ = ["check_output"]
