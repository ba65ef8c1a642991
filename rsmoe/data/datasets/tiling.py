"""Cutting one scene into tiles.

The tile grid along each axis is :func:`rsmoe.windows.window_starts`: windows of ``tile`` pixels every ``stride``
pixels from 0, the last one shifted to end exactly at the image edge, so no tile is padded. A scene with an axis
shorter than the tile gets no tile at all: it is skipped and listed in ``preparation.json``
(``scenes_smaller_than_tile``) and in the summary — prepare never pads.

Each scene is read once, one tile-row strip (``tile`` rows, the full width) at a time through rasterio windows, so
a 6000×6000 ortho-photo is never held whole in memory. Per strip:

* **no-data**: a pixel whose kept bands all equal the scene's no-data value (NaN included) gets mask 255;
* **non-finite values** (float releases): a pixel with NaN or ±inf in any kept band is written as no-data — mask
  255 and image value 0 in every band — and counted per file in ``preparation.json`` and the summary's notes
  (``nonfinite="error"`` refuses the file instead, naming it and the rows);
* the label strip is decoded by the scene's label table (see :mod:`rsmoe.data.datasets.labels`).

A tile whose mask has no labelled pixel is skipped (counted). Georeferenced scenes keep their CRS and each tile
gets its window's own transform.
"""
from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
from rasterio.errors import RasterioError
from rasterio.transform import Affine
from rasterio.windows import Window

from rsmoe.data.prepared import IGNORE_INDEX, PreparedWriter
from rsmoe.data.raster import write_raster
from rsmoe.errors import one_line
from rsmoe.windows import window_starts

from .errors import PrepareError
from .files import open_raster
from .scenes import RasterFile, Scene
from .summary import Stats

NONFINITE_POLICIES = ("nodata", "error")
NONFINITE_FILL = 0  # the image value written where a pixel had a NaN/inf value


@dataclass(frozen=True)
class DecodeOptions:
    """How labels and pixel values are handled: ``unknown`` (``error``/``ignore``) for label values outside the
    table, ``tolerance`` for near colours, ``nonfinite`` (``nodata``/``error``) for NaN/inf image values."""

    unknown: str = "error"
    tolerance: int = 0
    nonfinite: str = "nodata"


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile starts along one axis: :func:`rsmoe.windows.window_starts`, or none when the axis is shorter than the
    tile (the scene is skipped, never padded)."""
    return window_starts(length, tile, stride) if length >= tile else []


def read_strip(src, path: RasterFile, row: int, tile: int, width: int, indexes=None) -> np.ndarray:
    """Rows ``row``…``row+tile`` (all columns) of an open raster, as C×tile×width (``indexes``: 1-based bands)."""
    try:
        return src.read(indexes=indexes, window=Window(0, row, width, tile))
    except RasterioError as e:
        raise PrepareError(f"{path}: cannot read rows {row}-{row + tile} ({one_line(e)})") from None


def label_strip(src, scene: Scene, path: RasterFile, row: int, tile: int) -> np.ndarray:
    """A label strip in the table's encoding: 3×H×W for colours, H×W for indices (``label_band`` honoured)."""
    if scene.table.kind == "color":
        return read_strip(src, path, row, tile, scene.width, [1, 2, 3])
    band = 1 if scene.label_band is None else int(scene.label_band) + 1
    return read_strip(src, path, row, tile, scene.width, [band])[0]


def nodata_pixels(image: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """H×W: pixels whose bands all equal ``nodata`` (all NaN for a NaN no-data value); None without one."""
    if nodata is None:
        return None
    if isinstance(nodata, float) and math.isnan(nodata):
        return np.all(np.isnan(image), axis=0) if np.issubdtype(image.dtype, np.floating) else None
    return np.all(image == nodata, axis=0)


def clear_nonfinite(image: np.ndarray, scene: Scene, row: int, policy: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Set every band of the pixels with a NaN/inf value in a float strip to 0 and return those H×W pixels (None:
    none), or refuse them (``policy="error"``)."""
    if not np.issubdtype(image.dtype, np.floating):
        return image, None
    bad = ~np.isfinite(image)
    if not bad.any():
        return image, None
    pixels = bad.any(axis=0)
    if policy == "error":
        raise PrepareError(f"{scene.image}: {int(pixels.sum())} pixel(s) with NaN/inf values in rows "
                           f"{row}-{row + image.shape[1]} (expected finite values; nonfinite=nodata writes them as "
                           "no-data)")
    image = image.copy()
    image[:, pixels] = NONFINITE_FILL  # every band of the pixel, as for no-data pixels
    return image, pixels


def strip_masks(srcs: dict, scene: Scene, row: int, tile: int, invalid: np.ndarray | None,
                options: DecodeOptions, near: set[str]) -> dict[str, np.ndarray]:
    """The decoded label strip of every label variant (``label`` first), ``invalid`` pixels ignored."""
    masks = {}
    for variant, path in [("label", scene.label), *scene.alt_labels.items()]:
        raw = label_strip(srcs[variant], scene, path, row, tile)
        masks[variant] = scene.table.decode(raw, str(path), ignore=invalid, unknown=options.unknown,
                                            tolerance=options.tolerance, near=near)
    return masks


def write_tiles(writer: PreparedWriter, scene: Scene, row: int, cols: list[int], tile: int, image: np.ndarray,
                masks: dict[str, np.ndarray], stats: Stats) -> int:
    """Write the tiles of one strip (skipping those without a labelled pixel); returns the number written."""
    written = 0
    for c in cols:
        m = masks["label"][:, c:c + tile]
        if not (m != IGNORE_INDEX).any():
            stats.tiles_skipped_empty += 1
            continue
        crs = transform = None
        if scene.georef:
            crs, transform = scene.crs, scene.transform @ Affine.translation(c, row)  # the window's own transform
        entry = writer.add_tile(image[:, :, c:c + tile], m, scene.domain, scene.split, scene.sensor,
                                source_file=scene.source_file, row=row, col=c, crs=crs, transform=transform)
        for variant in scene.alt_labels:
            alt_path = f"masks_{variant}" + entry["mask"][len("masks"):]  # masks_<v>/<domain>/<split>/<stem>.tif
            write_raster(writer.tmp_dir / alt_path, masks[variant][:, c:c + tile].astype(np.uint8), crs=crs,
                         transform=transform)
        stats.add(scene.domain, scene.split, m)
        written += 1
    return written


def tile_scene(writer: PreparedWriter, scene: Scene, tile: int, stride: int, stats: Stats,
               options: DecodeOptions = DecodeOptions()) -> int:
    """Write the tiles of one (inspected) scene; returns the number written."""
    rows, cols = tile_starts(scene.height, tile, stride), tile_starts(scene.width, tile, stride)
    if not rows or not cols:
        stats.scenes_too_small.append(scene.source_file)
        return 0
    bands = [b + 1 for b in scene.bands] if scene.bands is not None else None
    written = counted_to = 0  # rows whose non-finite pixels are counted (strips overlap at the bottom edge)
    with ExitStack() as stack:
        srcs = {"image": stack.enter_context(open_raster(scene.image, "image")),
                "label": stack.enter_context(open_raster(scene.label, "label"))}
        for variant, path in scene.alt_labels.items():
            srcs[variant] = stack.enter_context(open_raster(path, f"{variant} label"))
        for r in rows:
            image = read_strip(srcs["image"], scene.image, r, tile, scene.width, bands)
            image, nonfinite = clear_nonfinite(image, scene, r, options.nonfinite)
            invalid = nodata_pixels(image, scene.nodata_value)
            if nonfinite is not None:
                invalid = nonfinite if invalid is None else (invalid | nonfinite)
                new = int(nonfinite[max(0, counted_to - r):].sum())
                stats.nonfinite[scene.source_file] = stats.nonfinite.get(scene.source_file, 0) + new
            counted_to = r + tile
            masks = strip_masks(srcs, scene, r, tile, invalid, options, stats.near_colors)
            written += write_tiles(writer, scene, r, cols, tile, image, masks, stats)
    return written


__all__ = ["DecodeOptions", "NONFINITE_POLICIES", "clear_nonfinite", "nodata_pixels", "tile_scene", "tile_starts"]
