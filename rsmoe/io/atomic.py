"""Atomic writes: a reader sees either the previous file or the complete new one, never a half-written file.

Every file rsmoe writes for a user goes through :func:`atomic_path` (or the small wrappers below): the content is
written to a hidden temporary name in the destination folder, flushed to disk (``fsync``), then renamed over the
destination (``os.replace`` is atomic within one file system) and the folder entry is flushed too. If anything
fails before the rename, the temporary file is deleted and the destination is left as it was.

Created files get mode 0644 (rw-r--r--) whatever the temporary file's mode was.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FILE_MODE = 0o644


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries to disk (so a rename in it survives a power cut); a no-op where unsupported."""
    try:
        fd = os.open(os.fspath(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, the file written there becomes
    ``path`` (fsync, chmod 0644, rename). On error it is deleted and ``path`` is untouched.

    For libraries that write by file name (safetensors, rasterio, torch.save)::

        with atomic_path(out / "model.safetensors") as tmp:
            save_file(tensors, str(tmp))
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{path}: nothing was written to the temporary file {tmp}")
        if fsync:
            _fsync_file(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
        if fsync:
            fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: str | os.PathLike, data: Any, fsync: bool = True) -> Path:
    """Write ``data`` as indented JSON (NaN allowed, numpy scalars as floats) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, default=float, allow_nan=True) + "\n", fsync=fsync)


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``out``; when the block ends without error its files get mode
    ``FILE_MODE`` and it replaces ``out`` (an existing ``out`` is moved aside first and deleted after the rename). On
    error the temporary directory is deleted and ``out`` is untouched."""
    import shutil

    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for path in tmp.rglob("*"):
            if path.is_file():
                path.chmod(FILE_MODE)
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


__all__ = ["FILE_MODE", "atomic_directory", "atomic_path", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_text", "fsync_dir"]
