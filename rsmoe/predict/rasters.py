"""Output rasters: streamed piece by piece into a hidden tiled GeoTIFF, then published as a Cloud-Optimized
GeoTIFF (GDAL's COG driver: every IFD, overviews included, before the image data) at the final path, atomically.

:class:`StreamedRaster` is one such raster; :class:`SceneRasters` the class map and (optionally) the probabilities
of one scene.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_path
from .model import PredictionModel
from .outputs import stream_path
from .windows import Piece, WindowPlan

#: GDAL block cache while predicting (bytes), unless GDAL_CACHEMAX is set in the environment.
GDAL_CACHE_BYTES = 32 * 1024 * 1024
#: Smallest tile side the COG driver accepts (pixels).
MIN_BLOCK = 128


def gdal_env():
    """The GDAL settings used while predicting (a capped block cache)."""
    import rasterio

    opts: dict[str, Any] = {}
    if "GDAL_CACHEMAX" not in os.environ:
        opts["GDAL_CACHEMAX"] = GDAL_CACHE_BYTES
    return rasterio.Env(**opts)


def block_size(height: int, width: int, preferred: int = 512) -> int:
    """Tile side of an output raster: ``preferred``, halved while it exceeds the scene's shorter side, ≥ 128."""
    b = preferred
    while b > MIN_BLOCK and b > min(height, width):
        b //= 2
    return b


def probability_block(plan: WindowPlan) -> tuple[int, bool]:
    """Tile side of the streamed probability raster, and whether pieces can be written as they come: a side
    that divides the stride makes every piece fill whole tiles (each tile is then compressed once)."""
    if plan.height <= plan.tile and plan.width <= plan.tile:
        return block_size(plan.height, plan.width), True  # one window: a single piece
    for b in range(512, 127, -16):
        if plan.stride % b == 0:
            return b, True
    return block_size(plan.height, plan.width), False


class StreamedRaster:
    """One output raster: pieces are written into ``.NAME.partial`` beside ``final``; :meth:`publish` turns that
    file into a COG at ``final``; :meth:`discard` deletes it.

    In ``pending`` mode (``direct`` False) pieces are gathered into full-width rows and whole block rows are written
    (each compressed tile is written once); ``direct`` mode writes pieces as they come (for block-aligned pieces).
    """

    def __init__(self, final: Path, plan: WindowPlan, *, count: int, dtype, nodata, crs, transform, block: int,
                 direct: bool, overview_resampling: str, descriptions: list[str], tags: dict[str, str],
                 colormap: dict | None = None):
        import rasterio

        self.final, self.temp, self.plan = Path(final), stream_path(Path(final)), plan
        self.block, self.direct = block, direct
        self.float = np.dtype(dtype).kind == "f"
        self.overview_resampling = overview_resampling
        self.row0 = 0
        self.temp.unlink(missing_ok=True)
        self.dst = rasterio.open(
            self.temp, "w", driver="GTiff", width=plan.width, height=plan.height, count=count, dtype=dtype,
            nodata=nodata, crs=crs, transform=transform, tiled=True, blockxsize=block, blockysize=block,
            compress="deflate", zlevel=1, interleave="band", BIGTIFF="IF_SAFER",
            **({"predictor": 3} if self.float else {}))
        for k, text in enumerate(descriptions):
            self.dst.set_band_description(k + 1, text)
        self.dst.update_tags(**tags)
        if colormap is not None:
            self.dst.write_colormap(1, colormap)
        if not direct:
            self.buf = np.full((count, block + plan.max_emit_rows, plan.width), nodata, dtype)

    def put(self, piece: Piece, data: np.ndarray) -> None:
        """Write ``data`` (count × piece rows × piece columns) at the piece's place."""
        from rasterio.windows import Window

        if self.direct:
            self.dst.write(data, window=Window(piece.left, piece.top, piece.right - piece.left,
                                               piece.bottom - piece.top))
        else:
            self.buf[:, piece.top - self.row0 : piece.bottom - self.row0, piece.left : piece.right] = data

    def rows_done(self, end: int) -> None:
        """Rows < ``end`` are complete: write all whole block rows (everything at the end of the scene)."""
        from rasterio.windows import Window

        if self.direct:
            return
        h = self.plan.height
        upto = h if end >= h else (end // self.block) * self.block
        n = upto - self.row0
        if n <= 0:
            return
        self.dst.write(self.buf[:, :n], window=Window(0, self.row0, self.plan.width, n))
        rest = end - upto
        if rest > 0:
            self.buf[:, :rest] = self.buf[:, n : n + rest].copy()
        self.row0 = upto

    def publish(self) -> Path:
        """Close the stream file and copy it to ``final`` as a COG (deflate, ``block``-px tiles, overviews halving
        until they fit one tile), through a temporary file and an atomic rename; the stream file is deleted."""
        from rasterio.shutil import copy

        self.dst.close()
        side = block_size(self.plan.height, self.plan.width)
        with atomic_path(self.final) as tmp:
            copy(str(self.temp), str(tmp), driver="COG", compress="DEFLATE", blocksize=side,
                 overview_resampling=self.overview_resampling, BIGTIFF="IF_SAFER",
                 **({"predictor": "YES"} if self.float else {}))
        self.temp.unlink()
        return self.final

    def discard(self) -> None:
        """Close and delete the stream file (after a failure); the final path is left as it was."""
        if not self.dst.closed:
            self.dst.close()
        self.temp.unlink(missing_ok=True)


class SceneRasters:
    """The class map (uint8, colour table, ``class_names`` tag) and, if asked for, the probabilities (float32,
    one band per class, NaN no-data) of one scene, georeferenced like the input."""

    def __init__(self, pm: PredictionModel, plan: WindowPlan, paths: dict[str, Path], crs, transform,
                 probabilities: bool):
        nodata = pm.nodata_value
        colours = {k: (*c, 255) for k, c in enumerate(pm.class_colours)}
        common = dict(crs=crs, transform=transform)
        self.classes = StreamedRaster(
            paths["classes"], plan, count=1, dtype=np.uint8, nodata=nodata, block=block_size(plan.height, plan.width),
            direct=False, overview_resampling="nearest", descriptions=["class"],
            tags={"class_names": json.dumps(list(pm.class_names))}, colormap={**colours, nodata: (0, 0, 0, 0)},
            **common)
        self.probabilities: StreamedRaster | None = None
        if probabilities:
            try:
                block, direct = probability_block(plan)
                self.probabilities = StreamedRaster(
                    paths["probabilities"], plan, count=pm.num_classes, dtype=np.float32, nodata=float("nan"),
                    block=block, direct=direct, overview_resampling="average",
                    descriptions=[str(n) for n in pm.class_names], tags={}, **common)
            except BaseException:
                self.classes.discard()
                raise

    def put(self, piece: Piece, classes: np.ndarray, probabilities: np.ndarray | None) -> None:
        self.classes.put(piece, classes[None])
        if self.probabilities is not None:
            self.probabilities.put(piece, probabilities)

    def rows_done(self, end: int) -> None:
        self.classes.rows_done(end)
        if self.probabilities is not None:
            self.probabilities.rows_done(end)

    def publish(self) -> dict[str, Path]:
        """Publish the probabilities, then the class map (what ``--resume`` looks for first); their final paths."""
        out = {}
        if self.probabilities is not None:
            out["probabilities"] = self.probabilities.publish()
        out["classes"] = self.classes.publish()
        return out

    def discard(self) -> None:
        for raster in (self.classes, self.probabilities):
            if raster is not None:
                raster.discard()


__all__ = ["GDAL_CACHE_BYTES", "MIN_BLOCK", "SceneRasters", "StreamedRaster", "block_size", "gdal_env",
           "probability_block"]
