"""Small rasterio helpers: read a GeoTIFF to numpy, write one with CRS/transform and deflate compression."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning


def read_raster(path: str | Path, squeeze: bool = False) -> np.ndarray:
    """The pixels of ``path`` as a C×H×W array in the file's dtype (H×W with ``squeeze=True`` and one band)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            arr = src.read()
    if squeeze:
        if arr.shape[0] != 1:
            raise ValueError(f"{path}: expected a single-band raster, found {arr.shape[0]} bands")
        arr = arr[0]
    return arr


def raster_meta(path: str | Path) -> dict[str, Any]:
    """``crs``, ``transform``, ``count``, ``height``, ``width``, ``dtype`` and ``nodata`` of ``path``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return {
                "crs": src.crs,
                "transform": src.transform,
                "count": src.count,
                "height": src.height,
                "width": src.width,
                "dtype": src.dtypes[0],
                "nodata": src.nodata,
            }


def write_raster(
    path: str | Path,
    array: np.ndarray,
    *,
    crs: Any = None,
    transform: Any = None,
    nodata: float | None = None,
    compress: str = "deflate",
) -> None:
    """Write a C×H×W (or H×W, written as one band) array as a GeoTIFF, keeping ``crs``/``transform`` when given.

    Integer data use deflate with horizontal differencing (predictor 2). Parent folders are created.
    """
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{path}: expected an H×W or C×H×W array, got shape {arr.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "count": arr.shape[0],
        "height": arr.shape[1],
        "width": arr.shape[2],
        "dtype": arr.dtype.name,
    }
    if compress:
        profile["compress"] = compress
        if np.issubdtype(arr.dtype, np.integer):
            profile["predictor"] = 2
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr)
