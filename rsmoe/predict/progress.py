"""Progress bars of ``rsmoe predict`` (tqdm): one per process over its scenes, one per scene over its windows."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def progress_bar(total: int, desc: str, show: bool, position: int, leave: bool, unit: str = "window") -> Iterator:
    """A tqdm bar at terminal line ``position``, closed on exit; ``None`` when ``show`` is False."""
    if not show:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, position=position, leave=leave, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


__all__ = ["progress_bar"]
