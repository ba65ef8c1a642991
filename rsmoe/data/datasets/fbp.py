"""Five-Billion-Pixels (FBP) and its five-megacities target release → the prepared format.

Release (Tong et al., "Enabling country-scale land cover mapping with meter-resolution satellite imagery", ISPRS
J. Photogramm. Remote Sens. 196, 2023; https://x-ytong.github.io/project/Five-Billion-Pixels.html): 150 Gaofen-2
multispectral images (4 m, about 6800×7200 pixels) from 62 administrative regions of China. Layout, as in the
release's readme::

    ROOT/Image__8bit_NirRGB/GF2_PMS1__L1A0000564539-MSS1.tiff      8-bit, band order NIR, R, G, B
    ROOT/Image_16bit_BGRNir/GF2_PMS1__L1A0000564539-MSS1.tiff      16-bit raw, band order B, G, R, NIR
    ROOT/Annotation__index/GF2_PMS1__L1A0000564539-MSS1_24label.png single band, 0 = unlabeled, 1..24 classes
    ROOT/Annotation__color/GF2_PMS1__L1A0000564539-MSS1_24label.tif colour-coded (same information)
    ROOT/Coordinate_files/GF2_PMS1__L1A0000564539-MSS1.rpb          RPC files (the images carry no CRS)

(``Image_8bit_NirRGB`` with one underscore is accepted too.) Classes (``rsmoe/resources/fbp_classes.csv``, colours
from the readme): industrial area, paddy field, irrigated field, dry cropland, garden land, arbor forest, shrub
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
    ``Sentinel-2`` (Beijing, Guangzhou; 10 m bands B2, B3, B4, B8). Give the release with ``megacities_root``.
    **Its layout is not established**: rsmoe looks for one folder per city under ``megacities_root`` (a name
    containing the city, any case), images (``*.tif``/``*.tiff``) in a subfolder named like ``image*``/``img*``
    (or the city folder itself) and index labels (``*.png``/``*.tif``, the 24-class FBP encoding) in a subfolder
    named like ``label*``/``annotation*``/``gt*``/``mask*``, paired by file stem (label stems may end in
    ``_24label`` or ``_label``); image bands assumed B, G, R, NIR. Where this guess does not fit, give
    ``megacities_map``: a CSV with columns ``city,sensor,images,labels[,band_order][,labels_kind]`` (folders
    relative to ``megacities_root``; ``band_order`` letters over B, G, R, N in file order such as ``BGRN`` or
    ``NRGB``, or the 1-based file bands holding B, G, R, NIR such as ``2,3,4,8``; ``labels_kind`` ``index`` or
    ``color``).
``task="cross-regional"`` — source domain ``Source-regions`` (split ``train``): the images of every region but the
    targets; one target domain per region of ``target_regions`` (default Yichun, Baoding, Xiaogan, Langfang,
    Yuxi, Qiqihar, Hangzhou, Zhuhai, Urumqi, Wuzhong, Xiamen, Shenyang), split ``test``. The image → region
    mapping is not derivable from the file names: give ``regions``, a CSV with columns ``image,region`` (image =
    the file name or stem, e.g. ``GF2_PMS1__L1A0000564539-MSS1``). Region names match ignoring case, spaces,
    ``-`` and ``_``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from .common import (
    LabelTable,
    Preparation,
    PrepareError,
    Scene,
    as_list,
    find_files,
    load_table,
    locate_dirs,
    pair_by_stem,
    read_csv_rows,
    relpath,
    require_root,
)

IMAGE_DIRS = {
    "8bit": ("Image__8bit_NirRGB", "Image_8bit_NirRGB"),
    "16bit": ("Image_16bit_BGRNir", "Image__16bit_BGRNir"),
}
# bands to read (0-based, file order) to get B, G, R, NIR
BAND_ORDER = {"8bit": (3, 2, 1, 0), "16bit": (0, 1, 2, 3)}
ANNOTATION_DIRS = {"index": ("Annotation__index", "Annotation_index"),
                   "color": ("Annotation__color", "Annotation_color")}
LABEL_SUFFIXES = ("_24label", "_label")
TARGET_REGIONS = ("Yichun", "Baoding", "Xiaogan", "Langfang", "Yuxi", "Qiqihar", "Hangzhou", "Zhuhai", "Urumqi",
                  "Wuzhong", "Xiamen", "Shenyang")
MEGACITIES = (("Chengdu", "PlanetScope"), ("Shanghai", "PlanetScope"), ("Wuhan", "GF-1"),
              ("Beijing", "Sentinel-2"), ("Guangzhou", "Sentinel-2"))
SOURCE_REGIONS = "Source-regions"
MEGACITIES_HELP = ("the layout of the five-megacities release is not established; give megacities_map "
                   "(--megacities-map CSV with columns city,sensor,images,labels[,band_order][,labels_kind])")


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


def _find_release(root: Path, variant: str, annotation: str) -> tuple[Path, Path]:
    if variant not in IMAGE_DIRS:
        raise PrepareError(f"variant must be one of {list(IMAGE_DIRS)}, got {variant!r}")
    if annotation not in ANNOTATION_DIRS:
        raise PrepareError(f"annotation must be one of {list(ANNOTATION_DIRS)}, got {annotation!r}")
    for name in IMAGE_DIRS[variant]:
        bases = locate_dirs(root, name, max_depth=2)
        if bases:
            base = bases[0]
            image_dir = base / name
            break
    else:
        raise PrepareError(f"{root}: no Five-Billion-Pixels image folder {IMAGE_DIRS[variant][0]}/ (*.tiff) found "
                           f"(variant {variant}; looked up to 2 levels below)")
    for name in ANNOTATION_DIRS[annotation]:
        if (base / name).is_dir():
            return image_dir, base / name
    raise PrepareError(f"{base}: annotation folder {ANNOTATION_DIRS[annotation][0]}/ "
                       f"(*_24label.{'png' if annotation == 'index' else 'tif'}) not found next to {image_dir.name}/")


def _gf2_scenes(root: Path, variant: str, annotation: str, table: LabelTable, nodata) -> list[Scene]:
    image_dir, label_dir = _find_release(root, variant, annotation)
    images = find_files(image_dir, ["*.tif", "*.tiff"])
    if not images:
        raise PrepareError(f"{image_dir}: no images matching *.tiff")
    labels = find_files(label_dir, ["*.png", "*.tif", "*.tiff"])
    pairs = pair_by_stem(images, labels, LABEL_SUFFIXES, expect=lambda im: f"{label_dir / (im.stem + '_24label')}"
                         + (".png" if annotation == "index" else ".tif"))
    order = "NIR,R,G,B" if variant == "8bit" else "B,G,R,NIR"
    return [
        Scene(image=img, label=lab, domain="GF-2", split="train", sensor="GF-2", table=table,
              source_file=relpath(img, root), bands=BAND_ORDER[variant], expected_bands=4,
              band_note=f"{variant} FBP images are {order}", nodata=nodata)
        for img, lab in pairs
    ]


def _parse_band_order(text: str, where: str) -> tuple[tuple[int, ...], int | None]:
    """``BGRN``-style letters (file order) or ``2,3,4,8`` (file bands of B, G, R, NIR) → (bands, expected count)."""
    t = text.strip().upper()
    if re.fullmatch(r"[BGRN]{4,}", t) and all(t.count(c) == 1 for c in "BGRN"):
        return tuple(t.index(c) for c in "BGRN"), len(t)
    nums = [p for p in re.split(r"[\s,;]+", t) if p]
    if len(nums) == 4 and all(n.isdigit() and int(n) >= 1 for n in nums):
        return tuple(int(n) - 1 for n in nums), None
    raise PrepareError(f"{where}: band_order {text!r} is neither letters over B,G,R,N in file order (e.g. BGRN) "
                       "nor the 1-based bands of B,G,R,NIR (e.g. 2,3,4,8)")


def _find_subdir(city_dir: Path, words: Sequence[str], prefer: str = "") -> Path | None:
    subs = [d for d in sorted(city_dir.iterdir()) if d.is_dir() and any(w in d.name.lower() for w in words)]
    if prefer:
        subs.sort(key=lambda d: prefer not in d.name.lower())
    return subs[0] if subs else None


def _megacity_scenes(mroot: Path, mapping: str | Path | None, table: LabelTable, color_table: LabelTable,
                     nodata) -> list[Scene]:
    if not mroot.is_dir():
        raise PrepareError(f"{mroot}: five-megacities release folder not found")
    entries: list[dict[str, str]] = []
    if mapping:
        rows = read_csv_rows(mapping, ("city", "sensor", "images", "labels"), "five-megacities mapping")
        entries = rows
    else:
        candidates = [d for d in sorted(mroot.rglob("*")) if d.is_dir() and len(d.relative_to(mroot).parts) <= 2]
        for city, sensor in MEGACITIES:
            city_dirs = [d for d in candidates if _norm(city) in _norm(d.name)]
            if not city_dirs:
                raise PrepareError(f"{mroot}: no folder for {city} ({sensor}) found; {MEGACITIES_HELP}")
            cdir = city_dirs[0]
            img_dir = _find_subdir(cdir, ("image", "img")) or cdir
            lab_dir = _find_subdir(cdir, ("label", "annotation", "gt", "mask"), prefer="index")
            if lab_dir is None:
                raise PrepareError(f"{cdir}: no label folder (label*/annotation*/gt*/mask*) for {city}; "
                                   f"{MEGACITIES_HELP}")
            entries.append({"city": city, "sensor": sensor, "images": str(img_dir), "labels": str(lab_dir)})
    scenes = []
    for i, e in enumerate(entries):
        where = f"{mapping} row {i + 2}" if mapping else f"{mroot} ({e['city']})"
        sensor = e["sensor"]
        if sensor not in ("PlanetScope", "GF-1", "Sentinel-2", "GF-2"):
            raise PrepareError(f"{where}: sensor {sensor!r} is not one of PlanetScope, GF-1, Sentinel-2, GF-2")
        img_dir = Path(e["images"]) if Path(e["images"]).is_absolute() else mroot / e["images"]
        lab_dir = Path(e["labels"]) if Path(e["labels"]).is_absolute() else mroot / e["labels"]
        for d, what in ((img_dir, "image"), (lab_dir, "label")):
            if not d.is_dir():
                raise PrepareError(f"{d}: {what} folder of {e['city']} not found ({where})")
        bands, expected = _parse_band_order(e.get("band_order") or "BGRN", where)
        kind = (e.get("labels_kind") or "index").strip().lower()
        if kind not in ("index", "color"):
            raise PrepareError(f"{where}: labels_kind must be index or color, got {kind!r}")
        images = find_files(img_dir, ["*.tif", "*.tiff"])
        if not images:
            raise PrepareError(f"{img_dir}: no images matching *.tif for {e['city']} ({MEGACITIES_HELP})")
        labels = find_files(lab_dir, ["*.png", "*.tif", "*.tiff"])
        pairs = pair_by_stem(images, labels, LABEL_SUFFIXES,
                             expect=lambda im, d=lab_dir: f"{d / im.stem}.png (or {im.stem}_24label.png)")
        for img, lab in pairs:
            scenes.append(Scene(image=img, label=lab, domain=sensor, split="test", sensor=sensor,
                                table=color_table if kind == "color" else table,
                                source_file=f"megacities/{relpath(img, mroot)}", bands=bands,
                                expected_bands=expected, band_note=f"band_order {e.get('band_order') or 'BGRN'}",
                                nodata=nodata))
    return scenes


def _region_scenes(scenes: list[Scene], regions: str | Path, targets: Sequence[str]) -> list[Scene]:
    rows = read_csv_rows(regions, ("image", "region"), "image → region table")
    by_image: dict[str, str] = {}
    for r in rows:
        stem = Path(r["image"]).stem if Path(r["image"]).suffix.lower() in (".tif", ".tiff", ".png") else r["image"]
        for suf in LABEL_SUFFIXES:  # a label file name works too
            stem = stem[: -len(suf)] if stem.endswith(suf) else stem
        by_image[stem] = r["region"]
    canon = {_norm(t): t for t in targets}
    seen: dict[str, int] = {t: 0 for t in targets}
    for s in scenes:
        region = by_image.get(s.image.stem)
        if region is None:
            raise PrepareError(f"{regions}: no region for image {s.image.stem} (add a row '{s.image.stem},<region>')")
        target = canon.get(_norm(region))
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
    label_table = color_table if annotation == "color" else table
    scenes = _gf2_scenes(root, variant, annotation, label_table, nodata)
    notes = []
    if task == "cross-regional":
        if not regions:
            raise PrepareError(f"{root}: the cross-regional task needs the image → region table: give regions= "
                               "(--regions CSV with columns image,region); FBP file names do not say the region")
        targets = as_list(target_regions) or list(TARGET_REGIONS)
        scenes = _region_scenes(scenes, regions, targets)
    else:
        if megacities_root is None:
            raise PrepareError(f"{root}: the cross-sensor task needs the five-megacities target release: give "
                               "megacities_root= (--megacities-root DIR)")
        scenes += _megacity_scenes(Path(megacities_root), megacities_map, table, color_table, nodata)
        if not megacities_map:
            notes.append("five-megacities layout guessed (city folders, image*/label* subfolders, bands B,G,R,NIR); "
                         "check the summary or give megacities_map")
    options = dict(task=task, variant=variant, annotation=annotation, regions=regions,
                   target_regions=as_list(target_regions), megacities_root=megacities_root,
                   megacities_map=megacities_map, nodata=nodata, classes=classes)
    prep = Preparation(name=f"fbp-{task}", out=Path(out), table=table, tile=tile, stride=stride,
                       unknown=unknown_labels, tolerance=color_tolerance, progress=progress, options=options,
                       notes=notes,
                       extra={"band_order": {"GF-2": "B,G,R,NIR (8-bit NIR,R,G,B images reordered)"
                                             if variant == "8bit" else "B,G,R,NIR"}})
    return prep.run(scenes)


__all__ = ["prepare_fbp", "TARGET_REGIONS", "MEGACITIES", "SOURCE_REGIONS"]
