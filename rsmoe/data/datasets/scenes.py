"""A scene: one image of a release with its label, and how it is to be prepared; and the check every scene passes
before a pixel is written.

A preparer turns its release into a list of :class:`Scene` (image file, label file, domain, split, sensor, the bands
to keep in the sensor registry's order, the no-data value, the :class:`~rsmoe.data.datasets.labels.LabelTable`).
:func:`inspect_scene` opens the files' headers only: the image has the release's band count, the labels have the
image's size and the bands their encoding needs. It fills the scene's geometry (size, CRS, transform).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rasterio.transform import Affine

from rsmoe.sensors import get_sensor

from .errors import PrepareError
from .files import ReleaseFile, open_raster
from .labels import LabelTable

RasterFile = Path | ReleaseFile  # a file on disk or a member of a zip archive


@dataclass
class Scene:
    """One image of a release and how to prepare it."""

    image: RasterFile
    label: RasterFile
    domain: str
    split: str
    sensor: str
    table: LabelTable
    source_file: str  # the manifest's source_file (path relative to the release root)
    bands: Sequence[int] | None = None  # 0-based bands to keep, in the sensor's order (None: all, as stored)
    expected_bands: int | None = None  # band count the image file must have (None: the sensor's)
    band_note: str = ""  # what the expected bands are, for error messages ("R,G,B,NIR,elevation")
    nodata: float | None | str = "file"  # value, None, or "file" (the file's nodata tag, else none)
    label_band: int | None | str = None  # read this 0-based band of an index label whatever its band count;
    # "auto": band 0 of a label with 3 or more bands (CARLA's raw encoding), else the single band
    alt_labels: dict[str, RasterFile] = field(default_factory=dict)  # variant -> label file, written as masks_<v>/
    # filled by inspect_scene()
    height: int = 0
    width: int = 0
    crs: Any = None
    transform: Any = None
    georef: bool = False
    nodata_value: float | None = None


def inspect_scene(scene: Scene) -> None:
    """Open the scene's files (headers only) and check band counts and sizes; fills the scene's geometry."""
    with open_raster(scene.image, "image") as src:
        check_image_bands(scene, src.count)
        scene.height, scene.width = src.height, src.width
        scene.crs, scene.transform = src.crs, src.transform
        scene.georef = src.crs is not None or (src.transform is not None and src.transform != Affine.identity())
        scene.nodata_value = src.nodata if scene.nodata == "file" else scene.nodata  # type: ignore[assignment]
    for variant, path in [("label", scene.label), *scene.alt_labels.items()]:
        with open_raster(path, f"{variant} label") as lab:
            check_label(scene, path, lab.count, lab.height, lab.width)


def check_image_bands(scene: Scene, count: int) -> None:
    """The image's band count against the release's (``expected_bands``) and the kept bands against the sensor."""
    sensor = get_sensor(scene.sensor)
    note = f" ({scene.band_note})" if scene.band_note else ""
    if scene.expected_bands is None and scene.bands is not None:
        if count <= max(scene.bands):
            raise PrepareError(f"{scene.image}: image has {count} band(s), band {max(scene.bands) + 1} is "
                               f"needed{note}")
    else:
        expected = scene.expected_bands or sensor.num_bands
        if count != expected:
            raise PrepareError(f"{scene.image}: image has {count} band(s), expected {expected}{note}")
    keep = list(scene.bands) if scene.bands is not None else list(range(count))
    if len(keep) != sensor.num_bands:
        raise PrepareError(f"{scene.image}: keeping {len(keep)} band(s) but sensor {scene.sensor} has "
                           f"{sensor.num_bands}")


def check_label(scene: Scene, path: RasterFile, count: int, height: int, width: int) -> None:
    """A label file's size and band count against its image and the table's encoding."""
    if scene.label_band == "auto":
        scene.label_band = 0 if count >= 3 else None
    if (height, width) != (scene.height, scene.width):
        raise PrepareError(f"{path}: label is {height}×{width} pixels but image {scene.image.name} "
                           f"is {scene.height}×{scene.width}")
    if scene.table.kind == "color" and count < 3:
        raise PrepareError(f"{path}: colour-coded label needs 3 bands (R, G, B), found {count}")
    if scene.table.kind == "index" and scene.label_band is None and count != 1:
        raise PrepareError(f"{path}: index label must have 1 band, found {count}")
    if scene.label_band is not None and scene.label_band >= count:
        raise PrepareError(f"{path}: label has {count} band(s), band {scene.label_band + 1} requested")


__all__ = ["RasterFile", "Scene", "check_image_bands", "check_label", "inspect_scene"]
