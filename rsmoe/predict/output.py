"""Output files of a scene: their paths (final and ``.partial``), the raster writer, the class-map palette and
no-data value, the summary JSON and the GDAL settings used while writing."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .model import PredictError, PredictionModel
from .windows import WindowPlan

#: GDAL block cache while predicting (bytes), unless GDAL_CACHEMAX is set in the environment.
GDAL_CACHE_BYTES = 32 * 1024 * 1024


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


def _prob_block(plan: WindowPlan) -> tuple[int, bool]:
    """Block side for the probability raster: one that divides the stride (pieces then fill whole blocks)."""
    s = plan.stride
    if plan.height <= plan.tile and plan.width <= plan.tile:
        return _block_size(plan.height, plan.width), True  # one window: a single piece
    for b in range(512, 127, -16):
        if s % b == 0:
            return b, True
    return _block_size(plan.height, plan.width), False


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
