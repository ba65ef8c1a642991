"""Reading a scene: open it, check its bands against the checkpoint, cut it into windows, and read one window at a
time with its validity (no-data value, dataset mask, non-finite values)."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import one_line
from .bands import scene_bands
from .model import PredictError, PredictionModel
from .summary import SceneFacts
from .windows import WindowPlan, plan_windows


class SceneReader:
    """An open scene (a rasterio dataset): the 1-based ``bands`` to read, in the model's order, and the window
    ``plan``. A pixel is no-data where every band read holds the file's no-data value (a band without one is never
    no-data), where the dataset mask (internal / external mask or alpha band) is 0, or — in float scenes — where any
    band read is NaN or ±inf."""

    def __init__(self, src, path: Path, bands: list[int], plan: WindowPlan):
        from rasterio.enums import MaskFlags

        self.src, self.path, self.bands, self.plan = src, path, bands, plan
        self.use_mask = any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in src.mask_flag_enums)
        nodatavals = [src.nodatavals[b - 1] for b in bands]
        self.has_nodata = all(v is not None for v in nodatavals)
        self.nodata32 = [np.float32(np.nan if v is None else v) for v in nodatavals]
        self.nodata_nan = [v is not None and math.isnan(v) for v in nodatavals]
        self.float_input = any(np.dtype(src.dtypes[b - 1]).kind == "f" for b in bands)

    @property
    def facts(self) -> SceneFacts:
        s = self.src
        return SceneFacts(self.path, s.width, s.height, list(self.bands), s.crs, s.transform)

    def read(self, row: int, col: int, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` (C × win_h × win_w float32) with the raw window whose top-left pixel is (row, col); return
        its validity (win_h × win_w bool). A read failure (a truncated or corrupt file) is a :class:`PredictError`
        naming the file."""
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        win = Window(col, row, self.plan.win_w, self.plan.win_h)
        try:
            x = self.src.read(self.bands, window=win, out=out)
            mask = self.src.dataset_mask(window=win) if self.use_mask else None
        except RasterioError as exc:
            cause = exc.__cause__ or exc
            raise PredictError(f"cannot read {self.path} (rows {row}–{row + win.height}, columns {col}–"
                               f"{col + win.width}): {one_line(cause)}; the file may be truncated or corrupt") from None
        valid = self._valid(x)
        if mask is not None:
            valid &= mask > 0
        return valid

    def _valid(self, x: np.ndarray) -> np.ndarray:
        if self.has_nodata:  # no-data where every band holds its no-data value
            all_nd = np.isnan(x[0]) if self.nodata_nan[0] else x[0] == self.nodata32[0]
            for k in range(1, len(self.bands)):
                all_nd &= np.isnan(x[k]) if self.nodata_nan[k] else x[k] == self.nodata32[k]
            valid = ~all_nd
        else:
            valid = np.ones(x.shape[1:], bool)
        if self.float_input:
            valid &= np.isfinite(x).all(axis=0)
        return valid


def open_dataset(path: Path):
    """``rasterio.open(path)``; a file GDAL cannot open is a :class:`PredictError` naming it."""
    import rasterio
    from rasterio.errors import RasterioError

    try:
        return rasterio.open(path)
    except RasterioError as exc:
        raise PredictError(f"cannot read {path}: {one_line(exc)}") from None


@contextlib.contextmanager
def open_scene(pm: PredictionModel, path: Path, bands: Sequence[int] | None, tile: int,
               overlap: int) -> Iterator[SceneReader]:
    """Open a scene, check its bands (:func:`rsmoe.predict.bands.scene_bands`) and plan its windows."""
    with open_dataset(path) as src:
        idx = scene_bands(pm, src, path, bands)
        plan = plan_windows(src.height, src.width, tile, overlap, pm.multiple_of, pm.min_size)
        yield SceneReader(src, path, idx, plan)


__all__ = ["SceneReader", "open_dataset", "open_scene"]
