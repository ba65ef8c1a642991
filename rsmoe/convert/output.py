"""Where a converter writes: refusing to overwrite without ``--force``, and writing atomically.

A converted file is written through :func:`rsmoe.io.atomic.atomic_path`. A converted transformers directory is
written into a hidden temporary directory beside the destination and renamed into place when complete, so an
interrupted conversion never leaves a half-written model folder under the requested name."""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import CheckpointError
from ..io.atomic import fsync_dir


def check_output(out: Path, *, force: bool) -> None:
    """Refuse an existing ``out`` (file, or non-empty directory) unless ``force``; create its parent folder."""
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not force:
        raise CheckpointError(f"{out} already exists; pass --force to overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``out``; when the block ends without error it replaces ``out``
    (an existing ``out`` is moved aside first and deleted after the rename). On error the temporary directory is
    deleted and ``out`` is untouched."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        elif old.exists():
            old.unlink()


__all__ = ["atomic_directory", "check_output"]
