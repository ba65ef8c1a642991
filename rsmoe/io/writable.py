"""Output folders checked before any work starts: a folder (not a file), writable, with enough free space.

The check writes a small probe file into the folder (flushed to disk, then removed), so a read-only mount, a folder
without write permission or a full file system is reported at once in one line instead of after hours of
training or evaluation. Free space is compared with the caller's estimate of what it will write.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from ..errors import OutputError

PROBE_BYTES = 64 * 1024
MIB = 1024 * 1024


def describe(exc: OSError) -> str:
    """The short reason of an ``OSError`` ("Permission denied", "No space left on device")."""
    return exc.strerror or str(exc)


def make_folder(folder: str | os.PathLike, what: str = "output folder") -> bool:
    """Create ``folder`` (and its parents) unless it exists; True when it was created here. A one-line
    :class:`OutputError` when it is a file, lies under a file, or cannot be created."""
    folder = Path(folder)
    if folder.is_dir():
        return False
    if folder.exists():
        raise OutputError(f"{what} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        raise OutputError(f"{what} {folder}: a part of the path is a file, not a folder") from None
    except NotADirectoryError:
        raise OutputError(f"{what} {folder}: a part of the path is a file, not a folder") from None
    except OSError as exc:
        raise OutputError(f"cannot create {what} {folder}: {describe(exc)}") from None
    return True


def probe_folder(folder: str | os.PathLike, need_bytes: int = 0, what: str = "output folder") -> None:
    """Write and remove a probe file in the existing ``folder``, then check that ``need_bytes`` are free."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OutputError(f"{what} {folder} does not exist" if not folder.exists() else
                          f"{what} {folder} is a file, not a folder")
    probe = folder / f".rsmoe-write-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise OutputError(f"{what} {folder} is not writable: {describe(exc)}") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    free = shutil.disk_usage(folder).free
    if need_bytes and free < need_bytes:
        raise OutputError(f"{what} {folder}: {free / MIB:.1f} MiB free, about {need_bytes / MIB:.1f} MiB needed")


def writable_folder(folder: str | os.PathLike, need_bytes: int = 0, what: str = "output folder") -> bool:
    """:func:`make_folder` then :func:`probe_folder`; a folder created here is removed again if the probe fails.
    Returns whether the folder was created."""
    created = make_folder(folder, what)
    try:
        probe_folder(folder, need_bytes, what)
    except OutputError:
        if created:
            with contextlib.suppress(OSError):
                Path(folder).rmdir()
        raise
    return created


def writable_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check that ``path`` can be written as a file: its folder exists and is writable, and ``path`` is not a
    folder. Nothing is created."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise OutputError(f"the folder of {what} {path} does not exist ({path.parent}); create it first")
    probe_folder(path.parent, what=f"{what}'s folder")
    return path


__all__ = ["PROBE_BYTES", "describe", "make_folder", "probe_folder", "writable_file", "writable_folder"]
