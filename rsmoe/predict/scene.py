"""One scene: read its windows, predict and blend them, and write the class map, probabilities, preview and
summary (see the :mod:`rsmoe.predict` package docstring)."""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .bands import _scene_bands
from .inference import _resolve_device, _run_windows, _Stats
from .memory import _release_free_memory
from .model import PredictionModel
from .output import (
    _block_size,
    _gdal_env,
    _nodata_value,
    _palette,
    _partial,
    _pixel_area_m2,
    _prob_block,
    _RasterSink,
    _write_json,
    output_paths,
)
from .preview import _Preview, _rgb_positions, _write_preview
from .windows import plan_windows


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


def _bar(total: int, desc: str, show: bool, position: int, leave: bool, unit: str = "window"):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, position=position, leave=leave, dynamic_ncols=True)
