"""WHU-OHS (hyperspectral, Orbita OHS) → the prepared format.

Release (J. Li, X. Huang, L. Tu, "WHU-OHS: A benchmark dataset for large-scale hyperspectral image
classification", Int. J. Appl. Earth Obs. Geoinf. 113, 103022, 2022;
http://irsip.whu.edu.cn/resources/WHU_OHS_show.php):
42 OHS images from about 40 locations in China, 10 m, 32 bands 466–940 nm, cropped into 512×512 tiles::

    ROOT/tr/image/O1_0001.tif    32-band GeoTIFF, reflectance × 10000 (int16)
    ROOT/tr/label/O1_0001.tif    single band, 0 = unlabelled, 1..24 classes
    ROOT/val/image/..., ROOT/val/label/...
    ROOT/ts/image/..., ROOT/ts/label/...

A tile's name starts with its source image (``O1`` … ``O42``). The 24 classes (paddy field, dry farm, woodland,
shrubbery, sparse woodland, other forest land, high/medium/low-covered grassland, river/canal, lake,
reservoir/pond, beach land, shoal, urban built-up, rural settlement, other construction land, sand, gobi,
saline-alkali soil, marshland, bare land, bare rock, ocean) are merged by the SpectralMoE task into 7 — Farmland
(1–2), Forest (3–6), Grassland (7–9), Waterbody (10–14), Built-up land (15–17), Unused land (18–23), Ocean (24) —
through the table ``rsmoe/resources/whu_ohs_merge.csv`` (``merge=False`` keeps the 24 classes). Images are stored as
read (int16 reflectance × 10000; ``dataset.yaml`` records ``reflectance_scale: 0.0001``): the per-band mean/std
normalisation makes the public recipe's ÷10000 a no-op.

Domains:

- default: ``Source`` = the ``tr`` (split ``train``) and ``val`` (split ``val``) tiles, ``Target`` = the ``ts``
  tiles (split ``test``), i.e. the official split. Public tools list tiles of the same source image (``O1_…``) in
  ``tr``, ``val`` and ``ts``, so the official split may not be a split by location; the summary notes how many
  source images the two domains share.
- ``regions`` (a CSV ``image,region``; ``image`` = a source-image id such as ``O1`` or a tile stem) with
  ``target_regions`` (names of that CSV): tiles of the target regions, whatever their folder, become one domain
  per region in split ``test``; all others form ``Source`` with the folder's split (``tr`` → train, ``val`` → val,
  ``ts`` → test).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .common import (
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

FOLDERS = {"tr": "train", "val": "val", "ts": "test"}


def _scene_id(stem: str) -> str:
    return stem.split("_")[0]


def prepare_whu_ohs(
    root: str | Path,
    out: str | Path,
    *,
    merge: bool = True,
    regions: str | Path | None = None,
    target_regions: Sequence[str] | str | None = None,
    tile: int = 512,
    stride: int | None = None,
    classes: str | Path | None = None,
    nodata: float | None | str = "file",
    unknown_labels: str = "error",
    progress: bool = False,
) -> Path:
    """Prepare WHU-OHS (see the module doc)."""
    root = require_root(root)
    bases = [b for b in locate_dirs(root, "tr/image", max_depth=2)] or \
        [b for b in locate_dirs(root, "ts/image", max_depth=2)]
    if not bases:
        raise PrepareError(f"{root}: no WHU-OHS split folders found (expected tr/image/, val/image/, ts/image/ with "
                           "O<k>_<nnnn>.tif and matching label/ folders)")
    base = bases[0]
    table = load_table("whu_ohs_merge.csv", classes)
    if not merge:
        table = table.fine()
    scenes: list[Scene] = []
    for folder, split in FOLDERS.items():
        img_dir, lab_dir = base / folder / "image", base / folder / "label"
        if not img_dir.is_dir():
            continue
        images = find_files(img_dir, ["*.tif", "*.tiff"])
        if not images:
            raise PrepareError(f"{img_dir}: no images matching O<k>_<nnnn>.tif")
        pairs = pair_by_stem(images, find_files(lab_dir, ["*.tif", "*.tiff"]),
                             expect=lambda im, d=lab_dir: str(d / im.name))
        for img, lab in pairs:
            scenes.append(Scene(image=img, label=lab, domain="Source" if folder != "ts" else "Target", split=split,
                                sensor="OHS", table=table, source_file=relpath(img, root), expected_bands=32,
                                band_note="WHU-OHS images have 32 OHS bands", nodata=nodata))
    if not any(s.split == "train" for s in scenes):
        raise PrepareError(f"{base}: tr/image/ not found or empty (the training tiles)")
    notes = []
    if regions:
        targets = as_list(target_regions)
        if not targets:
            raise PrepareError(f"{regions}: give target_regions (--target-regions A,B) naming regions of this table")
        rows = read_csv_rows(regions, ("image", "region"), "image → region table")
        region_of = {(Path(r["image"]).stem if r["image"].lower().endswith((".tif", ".tiff")) else r["image"]):
                     r["region"] for r in rows}
        unknown_t = [t for t in targets if t not in set(region_of.values())]
        if unknown_t:
            raise PrepareError(f"{regions}: target region(s) {', '.join(unknown_t)} not in the table (empty domain)")
        for s in scenes:
            region = region_of.get(s.image.stem, region_of.get(_scene_id(s.image.stem)))
            if region is None:
                raise PrepareError(f"{regions}: no region for {s.image.stem} (add a row '{_scene_id(s.image.stem)},"
                                   "<region>')")
            if region in targets:
                s.domain, s.split = region, "test"
            else:
                s.domain = "Source"
        for t in targets:
            if not any(s.domain == t for s in scenes):
                raise PrepareError(f"{regions}: target region {t} has no tile (empty domain)")
    else:
        src_ids = {_scene_id(s.image.stem) for s in scenes if s.domain == "Source"}
        tgt_ids = {_scene_id(s.image.stem) for s in scenes if s.domain == "Target"}
        shared = sorted(src_ids & tgt_ids)
        if shared:
            notes.append(f"the official tr/ts split shares {len(shared)} source image(s) ({', '.join(shared[:6])}"
                         f"{' …' if len(shared) > 6 else ''}) between Source and Target: it is not a split by "
                         "location; give regions= and target_regions= for a cross-regional task")
        if not tgt_ids:
            raise PrepareError(f"{base}: ts/image/ not found or empty (the target tiles)")
    prep = Preparation(name="whu-ohs", out=Path(out), table=table, tile=tile, stride=stride, unknown=unknown_labels,
                       progress=progress, notes=notes, extra={"reflectance_scale": 1.0e-4},
                       options=dict(merge=merge, regions=regions, target_regions=as_list(target_regions),
                                    nodata=nodata, classes=classes))
    return prep.run(scenes)


__all__ = ["prepare_whu_ohs"]
