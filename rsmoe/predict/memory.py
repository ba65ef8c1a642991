"""Process memory: handing freed heap back to the OS and keeping big allocations off the heap (glibc only)."""
from __future__ import annotations

import sys
from typing import Any


_LIBC: Any = None


def release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``, ~2 ms): after each of the first batches and
    after each finished row band (see :func:`limit_heap_growth`)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _glibc():
    global _LIBC
    if _LIBC is None:
        _LIBC = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                libc = ctypes.CDLL("libc.so.6")
                _LIBC = libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else False
            except OSError:
                pass
    return _LIBC or None


def limit_heap_growth() -> bool:
    """For a process that does nothing but predict (``rsmoe predict``, its worker processes): serve allocations of
    4 MiB and more with ``mmap`` (glibc ``M_MMAP_THRESHOLD``), so the model's per-batch tensors go back to the OS
    when freed.

    glibc otherwise raises that threshold to the size of the first big block freed (up to 32 MiB), after which the
    per-batch tensors come from the heap, fragment it, and the peak RSS varies by ±100 MB from run to run. The cost
    is page faults on every big allocation (≈5 ms per 512² batch of a cheap model; nothing next to a real one). Not
    done by :func:`predict_scenes` itself, since it changes the whole process. Returns whether it was applied.
    """
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(-3, 4 * 1024 * 1024))  # M_MMAP_THRESHOLD = -3


__all__ = ["limit_heap_growth", "release_free_memory"]
