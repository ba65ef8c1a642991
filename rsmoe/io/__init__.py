"""File input and output shared by every part of rsmoe: atomic writes (:mod:`rsmoe.io.atomic`), file digests
(:mod:`rsmoe.io.digest`) and safe reading of PyTorch weight files (:mod:`rsmoe.io.torch_files`; torch is imported
only when a file is read)."""
from __future__ import annotations

from .atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, fsync_dir
from .torch_files import (
    KeyReport,
    check_keys,
    compare_keys,
    extract_state_dict,
    read_safetensors,
    read_state_dict,
    read_torch_file,
    short_list,
)

__all__ = ["KeyReport", "atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
           "check_keys", "compare_keys", "extract_state_dict", "fsync_dir", "read_safetensors", "read_state_dict",
           "read_torch_file", "short_list"]
