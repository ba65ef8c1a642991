"""A scene's output files: where they go, the hidden temporaries they are written through, the up-front check
that the output folder can take them, and which finished outputs ``--resume`` may keep."""
from __future__ import annotations

import glob
import json
import os
import tempfile
from pathlib import Path

from ..errors import one_line
from ..io.digest import file_sha256
from .model import PredictError, PredictionModel

#: The rasters of a scene whose size and SHA-256 the summary records (``files``) and ``--resume`` checks.
RASTER_KINDS = ("classes", "probabilities")


def output_paths(out_dir: Path, scene: Path) -> dict[str, Path]:
    """Where the outputs of ``scene`` go: ``classes``, ``probabilities``, ``summary`` and ``preview``."""
    stem = Path(scene).stem
    out_dir = Path(out_dir)
    return {
        "classes": out_dir / f"{stem}_classes.tif",
        "probabilities": out_dir / f"{stem}_probabilities.tif",
        "summary": out_dir / f"{stem}_summary.json",
        "preview": out_dir / f"{stem}_preview.png",
    }


def stream_path(path: Path) -> Path:
    """The hidden file a raster is streamed into before it becomes ``path`` (``.NAME.partial`` beside it)."""
    return path.with_name(f".{path.name}.partial")


def remove_temporaries(paths: dict[str, Path]) -> None:
    """Delete what a killed earlier run may have left beside the outputs: ``.NAME.partial`` stream files, the
    ``.NAME.tmp-PID`` files of :func:`rsmoe.io.atomic.atomic_path` and GDAL's ``….ovr.tmp`` overview files."""
    for path in paths.values():
        for leftover in glob.glob(str(path.parent / f".{glob.escape(path.name)}.*")):
            Path(leftover).unlink(missing_ok=True)


def check_output_dir(out_dir: Path) -> None:
    """Refuse, before any work, an ``--out`` that is a file, lies below a file, or is (or would be created in) a
    folder this process cannot write to. A probe file is created and removed there; nothing else is created."""
    out_dir = Path(out_dir)
    existing = out_dir
    # where the missing folders would be created (os.path: False rather than an error for an unreadable parent)
    while not os.path.exists(existing) and existing.parent != existing:
        existing = existing.parent
    if not os.path.isdir(existing):
        where = "" if existing == out_dir else f" ({existing} is a file)"
        raise PredictError(f"--out {out_dir} is not a folder{where}")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".rsmoe-write-probe-"):
            pass
    except OSError as exc:
        raise PredictError(f"--out {out_dir}: cannot write to {existing} ({one_line(exc.strerror or exc)})") from None


def make_output_dir(out_dir: Path) -> None:
    """Create ``out_dir`` (and its parents); a one-line :class:`PredictError` if that fails."""
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PredictError(f"--out {out_dir}: cannot create the folder ({one_line(exc.strerror or exc)})") from None


def file_record(path: Path) -> dict:
    """What a summary records of a finished output file: its path, size in bytes and SHA-256."""
    return {"path": str(path), "bytes": Path(path).stat().st_size, "sha256": file_sha256(path)}


def _intact(path: Path, record: object) -> bool:
    """Is ``path`` the file that ``record`` (:func:`file_record`) describes: same size, same SHA-256?"""
    if not isinstance(record, dict) or not path.is_file():
        return False
    return path.stat().st_size == record.get("bytes") and file_sha256(path) == record.get("sha256")


def reusable_summary(out_dir: Path, scene: Path, pm: PredictionModel, probabilities: bool) -> dict | None:
    """The stored summary of ``scene`` if ``--resume`` may keep its outputs, else None (the scene is redone).

    Kept only when the summary is readable with status ``done``, was made by the same checkpoint (its SHA-256
    equals ``pm.source_sha256``; two in-memory models without one count as the same), and every raster it records
    — the probabilities too when they are asked for now — is still there with the recorded size and SHA-256, so a
    truncated, corrupt or replaced map is never kept."""
    paths = output_paths(out_dir, scene)
    try:
        stored = json.loads(paths["summary"].read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("status") != "done":
        return None
    if (stored.get("checkpoint") or {}).get("sha256") != pm.source_sha256:
        return None
    files = stored.get("files") or {}
    wanted = ["classes"] + (["probabilities"] if probabilities else [])
    if not all(_intact(paths[kind], files.get(kind)) for kind in wanted):
        return None
    return stored


__all__ = ["RASTER_KINDS", "check_output_dir", "file_record", "make_output_dir", "output_paths",
           "remove_temporaries", "reusable_summary", "stream_path"]
