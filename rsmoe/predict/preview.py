"""The quick-look PNG: RGB and class-map samples collected while the windows stream past, then drawn."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path
from ..sensors import rgb_band_indices
from .model import PredictionModel
from .windows import WindowPlan

#: Longest side of the quick-look PNG's panels, in pixels (the figure shows them at about native size).
PREVIEW_MAX_SIDE = 512


class Preview:
    """Decimated samples (every ``step``-th row and column) of the RGB bands, validity and class map, collected
    while the windows stream past, so the quick-look needs no second pass over the scene."""

    def __init__(self, plan: WindowPlan, pm: PredictionModel):
        self.step = max(1, math.ceil(max(plan.height, plan.width) / PREVIEW_MAX_SIDE))
        oh, ow = -(-plan.height // self.step), -(-plan.width // self.step)
        self.rgb_pos = rgb_band_indices(pm.wavelengths)  # positions among the model's bands, R, G, B
        nodata = pm.nodata_value
        self.rgb = np.full((3, oh, ow), np.nan, np.float32)
        self.cls = np.full((oh, ow), nodata, np.uint8)

    def _grid(self, top: int, left: int, h: int, w: int) -> tuple[slice, slice, slice, slice]:
        st = self.step
        oy, ox = (-top) % st, (-left) % st  # first sampled row / column inside the block
        ny, nx = len(range(oy, h, st)), len(range(ox, w, st))
        py, px = (top + oy) // st, (left + ox) // st
        return slice(oy, h, st), slice(ox, w, st), slice(py, py + ny), slice(px, px + nx)

    def add_window(self, top: int, left: int, x: np.ndarray, valid: np.ndarray) -> None:
        """Sample a window's raw values (C × h × w) and validity (h × w) whose top-left pixel is (top, left)."""
        sy, sx, py, px = self._grid(top, left, x.shape[1], x.shape[2])
        sample = x[:, sy, sx][self.rgb_pos]
        self.rgb[:, py, px] = np.where(valid[sy, sx][None], sample, np.nan)

    def add_classes(self, top: int, left: int, cls: np.ndarray) -> None:
        """Sample a finished piece of the class map (h × w uint8) whose top-left pixel is (top, left)."""
        sy, sx, py, px = self._grid(top, left, cls.shape[0], cls.shape[1])
        self.cls[py, px] = cls[sy, sx]


def write_preview(path: Path, preview: Preview, pm: PredictionModel, rgb_bands: list[int], title: str) -> None:
    """Quick-look PNG (atomically): percentile-stretched RGB (``rgb_bands``: the file's 1-based band numbers shown
    in the panel's title) next to the coloured class map, with a legend."""
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
    palette, num_classes = pm.class_colours, pm.num_classes
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


__all__ = ["PREVIEW_MAX_SIDE", "Preview", "write_preview"]
