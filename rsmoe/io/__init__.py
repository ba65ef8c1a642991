"""File input and output shared by every part of rsmoe: atomic writes (:mod:`rsmoe.io.atomic`) and safe reading
of PyTorch checkpoint files (:mod:`rsmoe.io.torch_files`)."""
from __future__ import annotations

from .atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, fsync_dir

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "fsync_dir"]
