"""ISPRS Potsdam and Vaihingen (2D semantic labeling benchmarks) → the prepared format.

Releases (F. Rottensteiner et al., "The ISPRS benchmark on urban object classification and 3D building
reconstruction", ISPRS Annals I-3, 2012; https://www.isprs.org/education/benchmarks/UrbanSemLab/), as published
(the layouts torchgeo's ``datasets/potsdam.py``/``vaihingen.py`` with their test archives, and MMSegmentation's
``tools/dataset_converters/potsdam.py``/``vaihingen.py`` read):

Potsdam — 38 true ortho-photo tiles of 6000×6000 pixels at 5 cm, downloaded as ``Potsdam.zip`` holding one zip
per product::

    Potsdam.zip / Potsdam/4_Ortho_RGBIR.zip / 4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif   R, G, B, IR (uint8)
    Potsdam.zip / Potsdam/2_Ortho_RGB.zip / 2_Ortho_RGB/top_potsdam_2_10_RGB.tif         R, G, B
    Potsdam.zip / Potsdam/5_Labels_all.zip / top_potsdam_2_10_label.tif                  colour-coded, full
    Potsdam.zip / Potsdam/5_Labels_all_noBoundary.zip / top_potsdam_2_10_label_noBoundary.tif   eroded

Vaihingen — 33 areas at 9 cm, three downloads::

    ISPRS_semantic_labeling_Vaihingen.zip / top/top_mosaic_09cm_area1.tif          NIR, R, G (false colour, uint8)
    ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip / top_mosaic_09cm_area1.tif         full (zip root)
    ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip / top_mosaic_09cm_area1_noBoundary.tif

``root`` may be any of: the downloaded zips (a folder holding them, or one zip), the inner zips, or the releases
unpacked in place — unzipping the label zips beside ``top/`` puts the Vaihingen labels in the root folder, where
they are found. Archives are read directly (:mod:`rsmoe.data.datasets.files`); archives of products not used
(DSM, IRRG) are not opened. Files are recognised by name: a Potsdam image ``top_potsdam_<x>_<y>_RGBIR|RGB``, label
``top_potsdam_<x>_<y>_label[_noBoundary]``; a Vaihingen image is ``top_mosaic_09cm_area<N>`` in a folder ``top``, a
label the same name anywhere else (``_noBoundary`` = eroded). Labels without an image (the eroded Vaihingen zip
holds area 9, which has no image) are left alone.

Colours (``rsmoe/resources/isprs_classes.csv``): impervious surfaces (255,255,255), building (0,0,255), low
vegetation (0,255,255), tree (0,255,0), car (255,255,0), clutter (255,0,0); black (0,0,0) — the boundary of the
eroded labels — is ignored. Some full-label files in circulation are defective: ``top_potsdam_4_12_label.tif`` has
lossy colours (about ±30 per channel) and ``top_potsdam_6_7_label.tif`` codes cars as (252,255,0). Colours are
therefore matched within ``color_tolerance`` = 64 by default (the largest channel difference to the nearest table
colour): the ISPRS colours differ by 255 in at least one channel, so any tolerance below 128 is unambiguous.

``labels``: ``eroded`` (default; the MPerS and MMSegmentation convention) or ``full`` selects the labels in the
masks. Only that variant is read: the other one is never opened (a defective full label cannot stop an eroded
preparation). ``alternate_labels`` (e.g. ``full``) also writes that variant, for every tile, as ``masks_full/`` with
the same relative paths (``dataset.yaml``: ``preparation.alternate_masks``); a scene without it is an error.

Splits come from ``rsmoe/resources/isprs_splits.yaml`` (``split_set``: ``official`` — the benchmark's 24/14
Potsdam and 16/17 Vaihingen tiles — or ``mpers``, the MPerS paper's protocol, arXiv 2605.10769), or a user YAML
(``splits=FILE``); tiles in no list are not prepared.

Preparers:

``potsdam`` (MPerS): domain ``Potsdam``, ``bands="rgb"`` → sensor ``ISPRS-Potsdam-RGB`` (R, G, B of the RGBIR
    tiles, or the RGB tiles where RGBIR is absent) or ``"rgbir"`` → ``ISPRS-Potsdam``; default ``split_set="mpers"``.
``vaihingen`` (MPerS): domain ``Vaihingen``, sensor ``ISPRS-Vaihingen`` (NIR, R, G as stored); ``split_set="mpers"``.
``potsdam_vaihingen`` (SpectralMoE cross-spectral-band task): Potsdam R, G, B (official train tiles → ``train``,
    official test tiles → ``val``) and Vaihingen NIR, R, G as a 3-band image (official test areas → ``test``;
    ``vaihingen_areas="all"`` takes all 33). One prepared folder, 3 bands everywhere, statistics from Potsdam's
    training tiles. ``root`` may hold both releases, or give ``potsdam_root``/``vaihingen_root``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import PrepareError
from .files import ReleaseFile, list_release_files, require_root
from .labels import LabelTable, load_table
from .preparation import Preparation
from .scenes import Scene
from .tables import as_list, read_yaml_file, resource

POTSDAM_IMAGE = re.compile(r"^top_potsdam_(\d+_\d+)_(RGBIR|RGB)$", re.IGNORECASE)
POTSDAM_LABEL = re.compile(r"^top_potsdam_(\d+_\d+)_label(_noBoundary)?$", re.IGNORECASE)
VAIHINGEN = re.compile(r"^top_mosaic_09cm_area(\d+)(_noBoundary)?$", re.IGNORECASE)
UNUSED_ARCHIVES = re.compile(r"dsm|irrg", re.IGNORECASE)  # products no preparer reads: their zips stay closed
LABEL_VARIANTS = ("eroded", "full")
ISPRS_COLOR_TOLERANCE = 64  # < 128: every ISPRS colour differs from the others by 255 in some channel


@dataclass
class TileFiles:
    """One release's files by tile id: images (Potsdam: RGBIR and RGB apart) and labels per variant."""

    images: dict[str, ReleaseFile] = field(default_factory=dict)
    rgb_images: dict[str, ReleaseFile] = field(default_factory=dict)
    labels: dict[str, dict[str, ReleaseFile]] = field(default_factory=lambda: {v: {} for v in LABEL_VARIANTS})


def isprs_files(root: Path) -> list[ReleaseFile]:
    """The GeoTIFFs under ``root`` (folders and zips; DSM/IRRG archives skipped)."""
    return list_release_files(root, (".tif", ".tiff"), enter=lambda name: not UNUSED_ARCHIVES.search(name))


def potsdam_files(files: Sequence[ReleaseFile]) -> TileFiles:
    """Potsdam images (RGBIR in ``images``, RGB in ``rgb_images``) and labels by tile id ``<x>_<y>``."""
    out = TileFiles()
    for f in files:
        m = POTSDAM_IMAGE.match(f.stem)
        if m:
            (out.images if m.group(2).upper() == "RGBIR" else out.rgb_images).setdefault(m.group(1), f)
            continue
        m = POTSDAM_LABEL.match(f.stem)
        if m:
            out.labels["eroded" if m.group(2) else "full"].setdefault(m.group(1), f)
    return out


def vaihingen_files(files: Sequence[ReleaseFile]) -> TileFiles:
    """Vaihingen images (in a folder ``top``) and labels (anywhere else; ``_noBoundary`` = eroded) by area."""
    out = TileFiles()
    for f in files:
        m = VAIHINGEN.match(f.stem)
        if not m:
            continue
        area = m.group(1)
        if m.group(2) or any("eroded" in p.lower() for p in f.parent.parts):
            out.labels["eroded"].setdefault(area, f)
        elif f.parent.name.lower() == "top":
            out.images.setdefault(area, f)
        else:
            out.labels["full"].setdefault(area, f)
    return out


def load_splits(release: str, split_set: str, splits: str | Path | None) -> dict[str, list[str]]:
    """``{split: [tile ids]}`` of ``release`` (potsdam | vaihingen) from the shipped table or a user YAML."""
    path = Path(splits) if splits else resource("isprs_splits.yaml")
    data = read_yaml_file(path, "ISPRS split lists")
    if not isinstance(data, dict):
        raise PrepareError(f"{path}: expected a mapping of split lists")
    node: Any = data.get(release, data)
    if isinstance(node, dict) and split_set in node and isinstance(node[split_set], dict):
        node = node[split_set]
    if not isinstance(node, dict) or not any(k in node for k in ("train", "val", "test")):
        raise PrepareError(f"{path}: no split lists for {release}/{split_set} (expected {release}: {split_set}: "
                           "{train: [...], test: [...]})")
    out = {}
    for split, ids in node.items():
        if split not in ("train", "val", "test"):
            raise PrepareError(f"{path}: split {split!r} is not train, val or test")
        vals = []
        for v in ids or []:
            if release == "potsdam" and isinstance(v, int):
                raise PrepareError(f"{path}: Potsdam tile id {v} was read as a number; quote ids like \"2_10\"")
            vals.append(str(v))
        out[split] = vals
    return out


def split_of(ids: dict[str, list[str]]) -> dict[str, str]:
    """``{tile id: split}`` from ``{split: [tile ids]}``."""
    return {i: split for split, lst in ids.items() for i in lst}


def label_variants(labels: str, alternate_labels: Sequence[str] | str | None) -> tuple[str, list[str]]:
    """The variant written to ``masks/`` and the alternates asked for (never the main one)."""
    if labels not in LABEL_VARIANTS:
        raise PrepareError(f"labels must be 'eroded' or 'full', got {labels!r}")
    alternates = [a for a in as_list(alternate_labels) if a != labels]
    bad = [a for a in alternates if a not in LABEL_VARIANTS]
    if bad:
        raise PrepareError(f"alternate_labels must name 'eroded' or 'full', got {bad}")
    return labels, alternates


def pick_labels(tid: str, found: TileFiles, labels: str, alternates: Sequence[str], image: ReleaseFile
                ) -> tuple[ReleaseFile, dict[str, ReleaseFile]]:
    """The label file of ``labels`` for one tile and the alternates asked for; a missing one is an error."""
    main = found.labels[labels].get(tid)
    if main is None:
        other = "full" if labels == "eroded" else "eroded"
        hint = f" (the {other} labels exist: pass labels={other})" if tid in found.labels[other] else ""
        raise PrepareError(f"{image}: image without {labels} label{hint}")
    alt = {}
    for variant in alternates:
        if tid not in found.labels[variant]:
            raise PrepareError(f"{image}: image without {variant} label (alternate_labels={variant} writes it for "
                               "every tile; drop the option or add the labels)")
        alt[variant] = found.labels[variant][tid]
    return main, alt


@dataclass
class IsprsRequest:
    """What one ISPRS release contributes to a preparation: labels, alternates, split ids, split renaming."""

    table: LabelTable
    split_of: dict[str, str]
    labels: str = "eroded"
    alternates: Sequence[str] = ()
    split_map: dict[str, str] = field(default_factory=dict)


def potsdam_scenes(root: Path, files: Sequence[ReleaseFile], req: IsprsRequest, bands: str,
                   domain: str = "Potsdam") -> tuple[list[Scene], list[str]]:
    """The Potsdam scenes in the split lists, and the ids of the tiles in none."""
    if bands not in ("rgb", "rgbir"):
        raise PrepareError(f"bands must be 'rgb' or 'rgbir', got {bands!r}")
    found = potsdam_files(files)
    images = dict(found.images) if (found.images or bands == "rgbir") else dict(found.rgb_images)
    if not images:
        want = "4_Ortho_RGBIR/top_potsdam_<x>_<y>_RGBIR.tif" + ("" if bands == "rgbir" else
                                                                 " (or 2_Ortho_RGB/top_potsdam_<x>_<y>_RGB.tif)")
        raise PrepareError(f"{root}: no Potsdam image matching {want} (in folders or zips)")
    scenes, skipped = [], []
    for tid in sorted(images, key=lambda t: tuple(int(x) for x in t.split("_"))):
        split = req.split_of.get(tid)
        if split is None:
            skipped.append(tid)
            continue
        img = images[tid]
        lab, alt = pick_labels(tid, found, req.labels, req.alternates, img)
        is_rgbir = tid in found.images and img is found.images[tid]
        scenes.append(Scene(
            image=img, label=lab, domain=domain, split=req.split_map.get(split, split),
            sensor="ISPRS-Potsdam" if bands == "rgbir" else "ISPRS-Potsdam-RGB", table=req.table,
            source_file=img.rel.as_posix(), bands=(0, 1, 2, 3) if bands == "rgbir" else (0, 1, 2),
            expected_bands=4 if is_rgbir else 3,
            band_note="top_potsdam_*_RGBIR.tif is R,G,B,IR" if is_rgbir else "top_potsdam_*_RGB.tif is R,G,B",
            nodata=None, alt_labels=alt))
    return scenes, skipped


def vaihingen_scenes(root: Path, files: Sequence[ReleaseFile], req: IsprsRequest, domain: str = "Vaihingen"
                     ) -> tuple[list[Scene], list[str]]:
    """The Vaihingen scenes in the split lists, and the areas in none."""
    found = vaihingen_files(files)
    if not found.images:
        raise PrepareError(f"{root}: no Vaihingen image matching top/top_mosaic_09cm_area<N>.tif (in folders or "
                           "zips such as ISPRS_semantic_labeling_Vaihingen.zip)")
    scenes, skipped = [], []
    for area in sorted(found.images, key=int):
        split = req.split_of.get(area)
        if split is None:
            skipped.append(area)
            continue
        img = found.images[area]
        lab, alt = pick_labels(area, found, req.labels, req.alternates, img)
        scenes.append(Scene(image=img, label=lab, domain=domain, split=req.split_map.get(split, split),
                            sensor="ISPRS-Vaihingen", table=req.table, source_file=img.rel.as_posix(),
                            expected_bands=3, band_note="Vaihingen top_mosaic tiles are NIR,R,G", nodata=None,
                            alt_labels=alt))
    return scenes, skipped


def skipped_note(release: str, skipped: list[str]) -> list[str]:
    return [f"{release}: {len(skipped)} tile(s) in no split list not prepared ({', '.join(skipped[:8])}"
            f"{' …' if len(skipped) > 8 else ''})"] if skipped else []


def require_scenes(scenes: list[Scene], root: Path, release: str, split_set: str) -> None:
    if not scenes:
        raise PrepareError(f"{root}: none of the {release} tiles is in the {split_set} split lists (empty domain)")


def prepare_potsdam(
    root: str | Path,
    out: str | Path,
    *,
    bands: str = "rgb",
    labels: str = "eroded",
    alternate_labels: Sequence[str] | str | None = None,
    split_set: str = "mpers",
    splits: str | Path | None = None,
    tile: int = 512,
    stride: int | None = None,
    classes: str | Path | None = None,
    nonfinite: str = "nodata",
    unknown_labels: str = "error",
    color_tolerance: int = ISPRS_COLOR_TOLERANCE,
    progress: bool = False,
) -> Path:
    """Prepare ISPRS Potsdam (MPerS; see the module doc). ``root``: a folder or a zip."""
    root = require_root(root, archives=True)
    labels, alternates = label_variants(labels, alternate_labels)
    table = load_table("isprs_classes.csv", classes)
    req = IsprsRequest(table, split_of(load_splits("potsdam", split_set, splits)), labels, alternates)
    scenes, skipped = potsdam_scenes(root, isprs_files(root), req, bands)
    require_scenes(scenes, root, "Potsdam", split_set)
    prep = Preparation(name="isprs-potsdam", out=Path(out), table=table, tile=tile, stride=stride,
                       unknown=unknown_labels, tolerance=color_tolerance, progress=progress, nonfinite=nonfinite,
                       notes=skipped_note("Potsdam", skipped), extra={"labels": labels},
                       options=dict(bands=bands, labels=labels, alternate_labels=alternates, split_set=split_set,
                                    splits=splits, classes=classes, color_tolerance=color_tolerance))
    return prep.run(scenes)


def prepare_vaihingen(
    root: str | Path,
    out: str | Path,
    *,
    labels: str = "eroded",
    alternate_labels: Sequence[str] | str | None = None,
    split_set: str = "mpers",
    splits: str | Path | None = None,
    tile: int = 512,
    stride: int | None = None,
    classes: str | Path | None = None,
    nonfinite: str = "nodata",
    unknown_labels: str = "error",
    color_tolerance: int = ISPRS_COLOR_TOLERANCE,
    progress: bool = False,
) -> Path:
    """Prepare ISPRS Vaihingen (MPerS; see the module doc). ``root``: a folder or a zip."""
    root = require_root(root, archives=True)
    labels, alternates = label_variants(labels, alternate_labels)
    table = load_table("isprs_classes.csv", classes)
    req = IsprsRequest(table, split_of(load_splits("vaihingen", split_set, splits)), labels, alternates)
    scenes, skipped = vaihingen_scenes(root, isprs_files(root), req)
    require_scenes(scenes, root, "Vaihingen", split_set)
    prep = Preparation(name="isprs-vaihingen", out=Path(out), table=table, tile=tile, stride=stride,
                       unknown=unknown_labels, tolerance=color_tolerance, progress=progress, nonfinite=nonfinite,
                       notes=skipped_note("Vaihingen", skipped), extra={"labels": labels},
                       options=dict(labels=labels, alternate_labels=alternates, split_set=split_set, splits=splits,
                                    classes=classes, color_tolerance=color_tolerance))
    return prep.run(scenes)


def prepare_potsdam_vaihingen(
    root: str | Path,
    out: str | Path,
    *,
    potsdam_root: str | Path | None = None,
    vaihingen_root: str | Path | None = None,
    labels: str = "eroded",
    vaihingen_areas: str = "test",
    splits: str | Path | None = None,
    tile: int = 512,
    stride: int | None = None,
    classes: str | Path | None = None,
    nonfinite: str = "nodata",
    unknown_labels: str = "error",
    color_tolerance: int = ISPRS_COLOR_TOLERANCE,
    progress: bool = False,
) -> Path:
    """Prepare the Potsdam (RGB) → Vaihingen (NIR-R-G) task in one folder (see the module doc)."""
    root = require_root(root, archives=True)
    proot = require_root(potsdam_root, archives=True) if potsdam_root else root
    vroot = require_root(vaihingen_root, archives=True) if vaihingen_root else root
    if vaihingen_areas not in ("test", "all"):
        raise PrepareError(f"vaihingen_areas must be 'test' or 'all', got {vaihingen_areas!r}")
    labels, _ = label_variants(labels, None)
    table = load_table("isprs_classes.csv", classes)
    listed = {r: isprs_files(r) for r in dict.fromkeys([proot, vroot])}
    p_req = IsprsRequest(table, split_of(load_splits("potsdam", "official", splits)), labels,
                         split_map={"test": "val"})
    p_scenes, p_skipped = potsdam_scenes(proot, listed[proot], p_req, "rgb")
    v_ids = load_splits("vaihingen", "official", splits)
    chosen = [a for lst in v_ids.values() for a in lst] if vaihingen_areas == "all" else v_ids.get("test", [])
    v_req = IsprsRequest(table, {a: "test" for a in chosen}, labels)
    v_scenes, v_skipped = vaihingen_scenes(vroot, listed[vroot], v_req)
    require_scenes(p_scenes, proot, "Potsdam", "official")
    require_scenes(v_scenes, vroot, "Vaihingen", "official test")
    notes = skipped_note("Potsdam", p_skipped) + skipped_note("Vaihingen", v_skipped) + [
        "Vaihingen is stored as its NIR,R,G bands and read by the RGB-trained model as a 3-band image (the shift)"]
    prep = Preparation(name="isprs-potsdam-vaihingen", out=Path(out), table=table, tile=tile, stride=stride,
                       unknown=unknown_labels, tolerance=color_tolerance, progress=progress, nonfinite=nonfinite,
                       notes=notes, extra={"labels": labels},
                       options=dict(potsdam_root=potsdam_root, vaihingen_root=vaihingen_root, labels=labels,
                                    vaihingen_areas=vaihingen_areas, splits=splits, classes=classes,
                                    color_tolerance=color_tolerance))
    return prep.run(p_scenes + v_scenes)


__all__ = ["ISPRS_COLOR_TOLERANCE", "load_splits", "potsdam_files", "prepare_potsdam", "prepare_potsdam_vaihingen",
           "prepare_vaihingen", "vaihingen_files"]
