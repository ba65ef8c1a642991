"""Content digests of files: the SHA-256 that checkpoints, prediction summaries, model cards and reports record."""
from __future__ import annotations

import hashlib
import os

CHUNK = 1 << 22  # bytes read at a time (4 MiB)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (memory does not grow with the file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["file_sha256"]
