"""Whole-scene prediction: tile a GeoTIFF, run the model, blend the tiles, write a class-map GeoTIFF.

The public entry points are :func:`predict_scenes` (one summary dict per scene), :func:`collect_inputs`,
:func:`add_predict_arguments` / :func:`run_predict_from_args` (wiring for ``rsmoe predict``), and
:func:`predict_array` (the same tiling and blending on an in-memory array, for notebooks and tests).

How a scene is processed
------------------------
* **Windows.** ``stride = tile - overlap``; window starts are ``0, stride, 2·stride, …`` and the last row / column of
  windows is shifted to end exactly at the scene edge, so windows never reach outside the scene. A scene (dimension)
  smaller than the tile gets a single window of the scene's size, *reflect*-padded on the bottom / right up to a
  multiple of ``PredictionModel.multiple_of`` (replicate-padded where the scene is too small to reflect); the padded
  part of the logits is cropped away. A ``tile`` that is not a multiple of ``multiple_of`` is rounded down to one.
* **Input.** Windows are read with rasterio one at a time (never the whole scene); on a GPU a background thread
  prepares the next batch while the model runs. Bands are picked / reordered with ``bands`` (1-based); the band count
  must equal the checkpoint's, and per-band wavelength metadata in the file (GDAL ``IMAGERY`` domain
  ``CENTRAL_WAVELENGTH_UM`` or an ENVI-style ``wavelength`` tag) is checked against the checkpoint when present.
  Pixels are normalised with the checkpoint's mean / std; no-data pixels (and non-finite values) are set to 0 after
  normalisation (i.e. to the band mean).
* **No-data.** A pixel is no-data where every model band equals the file's no-data value (NaN counts for a NaN
  no-data), or where the dataset mask (internal / external mask band or alpha band) is 0. No-data pixels get the
  class-map no-data value (255, or ``PredictionModel.ignore_index`` if that is a free uint8 value).
* **Blending.** Each window's logits are multiplied by ``w(y, x) = p_row(y) · p_col(x)``. The 1-D profile is 1
  except for a raised-cosine ramp ``sin²(π/2 · i / overlap)`` over the first / last ``overlap`` pixels of a window
  side that lies *inside* the scene (a side on the scene edge is not ramped, since nothing else covers it). The ramp
  is clipped below at ``1e-6`` so weights are strictly positive. Accumulated logits are divided by the accumulated
  weight, which for this product grid of windows is ``W_row(y) · W_col(x)`` (computed analytically, not stored). With
  ``overlap = 0`` every pixel inside a single window gets exactly that window's logits. The outermost window pixel
  (where zero padding inside the model hurts most) has weight ~1e-6 next to the neighbour's interior, so a model
  with receptive-field radius r gives the untiled result (to ~1e-6 relative) once ``overlap >= 2·r``.
* **Streaming.** Windows are processed in row-major order of *row groups* (one window row, except that the last two
  window rows form one group when the last row was shifted to end at the scene edge). The blender keeps a local
  buffer of one group's height × one tile's width and a full-width *carry strip* holding the ``overlap`` rows that
  the next group still adds to; finished pieces leave immediately. The class map is written in whole block rows
  from a small full-width uint8 pending buffer (each compressed block is written once); probabilities are written
  piece by piece into blocks whose side divides the stride (384² for the default 512 / 128), so pieces fill whole
  blocks. GDAL's block cache is capped (``GDAL_CACHEMAX`` 32 MB unless set in the environment), batches are read
  into two reused buffers, and freed heap is handed back to the OS after every row band (glibc ``malloc_trim``);
  ``rsmoe predict`` also serves allocations ≥ 4 MiB by ``mmap`` (see ``_limit_heap_growth``).
  Peak memory is therefore ∝ scene width × (overlap × K × 4 B + ~1 k rows × 1 B), independent of the scene height,
  plus constant model / batch memory.
* **Outputs** (in ``out_dir``): ``<stem>_classes.tif`` (uint8, tiled 512 × 512 — smaller power-of-two blocks for
  small scenes — deflate, internal nearest-neighbour overviews, colour table from the palette, input CRS and
  transform), optional ``<stem>_probabilities.tif`` (float32, K bands, NaN no-data, deflate + float predictor),
  ``<stem>_preview.png`` (downsampled RGB next to the class map) and ``<stem>_summary.json`` (pixels/s, class areas
  in hectares). The preview is sampled (every n-th row / column) from the windows as they stream past, so it costs
  no second read of the scene (a decimated ``out_shape`` read of a large scene without overviews thrashes GDAL's
  block cache). Rasters are written to ``.<name>.partial`` in the same folder and ``os.replace``-d into place when
  complete; the summary JSON is written last. ``resume`` skips scenes whose ``_classes.tif`` and ``_summary.json``
  both exist.
* **Several devices.** ``devices > 1`` spawns that many processes (``torch.multiprocessing``, ``gloo`` process group
  on 127.0.0.1); scenes are assigned round-robin by rank, each process writes its own scenes, and summaries are
  gathered with ``all_gather_object``. On CUDA, rank r uses ``cuda:r``; on CPU the cores are shared out.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime as _dt
import json
import math
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "PredictionModel",
    "PredictError",
    "sensor_wavelengths",
    "check_sensor",
    "plan_windows",
    "WindowPlan",
    "predict_array",
    "predict_scene",
    "predict_scenes",
    "collect_inputs",
    "output_paths",
    "add_predict_arguments",
    "run_predict_from_args",
]

#: Largest per-band difference (µm) between claimed and checkpoint wavelengths that still counts as a match.
WAVELENGTH_TOLERANCE_UM = 0.02
#: Smallest blending weight (the ramp is clipped below at this value so weights stay strictly positive).
MIN_WEIGHT = 1e-6
#: GDAL block cache while predicting (bytes), unless GDAL_CACHEMAX is set in the environment.
GDAL_CACHE_BYTES = 32 * 1024 * 1024
#: Longest side of the quick-look PNG's panels, in pixels (the figure shows them at about native size).
PREVIEW_MAX_SIDE = 512


@dataclass
class PredictionModel:
    """A trained segmentation model plus everything needed to apply it to a scene (built by the checkpoint loader)."""

    model: torch.nn.Module  # forward(image B×C×h×w float32 normalised, wavelengths (C,) µm) -> logits B×K×h×w
    class_names: list[str]
    palette: list[tuple[int, int, int]]
    mean: list[float]
    std: list[float]  # per band: normalised = (x - mean) / std
    wavelengths: list[float]  # µm, per band, in the order the model expects
    band_names: list[str]
    sensor: str | None = None
    ignore_index: int = 255
    multiple_of: int = 1  # tile sides must be a multiple of this (patch size); windows are padded up to it


class PredictError(ValueError):
    """A user-facing problem (bad arguments, band mismatch …). The message is always a single line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


# --------------------------------------------------------------------------------------------------------------
# Sensors and wavelength checks
# --------------------------------------------------------------------------------------------------------------

def _registry() -> dict[str, list[float]]:
    """Sensor name → band centre wavelengths (µm, file order), from :mod:`rsmoe.sensors`."""
    from .sensors import SENSORS

    return {name: list(sensor.wavelengths) for name, sensor in SENSORS.items()}


def _norm_sensor(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def sensor_wavelengths(name: str, sensors: dict[str, Sequence[float]] | None = None) -> list[float] | None:
    """Wavelengths (µm) of a named sensor from ``sensors`` (default: the :mod:`rsmoe.sensors` registry); ``None`` if
    unknown. Names match exactly, else ignoring case and punctuation (``sentinel2`` finds ``Sentinel-2``)."""
    table = _registry() if sensors is None else sensors
    if name in table:
        return [float(x) for x in table[name]]
    key = _norm_sensor(name)
    for k, v in table.items():
        if _norm_sensor(k) == key:
            return [float(x) for x in v]
    return None


def _fmt_wl(wl: Sequence[float]) -> str:
    return "[" + ", ".join(f"{w:.3f}" for w in wl) + "]"


def _compare_wavelengths(claimed: Sequence[float], expected: Sequence[float], what: str) -> None:
    if len(claimed) != len(expected):
        raise PredictError(
            f"{what} has {len(claimed)} band(s) {_fmt_wl(claimed)} µm but the checkpoint expects "
            f"{len(expected)} {_fmt_wl(expected)} µm"
        )
    bad = [(i, c, e) for i, (c, e) in enumerate(zip(claimed, expected)) if abs(c - e) > WAVELENGTH_TOLERANCE_UM]
    if bad:
        i, c, e = bad[0]
        raise PredictError(
            f"{what} wavelengths {_fmt_wl(claimed)} µm do not match the checkpoint's {_fmt_wl(expected)} µm "
            f"(band {i + 1}: {c:.3f} vs {e:.3f} µm, tolerance {WAVELENGTH_TOLERANCE_UM} µm)"
        )


def check_sensor(
    pm: PredictionModel,
    sensor: str | None = None,
    wavelengths: Sequence[float] | None = None,
    bands: Sequence[int] | None = None,
    sensors: dict[str, Sequence[float]] | None = None,
) -> None:
    """Check a user's ``--sensor`` / ``--wavelengths`` claim about the input against the checkpoint.

    ``sensor`` / ``wavelengths`` describe the *file's* bands; with ``bands`` (1-based) the selected bands are compared.
    Raises :class:`PredictError` (one line) on any mismatch beyond :data:`WAVELENGTH_TOLERANCE_UM` per band.
    """
    if sensor is not None and wavelengths is not None:
        raise PredictError("give either --sensor or --wavelengths, not both")
    if sensor is None and wavelengths is None:
        return
    expected = [float(w) for w in pm.wavelengths]
    if sensor is not None:
        claimed = sensor_wavelengths(sensor, sensors)
        if claimed is None:
            if pm.sensor is not None and _norm_sensor(pm.sensor) == _norm_sensor(sensor):
                return  # the checkpoint's own sensor name: nothing to compare
            known = ", ".join(_registry() if sensors is None else sensors)
            raise PredictError(f"unknown sensor {sensor!r} (known: {known}); pass --wavelengths instead")
        what = f"sensor {sensor!r}"
    else:
        claimed = [float(w) for w in wavelengths]  # type: ignore[union-attr]
        what = "--wavelengths"
    if bands is not None:
        if any(b < 1 or b > len(claimed) for b in bands):
            raise PredictError(f"--bands {list(bands)} out of range for the {len(claimed)} band(s) of {what}")
        claimed = [claimed[b - 1] for b in bands]
        what += f" with --bands {','.join(map(str, bands))}"
    _compare_wavelengths(claimed, expected, what)


# --------------------------------------------------------------------------------------------------------------
# Window geometry and blending
# --------------------------------------------------------------------------------------------------------------


def window_starts(size: int, tile: int, stride: int) -> list[int]:
    """Starts of windows of length ``min(tile, size)``: every ``stride``, the last one ending at ``size``."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


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
    pad_h: int  # window height padded up to multiple_of
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
        """How windows of a scene smaller than the tile are padded up to ``multiple_of`` (None: not needed)."""
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


def plan_windows(height: int, width: int, tile: int = 512, overlap: int = 128, multiple_of: int = 1) -> WindowPlan:
    """Cut a ``height × width`` scene into windows (see the module docstring for the rules)."""
    m = max(1, int(multiple_of))
    if height < 1 or width < 1:
        raise PredictError(f"empty scene ({height}×{width})")
    if tile < 1:
        raise PredictError(f"--tile must be positive, got {tile}")
    eff_tile = max(m, (tile // m) * m)
    if overlap < 0 or overlap >= eff_tile:
        raise PredictError(f"--overlap must be in [0, tile) = [0, {eff_tile}), got {overlap}")
    stride = eff_tile - overlap
    win_h, win_w = min(eff_tile, height), min(eff_tile, width)
    pad_h, pad_w = -(-win_h // m) * m, -(-win_w // m) * m
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
class _Piece:
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


class _Blender:
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

    def add(self, logits: np.ndarray, valid: np.ndarray) -> Iterator[_Piece]:
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
        yield _Piece(top, emit_end, self._left, right, self.local[:, : emit_end - top, :n],
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


# --------------------------------------------------------------------------------------------------------------
# Running the model over windows
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Stats:
    forward_s: float = 0.0
    read_wait_s: float = 0.0
    windows: int = 0


def _normalise_batch(x: np.ndarray, v: np.ndarray, mean: np.ndarray, std: np.ndarray, plan: WindowPlan,
                     check_finite: bool) -> torch.Tensor:
    """Normalise a B×C×h×w batch in place, zero no-data / non-finite values, pad up to ``multiple_of``."""
    x -= mean
    x /= std
    if not v.all():
        x *= v[:, None]
    if check_finite and not np.isfinite(x).all():
        np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    t = torch.from_numpy(x)
    if plan.pad_mode is not None:
        t = torch.nn.functional.pad(t, (0, plan.pad_w - plan.win_w, 0, plan.pad_h - plan.win_h), mode=plan.pad_mode)
    return t


class _InlineExecutor:
    """Stands in for the reader thread: runs the read when it is submitted."""

    class _Done:
        def __init__(self, value):
            self.value = value

        def result(self):
            return self.value

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def submit(self, fn, *args):
        return self._Done(fn(*args))


def _prefetch(device: torch.device) -> bool:
    """Read the next batch in a background thread while the model runs? Yes on a GPU, where the CPU would otherwise
    wait. On the CPU torch's threads already use the cores, and a reader thread competing with them slows the forward
    pass about as much as the overlap saves (measured on 2 cores), so reading stays inline. ``RSMOE_PREFETCH=0/1``
    overrides."""
    env = os.environ.get("RSMOE_PREFETCH")
    if env in ("0", "1"):
        return env == "1"
    return device.type != "cpu"


def _run_windows(
    pm: PredictionModel,
    plan: WindowPlan,
    read: Callable[[int, int, np.ndarray], np.ndarray],
    *,
    batch_size: int,
    device: torch.device,
    stats: _Stats,
    on_batch: Callable[[int], None] | None = None,
    check_finite: bool = True,
) -> Iterator[_Piece]:
    """Read, normalise and predict every window of ``plan``; yield the finished pieces.

    ``read(row, col, out)`` fills ``out`` (C × win_h × win_w float32) with the window at (row, col) and returns its
    validity (win_h × win_w bool). The next batch is read in a background thread while the model runs, into the
    other of two preallocated batch buffers (no per-batch allocation churn); see :func:`_prefetch`.
    """
    model = pm.model
    mean = np.asarray(pm.mean, np.float32)[:, None, None]
    std = np.asarray(pm.std, np.float32)[:, None, None]
    wl = torch.tensor(pm.wavelengths, dtype=torch.float32, device=device)
    order = plan.order()
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    nb = min(batch_size, len(order))
    c = len(pm.wavelengths)
    xbufs = [np.empty((nb, c, plan.win_h, plan.win_w), np.float32) for _ in range(2)]
    vbufs = [np.empty((nb, plan.win_h, plan.win_w), bool) for _ in range(2)]

    def load(b: int) -> tuple[torch.Tensor, np.ndarray]:
        batch = batches[b]
        x, v = xbufs[b % 2][: len(batch)], vbufs[b % 2][: len(batch)]
        for k, (j, i) in enumerate(batch):
            v[k] = read(plan.row_starts[j], plan.col_starts[i], x[k])
        return _normalise_batch(x, v, mean, std, plan, check_finite), v

    blender: _Blender | None = None
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rsmoe-read") \
        if _prefetch(device) else _InlineExecutor()
    with pool:
        fut = pool.submit(load, 0)
        for b, batch in enumerate(batches):
            t0 = time.perf_counter()
            x, valid = fut.result()
            stats.read_wait_s += time.perf_counter() - t0
            if b + 1 < len(batches):  # its buffers were last used by batch b - 1, which is finished
                fut = pool.submit(load, b + 1)
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = model(x.to(device, non_blocking=True), wl)
            if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != x.shape[0] \
                    or tuple(out.shape[2:]) != tuple(x.shape[2:]):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise PredictError(f"model returned {got} for input {tuple(x.shape)}; expected B×K×h×w logits")
            logits = out[:, :, : plan.win_h, : plan.win_w].float().cpu().numpy()
            stats.forward_s += time.perf_counter() - t0
            if blender is None:
                if logits.shape[1] != len(pm.class_names):
                    raise PredictError(f"model returned {logits.shape[1]} classes but the checkpoint names "
                                       f"{len(pm.class_names)}")
                blender = _Blender(plan, logits.shape[1])
            for k in range(len(batch)):
                yield from blender.add(logits[k], valid[k])
            del x, out, logits
            stats.windows += len(batch)
            if b < 8:  # the libraries' one-off allocations happen in the first batches: trim them early
                _release_free_memory()
            if on_batch is not None:
                on_batch(len(batch))


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def predict_array(
    pm: PredictionModel,
    image: np.ndarray,
    *,
    tile: int = 512,
    overlap: int = 128,
    batch_size: int = 4,
    valid: np.ndarray | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Tiled, blended logits (K × H × W float32, normalised by the weights) for an in-memory C × H × W image.

    Uses exactly the windows, batching and blending of :func:`predict_scene`; ``valid`` (H × W bool) marks pixels
    that are not no-data (default: all).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != len(pm.wavelengths):
        raise PredictError(f"expected a {len(pm.wavelengths)}×H×W image, got shape {image.shape}")
    _, h, w = image.shape
    valid = np.ones((h, w), bool) if valid is None else np.asarray(valid, bool)
    plan = plan_windows(h, w, tile, overlap, pm.multiple_of)
    dev = _resolve_device(device)
    pm.model.to(dev).eval()

    def read(r: int, c: int, out: np.ndarray) -> np.ndarray:
        out[...] = image[:, r : r + plan.win_h, c : c + plan.win_w]
        return valid[r : r + plan.win_h, c : c + plan.win_w]

    out: np.ndarray | None = None
    for piece in _run_windows(pm, plan, read, batch_size=batch_size, device=dev, stats=_Stats()):
        if out is None:
            out = np.zeros((piece.acc.shape[0], h, w), np.float32)
        out[:, piece.top : piece.bottom, piece.left : piece.right] = piece.normalised(plan)
    assert out is not None
    return out


# --------------------------------------------------------------------------------------------------------------
# One scene
# --------------------------------------------------------------------------------------------------------------


def output_paths(out_dir: Path, scene: Path) -> dict[str, Path]:
    """Where the outputs of ``scene`` go."""
    stem = Path(scene).stem
    out_dir = Path(out_dir)
    return {
        "classes": out_dir / f"{stem}_classes.tif",
        "probabilities": out_dir / f"{stem}_probabilities.tif",
        "summary": out_dir / f"{stem}_summary.json",
        "preview": out_dir / f"{stem}_preview.png",
    }


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def _is_finished(out_dir: Path, scene: Path) -> bool:
    p = output_paths(out_dir, scene)
    return p["classes"].is_file() and p["summary"].is_file()


def _band_wavelength_um(src, bidx: int) -> float | None:
    """Central wavelength (µm) of a band from GDAL IMAGERY metadata or an ENVI-style ``wavelength`` tag."""
    try:
        img = src.tags(bidx, ns="IMAGERY")
    except Exception:  # noqa: BLE001 - missing domain
        img = {}
    if "CENTRAL_WAVELENGTH_UM" in img:
        try:
            return float(img["CENTRAL_WAVELENGTH_UM"])
        except ValueError:
            return None
    tags = {k.lower(): v for k, v in src.tags(bidx).items()}
    if "wavelength" in tags:
        try:
            value = float(tags["wavelength"])
        except ValueError:
            return None
        units = tags.get("wavelength_units", "").lower()
        if units.startswith("nan") or units in ("nm", "nanometers", "nanometer") or (not units and value > 100):
            value /= 1000.0
        return value
    return None


def _scene_bands(pm: PredictionModel, src, path: Path, bands: Sequence[int] | None) -> list[int]:
    """Check the scene's bands against the checkpoint and return the 1-based band indexes to read."""
    n_model = len(pm.wavelengths)
    names = ", ".join(f"{n} {w:.3f} µm" for n, w in zip(pm.band_names, pm.wavelengths)) or _fmt_wl(pm.wavelengths)
    if bands is None:
        if src.count != n_model:
            raise PredictError(
                f"{path.name} has {src.count} band(s) but the checkpoint expects {n_model} ({names}); "
                f"use --bands to pick them"
            )
        idx = list(range(1, n_model + 1))
    else:
        idx = [int(b) for b in bands]
        if len(idx) != n_model:
            raise PredictError(f"--bands selects {len(idx)} band(s) but the checkpoint expects {n_model} ({names})")
        if any(b < 1 or b > src.count for b in idx):
            raise PredictError(f"--bands {idx} out of range: {path.name} has {src.count} band(s)")
    wl = [_band_wavelength_um(src, b) for b in idx]
    if all(w is not None for w in wl):
        _compare_wavelengths(wl, pm.wavelengths, f"{path.name} bands {idx}")  # type: ignore[arg-type]
    descs = [src.descriptions[b - 1] for b in idx]
    model_names = [n.lower() for n in pm.band_names]
    if len(model_names) == n_model and all(d for d in descs):
        file_names = [d.lower() for d in descs]  # type: ignore[union-attr]
        if set(file_names) == set(model_names) and file_names != model_names:
            want = [idx[file_names.index(n)] for n in model_names]
            raise PredictError(
                f"{path.name} band order {descs} differs from the checkpoint's {pm.band_names}; "
                f"use --bands {','.join(map(str, want))}"
            )
    return idx


def _block_size(height: int, width: int, preferred: int = 512) -> int:
    side = min(height, width)
    b = preferred
    while b > 16 and b > side:
        b //= 2
    return max(16, b)


class _RasterSink:
    """Writes finished pieces of one output raster.

    ``pending`` mode gathers pieces into full-width rows and writes whole block rows (each block is compressed
    once); ``direct`` mode writes pieces as they come (used when pieces are block-aligned).
    """

    def __init__(self, dst, plan: WindowPlan, count: int, dtype, fill, block_h: int, direct: bool):
        self.dst, self.plan, self.block_h, self.direct = dst, plan, block_h, direct
        self.row0 = 0
        if not direct:
            self.buf = np.full((count, block_h + plan.max_emit_rows, plan.width), fill, dtype)

    def put(self, top: int, bottom: int, left: int, right: int, data: np.ndarray) -> None:
        from rasterio.windows import Window

        if self.direct:
            self.dst.write(data, window=Window(left, top, right - left, bottom - top))
        else:
            self.buf[:, top - self.row0 : bottom - self.row0, left:right] = data

    def rows_done(self, end: int) -> None:
        """Rows < ``end`` are complete: write all whole block rows (everything at the end of the scene)."""
        from rasterio.windows import Window

        if self.direct:
            return
        h = self.plan.height
        upto = h if end >= h else (end // self.block_h) * self.block_h
        n = upto - self.row0
        if n <= 0:
            return
        self.dst.write(self.buf[:, :n], window=Window(0, self.row0, self.plan.width, n))
        rest = end - upto
        if rest > 0:
            self.buf[:, :rest] = self.buf[:, n : n + rest].copy()
        self.row0 = upto


_LIBC: Any = None


def _release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``, ~2 ms): after each of the first batches and
    after each finished row band (see :func:`_limit_heap_growth`)."""
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


def _limit_heap_growth() -> bool:
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


def _pixel_area_m2(crs, transform) -> tuple[float | None, str | None]:
    det = abs(transform.a * transform.e - transform.b * transform.d)
    if crs is None:
        return None, "the scene has no CRS: class areas are given in pixels only"
    if crs.is_geographic:
        return None, "the CRS is geographic (degrees): class areas are given in pixels only"
    try:
        _, factor = crs.linear_units_factor
    except Exception:  # noqa: BLE001
        return None, "the CRS's linear unit is unknown: class areas are given in pixels only"
    return det * factor * factor, None


def _write_json(path: Path, obj: Any) -> None:
    tmp = _partial(path)
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _rgb_positions(wavelengths: Sequence[float]) -> list[int]:
    """Positions of the bands nearest 0.665 / 0.560 / 0.490 µm (the first band three times if fewer than 3)."""
    if len(wavelengths) < 3:
        return [0, 0, 0]
    from .sensors import nearest_bands

    return nearest_bands(wavelengths, (0.665, 0.560, 0.490))


class _Preview:
    """Decimated samples (every ``step``-th row and column) of the RGB bands, validity and class map, collected
    while the windows stream past, so the quick-look needs no second pass over the scene."""

    def __init__(self, plan: WindowPlan, rgb_pos: list[int], nodata: int):
        self.step = max(1, math.ceil(max(plan.height, plan.width) / PREVIEW_MAX_SIDE))
        oh, ow = -(-plan.height // self.step), -(-plan.width // self.step)
        self.rgb_pos = rgb_pos
        self.rgb = np.full((3, oh, ow), np.nan, np.float32)
        self.cls = np.full((oh, ow), nodata, np.uint8)

    def _grid(self, top: int, left: int, h: int, w: int) -> tuple[slice, slice, slice, slice]:
        st = self.step
        oy, ox = (-top) % st, (-left) % st  # first sampled row / column inside the block
        ny, nx = len(range(oy, h, st)), len(range(ox, w, st))
        py, px = (top + oy) // st, (left + ox) // st
        return slice(oy, h, st), slice(ox, w, st), slice(py, py + ny), slice(px, px + nx)

    def add_window(self, top: int, left: int, x: np.ndarray, valid: np.ndarray) -> None:
        sy, sx, py, px = self._grid(top, left, x.shape[1], x.shape[2])
        sample = x[:, sy, sx][self.rgb_pos]
        self.rgb[:, py, px] = np.where(valid[sy, sx][None], sample, np.nan)

    def add_classes(self, top: int, left: int, cls: np.ndarray) -> None:
        sy, sx, py, px = self._grid(top, left, cls.shape[0], cls.shape[1])
        self.cls[py, px] = cls[sy, sx]


def _write_preview(path: Path, preview: _Preview, pm: PredictionModel, nodata: int, num_classes: int,
                   rgb_bands: list[int], title: str) -> None:
    """Quick-look PNG: percentile-stretched RGB (bands nearest 0.665/0.560/0.490 µm) next to the coloured classes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rgb, cls = preview.rgb, preview.cls
    oh, ow = cls.shape
    img = np.ones((oh, ow, 3), np.float32)
    for k in range(3):
        band = rgb[k]
        good = np.isfinite(band)
        if good.any():
            lo, hi = np.percentile(band[good], [2, 98])
            img[..., k] = np.where(good, np.clip((band - lo) / max(hi - lo, 1e-12), 0, 1), 1.0)
    palette = _palette(pm, num_classes)
    lut = np.full((256, 3), 255, np.uint8)
    for k, c in enumerate(palette):
        lut[k] = c
    fig = Figure(figsize=(11, max(2.5, 5.4 * oh / ow) + 1.0), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.imshow(img, interpolation="nearest")
    ax1.set_title("RGB: bands " + ", ".join(str(b) for b in rgb_bands), fontsize=9)
    ax2.imshow(lut[cls], interpolation="nearest")
    ax2.set_title(f"classes (1:{preview.step})", fontsize=9)
    for ax in (ax1, ax2):
        ax.set_axis_off()
    handles = [Patch(color=np.asarray(palette[k]) / 255.0, label=pm.class_names[k]) for k in range(num_classes)][:24]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, max(1, len(handles))), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.12, wspace=0.04)
    tmp = _partial(path)
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)


def _palette(pm: PredictionModel, num_classes: int) -> list[tuple[int, int, int]]:
    pal = [tuple(int(v) for v in c[:3]) for c in pm.palette[:num_classes]]
    rng = np.random.default_rng(0)
    while len(pal) < num_classes:
        pal.append(tuple(int(v) for v in rng.integers(0, 256, 3)))
    return pal  # type: ignore[return-value]


def _nodata_value(pm: PredictionModel, num_classes: int) -> int:
    if num_classes > 255:
        raise PredictError(f"{num_classes} classes do not fit a uint8 class map (at most 255)")
    ig = int(pm.ignore_index)
    return ig if num_classes <= ig <= 255 else 255


def _gdal_env():
    import rasterio

    opts: dict[str, Any] = {"GDAL_TIFF_OVR_BLOCKSIZE": 512}
    if "GDAL_CACHEMAX" not in os.environ:
        opts["GDAL_CACHEMAX"] = GDAL_CACHE_BYTES
    return rasterio.Env(**opts)


def predict_scene(
    pm: PredictionModel,
    scene: Path,
    out_dir: Path,
    *,
    tile: int = 512,
    overlap: int = 128,
    batch_size: int = 4,
    bands: Sequence[int] | None = None,
    probabilities: bool = False,
    device: str | torch.device = "cpu",
    show_progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
    progress_position: int = 0,
) -> dict:
    """Predict one scene into ``out_dir`` (see the module docstring); returns the summary dict."""
    with _gdal_env():
        return _predict_scene(pm, Path(scene), Path(out_dir), tile=tile, overlap=overlap, batch_size=batch_size,
                              bands=bands, probabilities=probabilities, device=_resolve_device(device),
                              show_progress=show_progress, rank=rank, world_size=world_size,
                              progress_position=progress_position)


def _predict_scene(pm, scene: Path, out_dir: Path, *, tile, overlap, batch_size, bands, probabilities, device,
                   show_progress, rank, world_size, progress_position) -> dict:
    import rasterio
    from rasterio.enums import MaskFlags, Resampling
    from rasterio.windows import Window

    t_start = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    paths = output_paths(out_dir, scene)
    out_dir.mkdir(parents=True, exist_ok=True)
    partials = [_partial(paths["classes"])] + ([_partial(paths["probabilities"])] if probabilities else [])
    num_classes = len(pm.class_names)
    nodata = _nodata_value(pm, num_classes)
    palette = _palette(pm, num_classes)
    model = pm.model.to(device).eval()
    pm_dev = PredictionModel(**{**pm.__dict__, "model": model})
    stats = _Stats()
    counts = np.zeros(num_classes, np.int64)
    try:
        with rasterio.open(scene) as src:
            idx = _scene_bands(pm, src, scene, bands)
            plan = plan_windows(src.height, src.width, tile, overlap, pm.multiple_of)
            flags = src.mask_flag_enums
            use_mask = any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags)
            nodatavals = [src.nodatavals[b - 1] for b in idx]
            has_nodata = all(v is not None for v in nodatavals)  # a band without one is never no-data
            nd32 = [np.float32(np.nan if v is None else v) for v in nodatavals]
            nd_nan = [v is not None and math.isnan(v) for v in nodatavals]
            float_input = any(np.dtype(src.dtypes[b - 1]).kind == "f" for b in idx)

            rgb_pos = _rgb_positions(pm.wavelengths)
            preview = _Preview(plan, rgb_pos, nodata)

            def read(r: int, c: int, out: np.ndarray) -> np.ndarray:
                win = Window(c, r, plan.win_w, plan.win_h)
                x = src.read(idx, window=win, out=out)
                if has_nodata:  # no-data where every band holds its no-data value
                    all_nd = np.isnan(x[0]) if nd_nan[0] else x[0] == nd32[0]
                    for k in range(1, len(idx)):
                        all_nd &= np.isnan(x[k]) if nd_nan[k] else x[k] == nd32[k]
                    valid = ~all_nd
                else:
                    valid = np.ones(x.shape[1:], bool)
                if use_mask:
                    valid &= src.dataset_mask(window=win) > 0
                preview.add_window(r, c, x, valid)
                return valid

            block = _block_size(plan.height, plan.width)
            base = dict(driver="GTiff", width=plan.width, height=plan.height, crs=src.crs, transform=src.transform,
                        tiled=True, compress="deflate", interleave="band", BIGTIFF="IF_SAFER")
            for p in partials:
                p.unlink(missing_ok=True)
            prob_dst = None
            with rasterio.open(partials[0], "w", count=1, dtype="uint8", nodata=nodata, blockxsize=block,
                               blockysize=block, **base) as cls_dst:
                cls_sink = _RasterSink(cls_dst, plan, 1, np.uint8, nodata, block, direct=False)
                if probabilities:
                    pblock, pdirect = _prob_block(plan)
                    prob_dst = rasterio.open(partials[1], "w", count=num_classes, dtype="float32", nodata=float("nan"),
                                             blockxsize=pblock, blockysize=pblock, predictor=3, **base)
                    for k, name in enumerate(pm.class_names):
                        prob_dst.set_band_description(k + 1, str(name))
                    prob_sink = _RasterSink(prob_dst, plan, num_classes, np.float32, np.nan, pblock, direct=pdirect)
                bar = _bar(plan.num_windows, f"{scene.name}" + (f" [rank {rank}]" if world_size > 1 else ""),
                           show_progress, progress_position + 1, leave=False)
                try:
                    for piece in _run_windows(pm_dev, plan, read, batch_size=batch_size, device=device, stats=stats,
                                              on_batch=bar.update if bar is not None else None,
                                              check_finite=float_input):
                        cls = np.argmax(piece.acc, axis=0).astype(np.uint8)
                        cls[~piece.valid] = nodata
                        counts += np.bincount(cls[piece.valid].ravel(), minlength=num_classes)[:num_classes]
                        cls_sink.put(piece.top, piece.bottom, piece.left, piece.right, cls[None])
                        preview.add_classes(piece.top, piece.left, cls)
                        if probabilities:
                            logit = piece.normalised(plan)
                            prob = torch.softmax(torch.from_numpy(logit), dim=0).numpy()
                            prob[:, ~piece.valid] = np.nan
                            prob_sink.put(piece.top, piece.bottom, piece.left, piece.right, prob)
                        if piece.right == plan.width:  # a full-width band of rows is finished
                            cls_sink.rows_done(piece.bottom)
                            if probabilities:
                                prob_sink.rows_done(piece.bottom)
                            _release_free_memory()
                finally:
                    if bar is not None:
                        bar.close()
                    if prob_dst is not None:
                        prob_dst.close()
                cls_dst.write_colormap(1, {**{k: (*palette[k], 255) for k in range(num_classes)},
                                           nodata: (0, 0, 0, 0)})
                cls_dst.set_band_description(1, "class")
                cls_dst.update_tags(class_names=json.dumps(list(pm.class_names)))
                factors = []
                f = 2
                while max(plan.height, plan.width) / f >= 256:
                    factors.append(f)
                    f *= 2
                if factors:
                    cls_dst.build_overviews(factors, Resampling.nearest)
                    cls_dst.update_tags(ns="rio_overview", resampling="nearest")
            t_pred = time.perf_counter() - t_start
            _write_preview(paths["preview"], preview, pm, nodata, num_classes, [idx[k] for k in rgb_pos], scene.name)
            crs, transform = src.crs, src.transform
            height, width = src.height, src.width
        if probabilities:
            os.replace(partials[1], paths["probabilities"])
        os.replace(partials[0], paths["classes"])
    except BaseException:
        for p in partials:
            p.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - t_start
    area, note = _pixel_area_m2(crs, transform)
    valid_px = int(counts.sum())
    summary = {
        "status": "done",
        "input": str(scene),
        "classes": str(paths["classes"]),
        "probabilities": str(paths["probabilities"]) if probabilities else None,
        "preview": str(paths["preview"]),
        "summary": str(paths["summary"]),
        "width": width,
        "height": height,
        "bands": idx,
        "crs": crs.to_string() if crs else None,
        "transform": list(transform)[:6],
        "pixel_area_m2": area,
        "area_note": note,
        "tile": plan.tile,
        "overlap": plan.overlap,
        "stride": plan.stride,
        "batch_size": batch_size,
        "windows": plan.num_windows,
        "small_scene_padding": plan.pad_mode,
        "nodata_value": nodata,
        "valid_pixels": valid_px,
        "nodata_pixels": int(height * width - valid_px),
        "class_areas": [
            {
                "index": k,
                "name": pm.class_names[k],
                "pixels": int(counts[k]),
                "fraction": float(counts[k] / valid_px) if valid_px else 0.0,
                "hectares": float(counts[k] * area / 1e4) if area is not None else None,
            }
            for k in range(num_classes)
        ],
        "seconds": seconds,
        "predict_seconds": t_pred,
        "forward_seconds": stats.forward_s,
        "read_wait_seconds": stats.read_wait_s,
        "pixels_per_second": height * width / seconds if seconds > 0 else None,
        "device": str(device),
        "rank": rank,
        "world_size": world_size,
        "pid": os.getpid(),
        "sensor": pm.sensor,
        "wavelengths_um": list(pm.wavelengths),
        "started": started,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json(paths["summary"], summary)
    return summary


def _prob_block(plan: WindowPlan) -> tuple[int, bool]:
    """Block side for the probability raster: one that divides the stride (pieces then fill whole blocks)."""
    s = plan.stride
    if plan.height <= plan.tile and plan.width <= plan.tile:
        return _block_size(plan.height, plan.width), True  # one window: a single piece
    for b in range(512, 127, -16):
        if s % b == 0:
            return b, True
    return _block_size(plan.height, plan.width), False


def _bar(total: int, desc: str, show: bool, position: int, leave: bool, unit: str = "window"):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, position=position, leave=leave, dynamic_ncols=True)


# --------------------------------------------------------------------------------------------------------------
# Many scenes, many processes
# --------------------------------------------------------------------------------------------------------------


def _validate_scenes(pm: PredictionModel, inputs: list[Path], bands: Sequence[int] | None) -> None:
    """Open every scene's header and check its bands before any work starts (fail fast, one-line errors)."""
    import rasterio

    stems: dict[str, Path] = {}
    for path in inputs:
        stem = path.stem
        if stem in stems:
            raise PredictError(f"two inputs share the name {stem!r} ({stems[stem]} and {path}): outputs would collide")
        stems[stem] = path
        if not path.is_file():
            raise PredictError(f"input not found: {path}")
        try:
            with rasterio.open(path) as src:
                _scene_bands(pm, src, path, bands)
        except rasterio.errors.RasterioIOError as exc:
            raise PredictError(f"cannot read {path}: {exc}") from None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, pm: PredictionModel, todo: list[Path], out_dir: Path,
            kwargs: dict, result_path: str) -> None:
    import torch.distributed as dist

    _limit_heap_growth()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    device = _resolve_device(kwargs.pop("device"))
    if device.type == "cuda":
        device = torch.device("cuda", rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        mine = todo[rank::world]
        summaries = _predict_list(pm, mine, out_dir, device=device, rank=rank, world_size=world, **kwargs)
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, summaries)
        if rank == 0:
            Path(result_path).write_text(json.dumps([s for part in gathered for s in part]))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _predict_list(pm, scenes: list[Path], out_dir: Path, *, show_progress: bool, rank: int = 0,
                  world_size: int = 1, **kwargs) -> list[dict]:
    from contextlib import nullcontext

    out = []
    outer = _bar(len(scenes), "scenes" + (f" [rank {rank}]" if world_size > 1 else ""), show_progress,
                 2 * rank, leave=True, unit="scene")
    try:
        for scene in scenes:
            out.append(predict_scene(pm, scene, out_dir, show_progress=show_progress, rank=rank,
                                     world_size=world_size, progress_position=2 * rank, **kwargs))
            if outer is not None:
                outer.update(1)
    finally:
        if outer is not None:
            outer.close()
    return out


def predict_scenes(
    pm: PredictionModel,
    inputs: list[Path],
    out_dir: Path,
    *,
    tile: int = 512,
    overlap: int = 128,
    batch_size: int = 4,
    bands: list[int] | None = None,
    probabilities: bool = False,
    resume: bool = False,
    devices: int = 1,
    device: str = "cpu",
    show_progress: bool = True,
) -> list[dict]:
    """Predict every scene in ``inputs`` into ``out_dir``; one summary dict per input, in input order.

    Raises :class:`PredictError` (one-line message) on bad arguments or a band mismatch, before any scene is
    processed. With ``resume`` a scene whose ``_classes.tif`` and ``_summary.json`` exist is skipped (its summary is
    the stored one with ``status = "skipped"``). With ``devices > 1`` the scenes are split round-robin over that many
    processes (see the module docstring).
    """
    inputs = [Path(p) for p in inputs]
    out_dir = Path(out_dir)
    if batch_size < 1:
        raise PredictError(f"--batch-size must be positive, got {batch_size}")
    if devices < 1:
        raise PredictError(f"--devices must be positive, got {devices}")
    if len(pm.mean) != len(pm.wavelengths) or len(pm.std) != len(pm.wavelengths):
        raise PredictError("checkpoint statistics (mean/std) and wavelengths have different band counts")
    plan_windows(max(tile, 1), max(tile, 1), tile, overlap, pm.multiple_of)  # validates tile / overlap
    _validate_scenes(pm, inputs, bands)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[Path, dict] = {}
    todo = []
    for scene in inputs:
        if resume and _is_finished(out_dir, scene):
            try:
                stored = json.loads(output_paths(out_dir, scene)["summary"].read_text())
            except (OSError, ValueError):
                stored = {}
            results[scene] = {**stored, "input": str(scene), "status": "skipped"}
        else:
            todo.append(scene)
    kwargs = dict(tile=tile, overlap=overlap, batch_size=batch_size, bands=bands, probabilities=probabilities)
    world = min(devices, len(todo))
    if world <= 1:
        for s in _predict_list(pm, todo, out_dir, device=device, show_progress=show_progress, **kwargs):
            results[Path(s["input"])] = s
    elif todo:
        import torch.multiprocessing as mp

        port = _free_port()
        with tempfile.TemporaryDirectory(prefix="rsmoe-predict-") as tmp:
            result_path = os.path.join(tmp, "summaries.json")
            try:
                mp.spawn(_worker, args=(world, port, pm, todo, out_dir,
                                        {**kwargs, "device": device, "show_progress": show_progress}, result_path),
                         nprocs=world, join=True)
            except mp.ProcessRaisedException as exc:
                last = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
                raise PredictError(f"a prediction process failed: {last[-1] if last else exc}") from None
            for s in json.loads(Path(result_path).read_text()):
                results[Path(s["input"])] = s
    return [results[s] for s in inputs]


# --------------------------------------------------------------------------------------------------------------
# Inputs and command line
# --------------------------------------------------------------------------------------------------------------

_RASTER_SUFFIXES = (".tif", ".tiff")


def collect_inputs(
    input: str | Path | Sequence[str | Path] | None = None,  # noqa: A002 - mirrors --input
    input_dir: str | Path | None = None,
    input_list: str | Path | None = None,
) -> list[Path]:
    """The scenes named by ``--input`` (one or more files), ``--input-dir`` (its ``*.tif`` / ``*.tiff``, sorted, not
    recursive; hidden files and rsmoe's own outputs skipped) and ``--input-list`` (a text file, one path per line,
    ``#`` comments, relative paths relative to the list). Order kept, duplicates dropped; missing files are an error.
    """
    found: list[Path] = []
    if input is not None:
        items = [input] if isinstance(input, (str, Path)) else list(input)
        found += [Path(p) for p in items]
    if input_dir is not None:
        d = Path(input_dir)
        if not d.is_dir():
            raise PredictError(f"--input-dir {d} is not a folder")
        for p in sorted(d.iterdir()):
            if not p.is_file() or p.name.startswith(".") or p.suffix.lower() not in _RASTER_SUFFIXES:
                continue
            stem = p.stem
            for tail in ("_classes", "_probabilities"):
                if stem.endswith(tail) and (d / f"{stem[: -len(tail)]}_summary.json").is_file():
                    break
            else:
                found.append(p)
    if input_list is not None:
        lp = Path(input_list)
        if not lp.is_file():
            raise PredictError(f"--input-list {lp} not found")
        for line in lp.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                p = Path(line).expanduser()
                found.append(p if p.is_absolute() else lp.parent / p)
    if input is None and input_dir is None and input_list is None:
        raise PredictError("no input: give --input, --input-dir or --input-list")
    seen: set[Path] = set()
    out: list[Path] = []
    for p in found:
        key = p.resolve()
        if key in seen:
            continue
        seen.add(key)
        if not p.is_file():
            raise PredictError(f"input not found: {p}")
        out.append(p)
    if not out:
        raise PredictError("no input scenes found")
    return out


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected band numbers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected wavelengths in µm, got {text!r}") from None


def _flatten(values):
    if values is None:
        return None
    return [v for part in values for v in part]


def add_predict_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``rsmoe predict`` options to ``parser``."""
    parser.add_argument("--checkpoint", required=True, help="trained checkpoint")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", metavar="SCENE", help="one or more GeoTIFF scenes")
    src.add_argument("--input-dir", metavar="DIR", help="every *.tif / *.tiff in DIR")
    src.add_argument("--input-list", metavar="FILE", help="text file with one scene path per line")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    claim = parser.add_mutually_exclusive_group()
    claim.add_argument("--sensor", metavar="NAME",
                       help="the input's sensor (a name from rsmoe.sensors, e.g. Sentinel-2, GF-2, RGB), "
                            "checked against the checkpoint's wavelengths")
    claim.add_argument("--wavelengths", nargs="+", type=_float_list, metavar="UM",
                       help="the input's band wavelengths in µm, checked against the checkpoint")
    parser.add_argument("--bands", nargs="+", type=_int_list, metavar="N",
                        help="1-based input bands to use, in the checkpoint's order (e.g. --bands 4 3 2 8)")
    parser.add_argument("--tile", type=int, default=512, help="window side in pixels (default 512)")
    parser.add_argument("--overlap", type=int, default=128, help="overlap between windows in pixels (default 128)")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    parser.add_argument("--probabilities", action="store_true", help="also write a float32 probability raster")
    parser.add_argument("--resume", action="store_true", help="skip scenes whose outputs are already complete")
    parser.add_argument("--devices", type=int, default=1, help="processes / GPUs to split the scenes over")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run_predict_from_args(
    args: argparse.Namespace,
    pm_loader: Callable[[str], PredictionModel],
    sensors: dict[str, Sequence[float]] | None = None,
) -> int:
    """Run ``rsmoe predict`` from parsed arguments (see :func:`add_predict_arguments`); returns the exit status 0.

    User errors raise :class:`PredictError` — a ``ValueError`` with a one-line message, which ``rsmoe``'s ``main``
    prints as ``rsmoe predict: error: …`` (exit status 2). Inputs and the ``--sensor`` / ``--wavelengths`` claim are
    checked before the checkpoint is used; ``sensors`` overrides the :mod:`rsmoe.sensors` registry.
    """
    bands = _flatten(getattr(args, "bands", None))
    wavelengths = _flatten(getattr(args, "wavelengths", None))
    inputs = collect_inputs(getattr(args, "input", None), getattr(args, "input_dir", None),
                            getattr(args, "input_list", None))
    pm = pm_loader(args.checkpoint)
    check_sensor(pm, getattr(args, "sensor", None), wavelengths, bands, sensors)
    _limit_heap_growth()
    summaries = predict_scenes(
        pm, inputs, Path(args.out), tile=args.tile, overlap=args.overlap, batch_size=args.batch_size,
        bands=bands, probabilities=args.probabilities, resume=args.resume, devices=args.devices,
        device=getattr(args, "device", "cpu"), show_progress=not getattr(args, "no_progress", False),
    )
    for s in summaries:
        if s.get("status") == "skipped":
            print(f"{Path(s['input']).name}: skipped (already done)")
        else:
            rate = s.get("pixels_per_second") or 0.0
            print(f"{Path(s['input']).name}: {s['classes']}  ({s['seconds']:.1f} s, {rate / 1e6:.2f} Mpx/s)")
    return 0
