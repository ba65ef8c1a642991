"""Windows and blending: the window grid of a scene (:class:`WindowPlan`, window starts from the one rule
:func:`rsmoe.windows.window_starts`), the 1-D blending profile, and the streaming accumulator (:class:`Blender`)
that turns weighted window logits into finished pieces (:class:`Piece`).

The rules are described in the :mod:`rsmoe.predict` package docstring (*Windows*, *Blending*, *Streaming*).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..windows import window_starts
from .model import PredictError

#: Smallest blending weight (the ramp is clipped below at this value so weights stay strictly positive).
MIN_WEIGHT = 1e-6


def blend_profile(start: int, length: int, size: int, overlap: int) -> np.ndarray:
    """1-D blending weight of a window ``[start, start + length)`` in a scene of ``size`` (float64, strictly > 0)."""
    p = np.ones(length, dtype=np.float64)
    if overlap <= 0:
        return p
    i = np.arange(length, dtype=np.float64)
    ramp = np.sin(0.5 * np.pi * np.minimum(i, overlap) / overlap) ** 2
    ramp = np.maximum(ramp, MIN_WEIGHT)
    if start > 0:  # the window's first side is inside the scene
        p = np.minimum(p, ramp)
    if start + length < size:  # the window's last side is inside the scene
        p = np.minimum(p, ramp[::-1])
    return p


@dataclass
class WindowPlan:
    """How a H × W scene is cut into windows and in which order they are processed."""

    height: int
    width: int
    tile: int  # effective tile (rounded down to a multiple of multiple_of)
    overlap: int
    stride: int
    win_h: int  # window height = min(tile, height)
    win_w: int
    pad_h: int  # window height padded up to multiple_of and min_size
    pad_w: int
    row_starts: list[int]
    col_starts: list[int]
    groups: list[list[int]]  # window-row indices processed together
    row_prof: list[np.ndarray] = field(repr=False)
    col_prof: list[np.ndarray] = field(repr=False)
    row_norm: np.ndarray = field(repr=False)  # accumulated weight per scene row
    col_norm: np.ndarray = field(repr=False)

    @property
    def pad_mode(self) -> str | None:
        """How windows of a scene smaller than the tile are padded (None: not needed): ``reflect``, or
        ``replicate`` where the padding is as long as the window (reflection needs a longer window)."""
        if (self.pad_h, self.pad_w) == (self.win_h, self.win_w):
            return None
        ph, pw = self.pad_h - self.win_h, self.pad_w - self.win_w
        return "reflect" if ph < self.win_h and pw < self.win_w else "replicate"

    @property
    def num_windows(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    def order(self) -> list[tuple[int, int]]:
        """(row index, column index) of every window, in processing order."""
        return [(j, i) for g in self.groups for i in range(len(self.col_starts)) for j in g]

    def group_rows(self, g: int) -> tuple[int, int, int]:
        """(first scene row of group g, first row of the next group or H, last row + 1 touched by group g)."""
        rows = self.groups[g]
        top = self.row_starts[rows[0]]
        emit_end = self.row_starts[self.groups[g + 1][0]] if g + 1 < len(self.groups) else self.height
        return top, emit_end, self.row_starts[rows[-1]] + self.win_h

    @property
    def carry_rows(self) -> int:
        return max([0] + [self.group_rows(g)[2] - self.group_rows(g)[1] for g in range(len(self.groups) - 1)])

    @property
    def buffer_rows(self) -> int:
        return max(self.group_rows(g)[2] - self.group_rows(g)[0] for g in range(len(self.groups)))

    @property
    def max_emit_rows(self) -> int:
        return max(self.group_rows(g)[1] - self.group_rows(g)[0] for g in range(len(self.groups)))


def plan_windows(height: int, width: int, tile: int = 512, overlap: int = 128, multiple_of: int = 1,
                 min_size: int = 1) -> WindowPlan:
    """Cut a ``height × width`` scene into windows (see the package docstring for the rules).

    Windows are ``tile`` px (rounded down to a multiple of ``multiple_of``), or the scene's side where it is
    shorter; a window is padded up to a multiple of ``multiple_of`` and to at least ``min_size`` px per side."""
    m = max(1, int(multiple_of))
    if height < 1 or width < 1:
        raise PredictError(f"empty scene ({height}×{width})")
    if tile < 1:
        raise PredictError(f"--tile must be positive, got {tile}")
    eff_tile = max(m, (tile // m) * m)
    if eff_tile < min_size:
        raise PredictError(f"--tile {tile} is smaller than the smallest input the model accepts ({min_size} px)")
    if overlap < 0 or overlap >= eff_tile:
        raise PredictError(f"--overlap must be in [0, tile) = [0, {eff_tile}), got {overlap}")
    stride = eff_tile - overlap
    win_h, win_w = min(eff_tile, height), min(eff_tile, width)
    pad_h, pad_w = (-(-max(side, min_size) // m) * m for side in (win_h, win_w))
    rows = window_starts(height, eff_tile, stride)
    cols = window_starts(width, eff_tile, stride)
    groups = [[j] for j in range(len(rows))]
    if len(rows) >= 2 and rows[-1] - rows[-2] < stride:  # last window row was shifted: process it with the one above
        groups[-2:] = [[len(rows) - 2, len(rows) - 1]]
    memo: dict[tuple, np.ndarray] = {}  # interior windows share one profile object (and one 2-D weight)

    def prof(start: int, n: int, size: int) -> np.ndarray:
        key = (n, start > 0, start + n < size)
        if key not in memo:
            memo[key] = blend_profile(start, n, size, overlap)
        return memo[key]

    row_prof = [prof(r, win_h, height) for r in rows]
    col_prof = [prof(c, win_w, width) for c in cols]
    row_norm = np.zeros(height)
    for r, p in zip(rows, row_prof):
        row_norm[r : r + win_h] += p
    col_norm = np.zeros(width)
    for c, p in zip(cols, col_prof):
        col_norm[c : c + win_w] += p
    return WindowPlan(height, width, eff_tile, overlap, stride, win_h, win_w, pad_h, pad_w, rows, cols, groups,
                      row_prof, col_prof, row_norm, col_norm)


@dataclass
class Piece:
    """A finished rectangle ``rows [top, bottom) × cols [left, right)`` of accumulated (un-normalised) logits."""

    top: int
    bottom: int
    left: int
    right: int
    acc: np.ndarray  # K × h × w float32, Σ weight · logits
    valid: np.ndarray  # h × w bool

    def normalised(self, plan: WindowPlan) -> np.ndarray:
        norm = np.outer(plan.row_norm[self.top : self.bottom], plan.col_norm[self.left : self.right])
        return self.acc / norm.astype(np.float32)[None]


class Blender:
    """Accumulates weighted window logits in processing order and hands back finished pieces (see module doc)."""

    def __init__(self, plan: WindowPlan, num_classes: int):
        self.plan = plan
        k, p = num_classes, plan
        self.local = np.zeros((k, p.buffer_rows, p.win_w), np.float32)
        self.local_valid = np.zeros((p.buffer_rows, p.win_w), bool)
        self._spare = np.zeros_like(self.local)  # the local buffer is shifted by copying into the spare and swapping
        self._spare_valid = np.zeros_like(self.local_valid)
        self.carry = np.zeros((k, p.carry_rows, p.width), np.float32)
        self.carry_valid = np.zeros((p.carry_rows, p.width), bool)
        self.carry_h = 0  # rows of the carry strip that are live for the current group
        self._weights: dict[tuple[int, int], np.ndarray] = {}
        self._scratch = np.empty((k, p.win_h, p.win_w), np.float32)
        self._pos = 0
        self._order = p.order()
        self._group_of_row = {j: g for g, rows in enumerate(p.groups) for j in rows}
        self._left = 0  # scene column of local[..., 0]
        self._filled = 0  # scene columns < this have been initialised in the local buffer

    def _weight(self, j: int, i: int) -> np.ndarray:
        key = (id(self.plan.row_prof[j]), id(self.plan.col_prof[i]))
        w = self._weights.get(key)
        if w is None:
            w = np.outer(self.plan.row_prof[j], self.plan.col_prof[i]).astype(np.float32)
            self._weights[key] = w  # at most 3 × 3 distinct profiles pairs
        return w

    def _enter_columns(self, upto: int) -> None:
        """Initialise local-buffer columns [filled, upto) from the carry strip (rest zero)."""
        a, b = self._filled, min(upto, self.plan.width)
        if b <= a:
            return
        la, lb = a - self._left, b - self._left
        self.local[:, :, la:lb] = 0.0
        self.local_valid[:, la:lb] = False
        if self.carry_h:
            self.local[:, : self.carry_h, la:lb] = self.carry[:, : self.carry_h, a:b]
            self.local_valid[: self.carry_h, la:lb] = self.carry_valid[: self.carry_h, a:b]
        self._filled = b

    def add(self, logits: np.ndarray, valid: np.ndarray) -> Iterator[Piece]:
        """Add the next window's logits (K × win_h × win_w) and validity; yield the piece that became final, if any.

        The piece's arrays are views into the blender's buffers: use them before resuming the generator.
        """
        p = self.plan
        j, i = self._order[self._pos]
        self._pos += 1
        g = self._group_of_row[j]
        top, emit_end, bottom = p.group_rows(g)
        c = p.col_starts[i]
        if j == p.groups[g][0] and i == 0:  # a new group starts at the left edge
            self._left, self._filled = 0, 0
        self._enter_columns(c + p.win_w)
        r0, c0 = p.row_starts[j] - top, c - self._left
        np.multiply(logits, self._weight(j, i), out=self._scratch)
        self.local[:, r0 : r0 + p.win_h, c0 : c0 + p.win_w] += self._scratch
        self.local_valid[r0 : r0 + p.win_h, c0 : c0 + p.win_w] |= valid
        if j != p.groups[g][-1]:
            return
        # every window of column i in this group is in: columns [c, next column start) are final for the group
        right = p.col_starts[i + 1] if i + 1 < len(p.col_starts) else p.width
        n = right - self._left
        yield Piece(top, emit_end, self._left, right, self.local[:, : emit_end - top, :n],
                     self.local_valid[: emit_end - top, :n])
        new_h = bottom - emit_end
        if g + 1 < len(p.groups) and new_h > 0:
            # the carry for these columns was consumed when they entered the local buffer: overwrite in place
            self.carry[:, :new_h, self._left : right] = self.local[:, emit_end - top : bottom - top, :n]
            self.carry_valid[:new_h, self._left : right] = self.local_valid[emit_end - top : bottom - top, :n]
        if i + 1 < len(p.col_starts):  # shift the local buffer left
            keep = p.win_w - n
            if keep > 0:
                self._spare[:, :, :keep] = self.local[:, :, n:]
                self._spare_valid[:, :keep] = self.local_valid[:, n:]
            self.local, self._spare = self._spare, self.local
            self.local_valid, self._spare_valid = self._spare_valid, self.local_valid
            self._left = right
        else:  # group finished
            self.carry_h = max(new_h, 0) if g + 1 < len(p.groups) else 0
