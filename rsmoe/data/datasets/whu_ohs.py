"""WHU-OHS (hyperspectral, Orbita OHS) → the prepared format.

Release (J. Li, X. Huang, L. Tu, "WHU-OHS: A benchmark dataset for large-scale hyperspectral image
classification", Int. J. Appl. Earth Obs. Geoinf. 113, 103022, 2022; http://irsip.whu.edu.cn/resources/
WHU_OHS_show.php; code and layout: https://github.com/zjjerica/WHU-OHS-Pytorch, ``Dataset_format.png`` and
``dataset.py``): 42 OHS images from about 40 locations in China, 10 m, 32 bands 466–940 nm, cut into 512×512
sub-images (4822 / 513 / 2460 in the training / validation / test folders)::

    ROOT/tr/image/S1_0007.tif    32-band GeoTIFF, reflectance × 10000 (int16)
    ROOT/tr/label/S1_0007.tif    single band, 0 = unlabelled, 1..24 classes
    ROOT/val/image/..., ROOT/val/label/..., ROOT/ts/image/..., ROOT/ts/label/...

A sub-image is named ``<role><k>_<nnnn>``: the n-th sub-image of the k-th **S**ource, **T**arget or **O**ther
image. The release defines eight source/target pairs "for the transferability test" (S1 Changchun → T1 Jilin, S2
Wuxi → T2 Shanghai, S3 Guangzhou → T3 Zhongshan, S4 Xining → T4 Lanzhou, S5 Hetian → T5 Kelamayi, S6 Anyi → T6
Nanchang, S7 Changde → T7 Changsha, S8 Tianjin → T8 Tangshan) and 26 other images (O1–O26); the table
``rsmoe/resources/whu_ohs_images.csv`` lists them with their locations. Every image has sub-images in ``tr``,
``val`` **and** ``ts``: the folders are not a split by location (the authors' own scripts train on ``tr/S1_*`` and
test on ``ts/S1_*``, the same image).

The 24 classes (paddy field, dry farm, woodland, shrubbery, sparse woodland, other forest land,
high/medium/low-covered grassland, river/canal, lake, reservoir/pond, beach land, shoal, urban built-up, rural
settlement, other construction land, sand, gobi, saline-alkali soil, marshland, bare land, bare rock, ocean) are
merged by the SpectralMoE task into 7 — Farmland (1–2), Forest (3–6), Grassland (7–9), Waterbody (10–14), Built-up
land (15–17), Unused land (18–23), Ocean (24) — through the table ``rsmoe/resources/whu_ohs_merge.csv``
(``merge=False`` keeps the 24 classes). Images are stored as read (int16 reflectance × 10000; ``dataset.yaml``
records ``reflectance_scale: 0.0001``): the per-band mean/std normalisation makes the public recipe's ÷10000 a no-op.

Domains (``protocol``):

- ``"transfer"`` (default; the cross-regional task): regions are source images. Domain ``Source`` = the
  sub-images of the release's source images S1–S8 (``tr`` → train, ``val`` → val, ``ts`` → test); domain
  ``Target`` = the sub-images of its target images T1–T8, split ``test``, from the folders ``target_folders``
  (default all three: the model never sees a target image, so every sub-image of one is test data). The other
  images O1–O26 are not prepared (``others="source"`` adds them to ``Source``). The SpectralMoE supplementary
  (§7.1) names only "40 locations across China"; its public configs train on a ``source_dir`` and evaluate on a
  ``target_dir`` without listing their files; the release's own source/target images are the published
  definition of source and target regions, so rsmoe follows them.
- ``"official"``: ``Source`` = ``tr`` (train) and ``val`` (val), ``Target`` = ``ts`` (test), every image in both —
  the release's folder split, which is **not** cross-regional (the summary notes how many images they share).
- ``regions`` (a CSV ``image,region``; ``image`` = an image id such as ``S1`` or a sub-image stem) with
  ``target_regions`` (names of that CSV): any other region definition; the sub-images of the target regions,
  whatever their folder, become one domain per region in split ``test``; all others form ``Source`` with the
  folder's split.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from .errors import PrepareError
from .files import archives_note, find_files, locate_dirs, pair_by_stem, relpath, require_root
from .labels import LabelTable, load_table
from .preparation import Preparation
from .scenes import Scene
from .tables import as_list, read_csv_rows, resource

FOLDERS = {"tr": "train", "val": "val", "ts": "test"}
NAME = re.compile(r"^([STO])(\d+)_(\d+)$", re.IGNORECASE)
ROLES = {"S": "source", "T": "target", "O": "other"}
PROTOCOLS = ("transfer", "official")


def image_id(stem: str) -> str:
    """The source-image id of a sub-image stem: ``S1_0007`` → ``S1``."""
    return stem.split("_")[0].upper()


def image_locations() -> dict[str, str]:
    """``{image id: location}`` from ``rsmoe/resources/whu_ohs_images.csv`` (empty where not known)."""
    rows = read_csv_rows(resource("whu_ohs_images.csv"), ("image", "location", "role"), "WHU-OHS image table")
    return {r["image"]: r["location"] for r in rows}


def folder_scenes(root: Path, table: LabelTable, nodata) -> list[Scene]:
    """Every sub-image of ``tr``/``val``/``ts`` with its label, domain ``Source`` and the folder's split."""
    bases = locate_dirs(root, "tr/image", max_depth=2) or locate_dirs(root, "ts/image", max_depth=2)
    if not bases:
        raise PrepareError(f"{root}: no WHU-OHS split folders found (expected tr/image/, val/image/, ts/image/ with "
                           f"S<k>_<nnnn>.tif and matching label/ folders){archives_note(root)}")
    base = bases[0]
    scenes: list[Scene] = []
    for folder, split in FOLDERS.items():
        img_dir, lab_dir = base / folder / "image", base / folder / "label"
        if not img_dir.is_dir():
            continue
        images = find_files(img_dir, ["*.tif", "*.tiff"])
        if not images:
            raise PrepareError(f"{img_dir}: no images matching S<k>_<nnnn>.tif")
        bad = next((p for p in images if not NAME.match(p.stem)), None)
        if bad is not None:
            raise PrepareError(f"{bad}: not a WHU-OHS sub-image name (expected S<k>_<nnnn>, T<k>_<nnnn> or "
                               "O<k>_<nnnn>: the n-th sub-image of the k-th source, target or other image)")
        pairs = pair_by_stem(images, find_files(lab_dir, ["*.tif", "*.tiff"]),
                             expect=lambda im, d=lab_dir: str(d / im.name))
        scenes += [Scene(image=img, label=lab, domain="Source", split=split, sensor="OHS", table=table,
                         source_file=relpath(img, root), expected_bands=32,
                         band_note="WHU-OHS images have 32 OHS bands", nodata=nodata) for img, lab in pairs]
    if not any(s.split == "train" for s in scenes):
        raise PrepareError(f"{base}: tr/image/ not found or empty (the training sub-images)")
    return scenes


def folder_of(scene: Scene) -> str:
    return {v: k for k, v in FOLDERS.items()}[scene.split]


def transfer_domains(scenes: list[Scene], target_folders: Sequence[str], others: str) -> tuple[list[Scene], list[str]]:
    """Source = the S images (plus O with ``others="source"``), Target = the T images' sub-images in
    ``target_folders`` (split test); returns the kept scenes and notes."""
    kept = []
    for s in scenes:
        role = ROLES[image_id(s.image.stem)[0]]
        if role == "target":
            if folder_of(s) in target_folders:
                s.domain, s.split = "Target", "test"
                kept.append(s)
        elif role == "source" or others == "source":
            kept.append(s)
    locations = image_locations()
    notes = []
    for domain in ("Source", "Target"):
        ids = sorted({image_id(s.image.stem) for s in kept if s.domain == domain}, key=lambda i: (i[0], int(i[1:])))
        if not ids:
            raise PrepareError(f"no WHU-OHS sub-image of a {domain.lower()} image (names starting with "
                               f"{'S' if domain == 'Source' else 'T'}<k>_) found: empty domain {domain}")
        named = [f"{i} ({locations[i]})" if locations.get(i) else i for i in ids]
        notes.append(f"{domain}: images {', '.join(named)}")
    return kept, notes


def region_domains(scenes: list[Scene], regions: str | Path, target_regions: Sequence[str]) -> None:
    """Domains from a user region table: target regions → one test domain each, others → Source."""
    targets = as_list(target_regions)
    if not targets:
        raise PrepareError(f"{regions}: give target_regions (--target-regions A,B) naming regions of this table")
    rows = read_csv_rows(regions, ("image", "region"), "image → region table")
    region_of = {(Path(r["image"]).stem if r["image"].lower().endswith((".tif", ".tiff")) else r["image"]):
                 r["region"] for r in rows}
    unknown = [t for t in targets if t not in set(region_of.values())]
    if unknown:
        raise PrepareError(f"{regions}: target region(s) {', '.join(unknown)} not in the table (empty domain)")
    for s in scenes:
        region = region_of.get(s.image.stem, region_of.get(image_id(s.image.stem)))
        if region is None:
            raise PrepareError(f"{regions}: no region for {s.image.stem} (add a row '{image_id(s.image.stem)},"
                               "<region>')")
        if region in targets:
            s.domain, s.split = region, "test"
    for t in targets:
        if not any(s.domain == t for s in scenes):
            raise PrepareError(f"{regions}: target region {t} has no sub-image (empty domain)")


def official_domains(scenes: list[Scene]) -> list[str]:
    """``ts`` → Target; a note on the images Source and Target share."""
    for s in scenes:
        if s.split == "test":
            s.domain = "Target"
    src = {image_id(s.image.stem) for s in scenes if s.domain == "Source"}
    tgt = {image_id(s.image.stem) for s in scenes if s.domain == "Target"}
    if not tgt:
        raise PrepareError("WHU-OHS: ts/image/ not found or empty (the target sub-images of protocol official)")
    shared = sorted(src & tgt)
    if not shared:
        return []
    return [f"protocol official: the tr/ts folders share {len(shared)} source image(s) ({', '.join(shared[:6])}"
            f"{' …' if len(shared) > 6 else ''}) between Source and Target: not a split by location"]


def prepare_whu_ohs(
    root: str | Path,
    out: str | Path,
    *,
    protocol: str = "transfer",
    target_folders: Sequence[str] | str = ("tr", "val", "ts"),
    others: str = "exclude",
    merge: bool = True,
    regions: str | Path | None = None,
    target_regions: Sequence[str] | str | None = None,
    tile: int = 512,
    stride: int | None = None,
    classes: str | Path | None = None,
    nodata: float | None | str = "file",
    nonfinite: str = "nodata",
    unknown_labels: str = "error",
    progress: bool = False,
) -> Path:
    """Prepare WHU-OHS (see the module doc)."""
    root = require_root(root)
    if protocol not in PROTOCOLS:
        raise PrepareError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    folders = [f.lower() for f in as_list(target_folders)]
    if not folders or set(folders) - set(FOLDERS):
        raise PrepareError(f"target_folders must name some of tr, val, ts, got {target_folders!r}")
    if others not in ("exclude", "source"):
        raise PrepareError(f"others must be 'exclude' or 'source', got {others!r}")
    table = load_table("whu_ohs_merge.csv", classes)
    table = table if merge else table.fine()
    scenes = folder_scenes(root, table, nodata)
    if regions:
        region_domains(scenes, regions, target_regions)
        notes = [f"domains from the region table {regions}"]
    elif protocol == "official":
        notes = official_domains(scenes)
    else:
        scenes, notes = transfer_domains(scenes, folders, others)
    prep = Preparation(name="whu-ohs", out=Path(out), table=table, tile=tile, stride=stride, unknown=unknown_labels,
                       nonfinite=nonfinite, progress=progress, notes=notes, extra={"reflectance_scale": 1.0e-4},
                       options=dict(protocol="regions" if regions else protocol, target_folders=folders,
                                    others=others, merge=merge, regions=regions,
                                    target_regions=as_list(target_regions), nodata=nodata, classes=classes))
    return prep.run(scenes)


__all__ = ["prepare_whu_ohs", "image_locations"]
