"""Window geometry: where the windows of one axis start. The one rule shared by ``rsmoe prepare`` (cutting a scene
into tiles), sliding-window evaluation (``eval.mode: slide``) and ``rsmoe predict`` (whole scenes).

Windows of length ``window`` start every ``stride`` pixels from 0; if the last one does not end exactly at the
border, one more window is added that does (it overlaps its neighbour more). An axis not longer than the window
has the single start 0 (the window is then cut to the axis length, or the caller pads or skips it: each caller
documents which).
"""
from __future__ import annotations


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of the windows along an axis of ``size`` pixels (see the module docstring).

    >>> window_starts(10, 4, 3)
    [0, 3, 6]
    >>> window_starts(11, 4, 3)
    [0, 3, 6, 7]
    >>> window_starts(3, 4, 3)
    [0]
    """
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive, got window={window}, stride={stride}")
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


__all__ = ["window_starts"]
