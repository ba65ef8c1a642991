"""Five-Billion-Pixels (FBP) and its five-megacities target release → the prepared format.

Release (Tong et al., "Enabling country-scale land cover mapping with meter-resolution satellite imagery", ISPRS
J. Photogramm. Remote Sens. 196, 2023; https://x-ytong.github.io/project/Five-Billion-Pixels.html; code
https://github.com/x-ytong/DPA): 150 Gaofen-2 multispectral images (4 m, about 6800×7200 pixels) from 62
administrative regions of China. Layout, as in the release's readme::

    ROOT/Image__8bit_NirRGB/GF2_PMS1__L1A0000564539-MSS1.tiff      8-bit, band order NIR, R, G, B
    ROOT/Image_16bit_BGRNir/GF2_PMS1__L1A0000564539-MSS1.tiff      16-bit raw, band order B, G, R, NIR
    ROOT/Annotation__index/GF2_PMS1__L1A0000564539-MSS1_24label.png single band, 0 = unlabeled, 1..24 classes
    ROOT/Annotation__color/GF2_PMS1__L1A0000564539-MSS1_24label.tif colour-coded (same information)
    ROOT/Coordinate_files/GF2_PMS1__L1A0000564539-MSS1.rpb          RPC files (the images carry no CRS)

(``Image_8bit_NirRGB`` with one underscore is accepted too; the GF-2 image folder is the one with an annotation
folder beside it.) Classes (``rsmoe/resources/fbp_classes.csv``, colours from the readme and DPA's
``evaluate.py``): industrial area, paddy field, irrigated field, dry cropland, garden land, arbor forest, shrub
forest, park, natural meadow, artificial meadow, river, urban residential, lake, pond, fish pond, snow, bareland,
rural residential, stadium, square, road, overpass, railway station, airport; 0 = unlabeled → 255.

Bands: rsmoe's ``GF-2`` sensor is B, G, R, NIR (the registry's wavelengths follow that order), so the 8-bit
NIR-R-G-B images are **reordered to B, G, R, NIR** when tiled; the 16-bit ones are stored as they are. Choose the
folder with ``variant="8bit"`` (default: the public SpectralMoE code trains on the 8-bit images; its normalisation
``mean [110.714, 85.357, 88.594, 82.444]`` is given in NIR, R, G, B order) or ``"16bit"``. The images have no-data
padding borders (0 in every band): those pixels become mask 255 and tiles entirely in them are skipped.

Tasks (SpectralMoE supplementary §7.2–7.3):

``task="cross-sensor"`` — source domain ``GF-2`` (all 150 images, split ``train``); targets from the five-megacities
    release, one domain per sensor, split ``test``: ``PlanetScope`` (Chengdu, Shanghai), ``GF-1`` (Wuhan),
    ``Sentinel-2`` (Beijing, Guangzhou). The published ``C-megacities`` layout is one folder for all five cities::

        C-megacities/Image__8bit_NirRGB/T50TMK_20210929T030539.tif        NIR, R, G, B (8-bit), every city
        C-megacities/label_dense__color/T50TMK_20210929T030539_dense.tif  colour-coded, FBP colours

    Which file belongs to which city is the list in the README of x-ytong/DPA, shipped as
    ``rsmoe/resources/fbp_megacities.csv``. The labels cover an annotated part of each image; the rest is black
    (unlabeled → ignored; tiles without a labelled pixel are skipped). ``megacities_root`` is the folder holding
    that layout (it is searched up to three levels below; without ``megacities_root`` it is searched under
    ``root``, so one folder above both releases works). For another layout give ``megacities_map``: a CSV with
    columns ``city,sensor,images,labels[,band_order][,labels_kind]`` whose ``images``/``labels`` are folders or
    single files relative to ``megacities_root`` (a folder's images are paired with labels of the same stem,
    optionally ending ``_dense``/``_24label``/``_label``); ``band_order`` letters over B, G, R, N in file order
    (default ``NRGB``) or the 1-based file bands holding B, G, R, NIR such as ``2,3,4,8``; ``labels_kind``
    ``index``, ``color`` or ``auto`` (default: 3+ bands = colour).
``task="cross-regional"`` — source domain ``Source-regions`` (split ``train``): the images of every region but the
    targets; one target domain per region of ``target_regions`` (default Yichun, Baoding, Xiaogan, Langfang,
    Yuxi, Qiqihar, Hangzhou, Zhuhai, Urumqi, Wuzhong, Xiamen, Shenyang), split ``test``. The image → region
    mapping is not derivable from the file names: give ``regions``, a CSV with columns ``image,region`` (image =
    the file name or stem, e.g. ``GF2_PMS1__L1A0000564539-MSS1``). Region names match ignoring case, spaces,
    ``-`` and ``_``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import PrepareError
from .files import (archives_note, find_files, locate_dirs, open_raster, pair_by_stem, relpath, require_root,
                    strip_suffixes)
from .labels import LabelTable, load_table
from .preparation import Preparation
from .scenes import Scene
from .tables import as_list, read_csv_rows, resource

IMAGE_DIRS = {
    "8bit": ("Image__8bit_NirRGB", "Image_8bit_NirRGB"),
    "16bit": ("Image_16bit_BGRNir", "Image__16bit_BGRNir"),
}
BAND_ORDER = {"8bit": (3, 2, 1, 0), "16bit": (0, 1, 2, 3)}  # bands to read (0-based, file order) for B, G, R, NIR
ANNOTATION_DIRS = {"index": ("Annotation__index", "Annotation_index"),
                   "color": ("Annotation__color", "Annotation_color")}
MEGACITY_LABEL_DIRS = ("label_dense__color", "label_dense_color")
LABEL_SUFFIXES = ("_24label", "_label", "_dense")
TARGET_REGIONS = ("Yichun", "Baoding", "Xiaogan", "Langfang", "Yuxi", "Qiqihar", "Hangzhou", "Zhuhai", "Urumqi",
                  "Wuzhong", "Xiamen", "Shenyang")
MEGACITIES = (("Chengdu", "PlanetScope"), ("Shanghai", "PlanetScope"), ("Wuhan", "GF-1"),
              ("Beijing", "Sentinel-2"), ("Guangzhou", "Sentinel-2"))
TARGET_SENSORS = ("PlanetScope", "GF-1", "Sentinel-2", "GF-2")
SOURCE_REGIONS = "Source-regions"
MAP_HELP = ("give megacities_map (--megacities-map CSV with columns "
            "city,sensor,images,labels[,band_order][,labels_kind])")


def norm_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


def image_dir_with(root: Path, names: Sequence[str], beside: Sequence[str], what: str) -> tuple[Path, Path]:
    """The first folder named one of ``names`` (up to three levels below ``root``) that has a folder named one of
    ``beside`` next to it; returns (image folder, that folder)."""
    candidates = [base / name for name in names for base in locate_dirs(root, name, max_depth=3)]
    for image_dir in candidates:
        for other in beside:
            if (image_dir.parent / other).is_dir():
                return image_dir, image_dir.parent / other
    if candidates:
        raise PrepareError(f"{candidates[0].parent}: no {beside[0]}/ folder next to {candidates[0].name}/ ({what}; "
                           f"looked at {len(candidates)} {names[0]} folder(s) up to 3 levels below {root})")
    raise PrepareError(f"{root}: no {what} image folder {names[0]}/ found (looked up to 3 levels below)"
                       f"{archives_note(root)}")


def gf2_scenes(root: Path, variant: str, annotation: str, table: LabelTable, nodata) -> list[Scene]:
    """The 150 GF-2 images with their annotations (domain GF-2, split train)."""
    if variant not in IMAGE_DIRS:
        raise PrepareError(f"variant must be one of {list(IMAGE_DIRS)}, got {variant!r}")
    if annotation not in ANNOTATION_DIRS:
        raise PrepareError(f"annotation must be one of {list(ANNOTATION_DIRS)}, got {annotation!r}")
    image_dir, label_dir = image_dir_with(root, IMAGE_DIRS[variant], ANNOTATION_DIRS[annotation],
                                          f"Five-Billion-Pixels (variant {variant})")
    images = find_files(image_dir, ["*.tif", "*.tiff"])
    if not images:
        raise PrepareError(f"{image_dir}: no images matching *.tiff")
    labels = find_files(label_dir, ["*.png", "*.tif", "*.tiff"])
    ext = ".png" if annotation == "index" else ".tif"
    pairs = pair_by_stem(images, labels, LABEL_SUFFIXES, expect=lambda im: f"{label_dir / (im.stem + '_24label')}{ext}")
    order = "NIR,R,G,B" if variant == "8bit" else "B,G,R,NIR"
    return [Scene(image=img, label=lab, domain="GF-2", split="train", sensor="GF-2", table=table,
                  source_file=relpath(img, root), bands=BAND_ORDER[variant], expected_bands=4,
                  band_note=f"{variant} FBP images are {order}", nodata=nodata) for img, lab in pairs]


def parse_band_order(text: str, where: str) -> tuple[tuple[int, ...], int | None]:
    """``BGRN``-style letters (file order) or ``2,3,4,8`` (file bands of B, G, R, NIR) → (bands, expected count)."""
    t = text.strip().upper()
    if re.fullmatch(r"[BGRN]{4,}", t) and all(t.count(c) == 1 for c in "BGRN"):
        return tuple(t.index(c) for c in "BGRN"), len(t)
    nums = [p for p in re.split(r"[\s,;]+", t) if p]
    if len(nums) == 4 and all(n.isdigit() and int(n) >= 1 for n in nums):
        return tuple(int(n) - 1 for n in nums), None
    raise PrepareError(f"{where}: band_order {text!r} is neither letters over B,G,R,N in file order (e.g. NRGB) "
                       "nor the 1-based bands of B,G,R,NIR (e.g. 2,3,4,8)")


@dataclass
class MegacityTables:
    """The label tables a megacities label may be decoded with."""

    index: LabelTable
    color: LabelTable
    nodata: float | None

    def for_label(self, label: Path, kind: str, where: str) -> LabelTable:
        """The table for ``kind`` (``index``/``color``/``auto``: by the label's band count)."""
        if kind == "auto":
            with open_raster(label, "label") as src:
                kind = "color" if src.count >= 3 else "index"
        if kind not in ("index", "color"):
            raise PrepareError(f"{where}: labels_kind must be index, color or auto, got {kind!r}")
        return self.color if kind == "color" else self.index


@dataclass(frozen=True)
class MegacityEntry:
    """One group of target images: city, sensor, images (folder or file), labels (folder or file), bands."""

    city: str
    sensor: str
    images: Path
    labels: Path
    band_order: str = "NRGB"
    labels_kind: str = "auto"
    where: str = ""


def entry_pairs(e: MegacityEntry) -> list[tuple[Path, Path]]:
    """(image, label) files of one entry: a file pair, or a folder's images paired by stem."""
    for p, what in ((e.images, "image"), (e.labels, "label")):
        if not p.exists():
            raise PrepareError(f"{p}: {what} file or folder of {e.city} not found ({e.where})")
    images = [e.images] if e.images.is_file() else find_files(e.images, ["*.tif", "*.tiff"])
    if not images:
        raise PrepareError(f"{e.images}: no images matching *.tif for {e.city} ({e.where})")
    if e.labels.is_file():
        if len(images) != 1:
            raise PrepareError(f"{e.where}: labels names one file ({e.labels.name}) but images holds {len(images)}")
        return [(images[0], e.labels)]
    labels = find_files(e.labels, ["*.png", "*.tif", "*.tiff"])
    return pair_by_stem(images, labels, LABEL_SUFFIXES, expect=lambda im: f"{e.labels / im.stem}_dense.tif")


def entry_scenes(mroot: Path, e: MegacityEntry, tables: MegacityTables) -> list[Scene]:
    """The test scenes of one megacities entry (domain = its sensor)."""
    if e.sensor not in TARGET_SENSORS:
        raise PrepareError(f"{e.where}: sensor {e.sensor!r} is not one of {', '.join(TARGET_SENSORS)}")
    bands, expected = parse_band_order(e.band_order, e.where)
    scenes = []
    for img, lab in entry_pairs(e):
        scenes.append(Scene(image=img, label=lab, domain=e.sensor, split="test", sensor=e.sensor,
                            table=tables.for_label(lab, e.labels_kind, e.where),
                            source_file=f"megacities/{relpath(img, mroot)}", bands=bands, expected_bands=expected,
                            band_note=f"band_order {e.band_order}", nodata=tables.nodata))
    return scenes


def published_entries(mroot: Path) -> list[MegacityEntry]:
    """One entry per image of the published ``C-megacities`` layout, its city from ``fbp_megacities.csv``."""
    image_dir, label_dir = image_dir_with(mroot, IMAGE_DIRS["8bit"], MEGACITY_LABEL_DIRS,
                                          "five-megacities (C-megacities)")
    rows = read_csv_rows(resource("fbp_megacities.csv"), ("image", "city", "sensor"), "five-megacities file list")
    city_of = {r["image"]: (r["city"], r["sensor"]) for r in rows}
    labels = {strip_suffixes(p.stem, LABEL_SUFFIXES): p for p in find_files(label_dir, ["*.tif", "*.tiff", "*.png"])}
    entries = []
    for img in find_files(image_dir, ["*.tif", "*.tiff"]):
        if img.stem not in city_of:
            raise PrepareError(f"{img}: not in the five-megacities file list {resource('fbp_megacities.csv').name} "
                               f"(the README of x-ytong/DPA); {MAP_HELP}")
        if img.stem not in labels:
            raise PrepareError(f"{img}: image without label (expected {label_dir / img.stem}_dense.tif)")
        city, sensor = city_of[img.stem]
        entries.append(MegacityEntry(city, sensor, img, labels[img.stem], "NRGB", "color", f"{mroot} ({city})"))
    if not entries:
        raise PrepareError(f"{image_dir}: no images matching *.tif")
    return entries


def mapped_entries(mroot: Path, mapping: str | Path) -> list[MegacityEntry]:
    """The entries of a ``megacities_map`` CSV (paths relative to ``mroot`` unless absolute)."""
    rows = read_csv_rows(mapping, ("city", "sensor", "images", "labels"), "five-megacities mapping")
    out = []
    for i, r in enumerate(rows, start=2):
        paths = [Path(r[k]) if Path(r[k]).is_absolute() else mroot / r[k] for k in ("images", "labels")]
        out.append(MegacityEntry(r["city"], r["sensor"], paths[0], paths[1], r.get("band_order") or "NRGB",
                                 (r.get("labels_kind") or "auto").lower(), f"{mapping} row {i}"))
    return out


def megacity_scenes(mroot: Path, mapping: str | Path | None, tables: MegacityTables) -> tuple[list[Scene], list[str]]:
    """The cross-sensor target scenes and a note on where they came from."""
    if not mroot.exists():
        raise PrepareError(f"{mroot}: five-megacities release folder not found")
    entries = mapped_entries(mroot, mapping) if mapping else published_entries(mroot)
    scenes = [s for e in entries for s in entry_scenes(mroot, e, tables)]
    cities = sorted({e.city for e in entries})
    note = (f"five-megacities targets from {mapping}" if mapping else
            f"five-megacities targets: the C-megacities layout under {mroot} (cities {', '.join(cities)} by the "
            "file list of x-ytong/DPA)")
    return scenes, [note]


def region_scenes(scenes: list[Scene], regions: str | Path, targets: Sequence[str]) -> list[Scene]:
    """Domains from the image → region table: target regions → one test domain each, the rest → Source-regions."""
    rows = read_csv_rows(regions, ("image", "region"), "image → region table")
    by_image: dict[str, str] = {}
    for r in rows:
        stem = Path(r["image"]).stem if Path(r["image"]).suffix.lower() in (".tif", ".tiff", ".png") else r["image"]
        by_image[strip_suffixes(stem, LABEL_SUFFIXES)] = r["region"]  # a label file name works too
    canon = {norm_name(t): t for t in targets}
    seen: dict[str, int] = {t: 0 for t in targets}
    for s in scenes:
        region = by_image.get(s.image.stem)
        if region is None:
            raise PrepareError(f"{regions}: no region for image {s.image.stem} (add a row '{s.image.stem},<region>')")
        target = canon.get(norm_name(region))
        if target is None:
            s.domain = SOURCE_REGIONS
        else:
            s.domain, s.split = target, "test"
            seen[target] += 1
    empty = [t for t, n in seen.items() if n == 0]
    if empty:
        raise PrepareError(f"{regions}: target region(s) {', '.join(empty)} have no image (empty domain); "
                           "check the region names or pass target_regions")
    if not any(s.domain == SOURCE_REGIONS for s in scenes):
        raise PrepareError(f"{regions}: every image is in a target region; the source domain would be empty")
    rank = {t: i + 1 for i, t in enumerate(targets)}
    return sorted(scenes, key=lambda s: rank.get(s.domain, 0))  # source first, then the targets in order


def target_scenes(root: Path, task: str, scenes: list[Scene], regions, target_regions, megacities_root,
                  megacities_map, tables: MegacityTables) -> tuple[list[Scene], list[str]]:
    """The GF-2 scenes with their task domains plus the task's target scenes, and notes."""
    if task == "cross-regional":
        if not regions:
            raise PrepareError(f"{root}: the cross-regional task needs the image → region table: give regions= "
                               "(--regions CSV with columns image,region); FBP file names do not say the region")
        return region_scenes(scenes, regions, as_list(target_regions) or list(TARGET_REGIONS)), []
    if megacities_root is None and not megacities_map:
        bases = [d for name in IMAGE_DIRS["8bit"] for d in locate_dirs(root, name, max_depth=3)
                 if any((d / lab).is_dir() for lab in MEGACITY_LABEL_DIRS)]
        if not bases:
            raise PrepareError(f"{root}: the cross-sensor task needs the five-megacities target release: give "
                               "megacities_root= (--megacities-root DIR, the folder holding C-megacities/"
                               "Image__8bit_NirRGB and label_dense__color)")
        megacities_root = bases[0]
    targets, notes = megacity_scenes(Path(megacities_root or root), megacities_map, tables)
    return scenes + targets, notes


def prepare_fbp(
    root: str | Path,
    out: str | Path,
    *,
    task: str = "cross-sensor",
    variant: str = "8bit",
    annotation: str = "index",
    regions: str | Path | None = None,
    target_regions: Sequence[str] | str | None = None,
    megacities_root: str | Path | None = None,
    megacities_map: str | Path | None = None,
    tile: int = 512,
    stride: int | None = None,
    classes: str | Path | None = None,
    nodata: float | None = 0,
    nonfinite: str = "nodata",
    unknown_labels: str = "error",
    color_tolerance: int = 0,
    progress: bool = False,
) -> Path:
    """Prepare Five-Billion-Pixels for ``task`` ``cross-sensor`` or ``cross-regional`` (see the module doc)."""
    root = require_root(root)
    if task not in ("cross-sensor", "cross-regional"):
        raise PrepareError(f"task must be 'cross-sensor' or 'cross-regional', got {task!r}")
    table = load_table("fbp_classes.csv", classes)
    color_table = load_table("fbp_classes_color.csv")
    if color_table.classes != table.classes:  # a user class table: colour labels only through their own table
        color_table = table
    scenes = gf2_scenes(root, variant, annotation, color_table if annotation == "color" else table, nodata)
    scenes, notes = target_scenes(root, task, scenes, regions, target_regions, megacities_root, megacities_map,
                                  MegacityTables(table, color_table, nodata))
    options = dict(task=task, variant=variant, annotation=annotation, regions=regions,
                   target_regions=as_list(target_regions), megacities_root=megacities_root,
                   megacities_map=megacities_map, nodata=nodata, classes=classes)
    prep = Preparation(name=f"fbp-{task}", out=Path(out), table=table, tile=tile, stride=stride,
                       unknown=unknown_labels, tolerance=color_tolerance, progress=progress, nonfinite=nonfinite,
                       options=options, notes=notes,
                       extra={"band_order": {"GF-2": "B,G,R,NIR (8-bit NIR,R,G,B images reordered)"
                                             if variant == "8bit" else "B,G,R,NIR"}})
    return prep.run(scenes)


__all__ = ["prepare_fbp", "TARGET_REGIONS", "MEGACITIES", "SOURCE_REGIONS"]
