"""The summary of one predicted scene (``<stem>_summary.json``): inputs, outputs with their SHA-256, the
checkpoint (SHA-256 and config), the window settings, class areas and timings."""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .model import PredictionModel
from .windows import WindowPlan


def pixel_area_m2(crs, transform) -> tuple[float | None, str | None]:
    """Area of one pixel in m² from a projected CRS and affine transform, or (None, why not)."""
    det = abs(transform.a * transform.e - transform.b * transform.d)
    if crs is None:
        return None, "the scene has no CRS: class areas are given in pixels only"
    if crs.is_geographic:
        return None, "the CRS is geographic (degrees): class areas are given in pixels only"
    try:
        _, factor = crs.linear_units_factor
    except Exception:  # noqa: BLE001 - pyproj/GDAL raise several types for a unit they do not know
        return None, "the CRS's linear unit is unknown: class areas are given in pixels only"
    return det * factor * factor, None


def class_areas(pm: PredictionModel, counts: np.ndarray, area_m2: float | None) -> list[dict]:
    """Per class: pixels, fraction of the valid pixels and hectares (None without a pixel area)."""
    valid = int(counts.sum())
    return [
        {
            "index": k,
            "name": pm.class_names[k],
            "pixels": int(counts[k]),
            "fraction": float(counts[k] / valid) if valid else 0.0,
            "hectares": float(counts[k] * area_m2 / 1e4) if area_m2 is not None else None,
        }
        for k in range(pm.num_classes)
    ]


def checkpoint_record(pm: PredictionModel) -> dict:
    """Which model made the outputs: the checkpoint's path, SHA-256 and run config (None for in-memory models)."""
    return {"path": pm.source_path, "sha256": pm.source_sha256,
            "config": json.loads(pm.config_json) if pm.config_json else None}


@dataclass
class SceneTimes:
    """Wall-clock marks of one scene (``time.perf_counter`` seconds, and ISO start / end times in UTC)."""

    start: float
    started: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    predicted: float | None = None  # when the rasters were complete (before the preview and the summary)


@dataclass
class SceneFacts:
    """What the summary reports of the input scene: size, bands read, georeferencing."""

    path: Path
    width: int
    height: int
    bands: list[int]
    crs: object
    transform: object


def scene_summary(pm: PredictionModel, facts: SceneFacts, plan: WindowPlan, *, counts: np.ndarray,
                  files: dict[str, dict], paths: dict[str, Path], times: SceneTimes, end: float, stats,
                  batch_size: int, device, rank: int, world_size: int) -> dict:
    """The summary dict of a finished scene (``files``: :func:`rsmoe.predict.outputs.file_record` per raster)."""
    seconds = end - times.start
    area, note = pixel_area_m2(facts.crs, facts.transform)
    valid_px = int(counts.sum())
    pixels = facts.height * facts.width
    return {
        "status": "done",
        "input": str(facts.path),
        "classes": str(paths["classes"]),
        "probabilities": str(paths["probabilities"]) if "probabilities" in files else None,
        "preview": str(paths["preview"]),
        "summary": str(paths["summary"]),
        "files": files,
        "checkpoint": checkpoint_record(pm),
        "width": facts.width, "height": facts.height, "bands": facts.bands,
        "crs": facts.crs.to_string() if facts.crs else None,
        "transform": list(facts.transform)[:6],
        "pixel_area_m2": area, "area_note": note,
        "tile": plan.tile, "overlap": plan.overlap, "stride": plan.stride, "batch_size": batch_size,
        "windows": plan.num_windows, "small_scene_padding": plan.pad_mode,
        "nodata_value": pm.nodata_value, "valid_pixels": valid_px, "nodata_pixels": int(pixels - valid_px),
        "class_areas": class_areas(pm, counts, area),
        "seconds": seconds,
        "predict_seconds": (times.predicted or end) - times.start,
        "forward_seconds": stats.forward_s,
        "read_wait_seconds": stats.read_wait_s,
        "pixels_per_second": pixels / seconds if seconds > 0 else None,
        "device": str(device), "rank": rank, "world_size": world_size, "pid": os.getpid(),
        "sensor": pm.sensor, "wavelengths_um": list(pm.wavelengths),
        "started": times.started,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


__all__ = ["SceneFacts", "SceneTimes", "checkpoint_record", "class_areas", "pixel_area_m2", "scene_summary"]
