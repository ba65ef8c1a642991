"""ISPRS Potsdam and Vaihingen (2D semantic labeling benchmarks) → the prepared format.

Releases (F. Rottensteiner et al., "The ISPRS benchmark on urban object classification and 3D building
reconstruction", ISPRS Annals I-3, 2012; https://www.isprs.org/education/benchmarks/UrbanSemLab/):

Potsdam — 38 true ortho-photo tiles of 6000×6000 pixels at 5 cm::

    ROOT/4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif              4 bands R, G, B, IR (uint8), georeferenced
    ROOT/2_Ortho_RGB/top_potsdam_2_10_RGB.tif                  3 bands R, G, B (used when RGBIR is absent)
    ROOT/5_Labels_all/top_potsdam_2_10_label.tif               colour-coded (full)
    ROOT/5_Labels_all_noBoundary/top_potsdam_2_10_label_noBoundary.tif   colour-coded, eroded

Vaihingen — 33 areas at 9 cm::

    ROOT/top/top_mosaic_09cm_area1.tif                          3 bands NIR, R, G (false colour, uint8)
    ROOT/gts_for_participants/top_mosaic_09cm_area1.tif         colour-coded (full; or …ground_truth_COMPLETE/)
    ROOT/ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE/top_mosaic_09cm_area1_noBoundary.tif

Files are found by these name patterns anywhere up to four levels below ROOT (folder names vary between release
versions); a Vaihingen label folder is any folder other than ``top`` whose name holds ``gts`` or ``ground_truth``.
Colours (``rsmoe/resources/isprs_classes.csv``): impervious surfaces (255,255,255), building (0,0,255), low
vegetation (0,255,255), tree (0,255,0), car (255,255,0), clutter (255,0,0); black (0,0,0) — the boundary of the
eroded labels — is ignored. ``color_tolerance`` accepts near-matching colours.

``labels``: ``eroded`` (default; the MPerS and MMSegmentation convention) or ``full`` selects the labels in the
masks; when the other variant exists too it is written alongside as ``masks_full/`` (or ``masks_eroded/``) with the
same relative paths (``dataset.yaml``: ``preparation.alternate_masks``).

Splits come from ``rsmoe/resources/isprs_splits.yaml`` (``split_set``: ``official`` — the benchmark's 24/14
Potsdam and 16/17 Vaihingen tiles — or ``mpers``, SPEC-mpers §8), or a user YAML (``splits=FILE``); tiles in no
list are not prepared.

Preparers:

``potsdam`` (MPerS): domain ``Potsdam``, ``bands="rgb"`` → sensor ``ISPRS-Potsdam-RGB`` (R, G, B of the RGBIR
    tiles) or ``"rgbir"`` → ``ISPRS-Potsdam``; default ``split_set="mpers"``.
``vaihingen`` (MPerS): domain ``Vaihingen``, sensor ``ISPRS-Vaihingen`` (NIR, R, G as stored); ``split_set="mpers"``.
``potsdam_vaihingen`` (SpectralMoE cross-spectral-band task): Potsdam R, G, B (official train tiles → ``train``,
    official test tiles → ``val``) and Vaihingen NIR, R, G as a 3-band image (official test areas → ``test``;
    ``vaihingen_areas="all"`` takes all 33). One prepared folder, 3 bands everywhere, statistics from Potsdam's
    training tiles. ``root`` may hold both releases, or give ``potsdam_root``/``vaihingen_root``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .common import (
    LabelTable,
    Preparation,
    PrepareError,
    Scene,
    load_table,
    read_yaml_file,
    relpath,
    require_root,
    resource,
)

POTSDAM_IMAGE = re.compile(r"^top_potsdam_(\d+_\d+)_(RGBIR|RGB)$", re.IGNORECASE)
POTSDAM_LABEL = re.compile(r"^top_potsdam_(\d+_\d+)_label(_noBoundary)?$", re.IGNORECASE)
VAIHINGEN = re.compile(r"^top_mosaic_09cm_area(\d+)(_noBoundary)?$", re.IGNORECASE)
LABEL_VARIANTS = ("eroded", "full")


def _walk(root: Path, max_depth: int = 4):
    frontier = [root]
    for _ in range(max_depth + 1):
        nxt = []
        for d in frontier:
            try:
                entries = sorted(d.iterdir())
            except OSError:
                continue
            for p in entries:
                if p.name.startswith("."):
                    continue
                if p.is_dir():
                    nxt.append(p)
                elif p.suffix.lower() in (".tif", ".tiff"):
                    yield p
        frontier = nxt


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


def _split_of(ids: dict[str, list[str]]) -> dict[str, str]:
    out = {}
    for split, lst in ids.items():
        for i in lst:
            out[i] = split
    return out


def _pick_labels(tid: str, full: dict[str, Path], eroded: dict[str, Path], labels: str, image: Path):
    if labels not in LABEL_VARIANTS:
        raise PrepareError(f"labels must be 'eroded' or 'full', got {labels!r}")
    main = (eroded if labels == "eroded" else full).get(tid)
    if main is None:
        other = "full" if labels == "eroded" else "eroded"
        exists = (full if labels == "eroded" else eroded).get(tid)
        hint = f" (the {other} labels exist: pass labels={other})" if exists else ""
        raise PrepareError(f"{image}: image without {labels} label{hint}")
    alt_name = "full" if labels == "eroded" else "eroded"
    alt = (full if labels == "eroded" else eroded).get(tid)
    return main, ({alt_name: alt} if alt is not None else {})


def potsdam_scenes(root: Path, table: LabelTable, split_of: dict[str, str], bands: str, labels: str,
                   domain: str = "Potsdam", split_map: dict[str, str] | None = None) -> tuple[list[Scene], list[str]]:
    rgbir: dict[str, Path] = {}
    rgb: dict[str, Path] = {}
    full: dict[str, Path] = {}
    eroded: dict[str, Path] = {}
    for p in _walk(root):
        m = POTSDAM_IMAGE.match(p.stem)
        if m:
            (rgbir if m.group(2).upper() == "RGBIR" else rgb).setdefault(m.group(1), p)
            continue
        m = POTSDAM_LABEL.match(p.stem)
        if m:
            (eroded if m.group(2) else full).setdefault(m.group(1), p)
    if bands not in ("rgb", "rgbir"):
        raise PrepareError(f"bands must be 'rgb' or 'rgbir', got {bands!r}")
    images = dict(rgbir) if (rgbir or bands == "rgbir") else dict(rgb)
    if not images:
        want = "4_Ortho_RGBIR/top_potsdam_<x>_<y>_RGBIR.tif" + ("" if bands == "rgbir" else
                                                                 " (or 2_Ortho_RGB/top_potsdam_<x>_<y>_RGB.tif)")
        raise PrepareError(f"{root}: no Potsdam image matching {want}")
    scenes, skipped = [], []
    for tid in sorted(images, key=lambda t: tuple(int(x) for x in t.split("_"))):
        split = split_of.get(tid)
        if split is None:
            skipped.append(tid)
            continue
        img = images[tid]
        lab, alt = _pick_labels(tid, full, eroded, labels, img)
        is_rgbir = img in rgbir.values()
        scenes.append(Scene(
            image=img, label=lab, domain=domain, split=(split_map or {}).get(split, split),
            sensor="ISPRS-Potsdam" if bands == "rgbir" else "ISPRS-Potsdam-RGB", table=table,
            source_file=relpath(img, root), bands=(0, 1, 2, 3) if bands == "rgbir" else (0, 1, 2),
            expected_bands=4 if is_rgbir else 3,
            band_note="top_potsdam_*_RGBIR.tif is R,G,B,IR" if is_rgbir else "top_potsdam_*_RGB.tif is R,G,B",
            nodata=None, alt_labels=alt))
    return scenes, skipped


def vaihingen_scenes(root: Path, table: LabelTable, split_of: dict[str, str], labels: str,
                     domain: str = "Vaihingen", split_map: dict[str, str] | None = None
                     ) -> tuple[list[Scene], list[str]]:
    images: dict[str, Path] = {}
    full: dict[str, Path] = {}
    eroded: dict[str, Path] = {}
    for p in _walk(root):
        m = VAIHINGEN.match(p.stem)
        if not m:
            continue
        area, folder = m.group(1), p.parent.name.lower()
        if m.group(2) or "eroded" in folder:
            eroded.setdefault(area, p)
        elif folder == "top":
            images.setdefault(area, p)
        elif "gts" in folder or "ground_truth" in folder:
            full.setdefault(area, p)
    if not images:
        raise PrepareError(f"{root}: no Vaihingen image matching top/top_mosaic_09cm_area<N>.tif")
    scenes, skipped = [], []
    for area in sorted(images, key=int):
        split = split_of.get(area)
        if split is None:
            skipped.append(area)
            continue
        img = images[area]
        lab, alt = _pick_labels(area, full, eroded, labels, img)
        scenes.append(Scene(image=img, label=lab, domain=domain, split=(split_map or {}).get(split, split),
                            sensor="ISPRS-Vaihingen", table=table, source_file=relpath(img, root),
                            expected_bands=3, band_note="Vaihingen top_mosaic tiles are NIR,R,G", nodata=None,
                            alt_labels=alt))
    return scenes, skipped


def _notes(release: str, skipped: list[str]) -> list[str]:
    return [f"{release}: {len(skipped)} tile(s) in no split list not prepared ({', '.join(skipped[:8])}"
            f"{' …' if len(skipped) > 8 else ''})"] if skipped else []


def _empty_check(scenes: list[Scene], root: Path, release: str, split_set: str) -> None:
    if not scenes:
        raise PrepareError(f"{root}: none of the {release} tiles is in the {split_set} split lists (empty domain)")


def prepare_potsdam(
    root: str | Path,
    out: str | Path,
    *,
    bands: str = "rgb",
    labels: str = "eroded",
    split_set: str = "mpers",
    splits: str | Path | None = None,
    tile: int = 512,
    stride: int | None = None,
    classes: str | Path | None = None,
    unknown_labels: str = "error",
    color_tolerance: int = 0,
    progress: bool = False,
) -> Path:
    """Prepare ISPRS Potsdam (MPerS; see the module doc)."""
    root = require_root(root)
    table = load_table("isprs_classes.csv", classes)
    scenes, skipped = potsdam_scenes(root, table, _split_of(load_splits("potsdam", split_set, splits)), bands,
                                     labels)
    _empty_check(scenes, root, "Potsdam", split_set)
    prep = Preparation(name="isprs-potsdam", out=Path(out), table=table, tile=tile, stride=stride,
                       unknown=unknown_labels, tolerance=color_tolerance, progress=progress,
                       notes=_notes("Potsdam", skipped), extra={"labels": labels},
                       options=dict(bands=bands, labels=labels, split_set=split_set, splits=splits, classes=classes))
    return prep.run(scenes)


def prepare_vaihingen(
    root: str | Path,
    out: str | Path,
    *,
    labels: str = "eroded",
    split_set: str = "mpers",
    splits: str | Path | None = None,
    tile: int = 512,
    stride: int | None = None,
    classes: str | Path | None = None,
    unknown_labels: str = "error",
    color_tolerance: int = 0,
    progress: bool = False,
) -> Path:
    """Prepare ISPRS Vaihingen (MPerS; see the module doc)."""
    root = require_root(root)
    table = load_table("isprs_classes.csv", classes)
    scenes, skipped = vaihingen_scenes(root, table, _split_of(load_splits("vaihingen", split_set, splits)), labels)
    _empty_check(scenes, root, "Vaihingen", split_set)
    prep = Preparation(name="isprs-vaihingen", out=Path(out), table=table, tile=tile, stride=stride,
                       unknown=unknown_labels, tolerance=color_tolerance, progress=progress,
                       notes=_notes("Vaihingen", skipped), extra={"labels": labels},
                       options=dict(labels=labels, split_set=split_set, splits=splits, classes=classes))
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
    unknown_labels: str = "error",
    color_tolerance: int = 0,
    progress: bool = False,
) -> Path:
    """Prepare the Potsdam (RGB) → Vaihingen (NIR-R-G) task in one folder (see the module doc)."""
    root = require_root(root)
    proot = require_root(potsdam_root) if potsdam_root else root
    vroot = require_root(vaihingen_root) if vaihingen_root else root
    if vaihingen_areas not in ("test", "all"):
        raise PrepareError(f"vaihingen_areas must be 'test' or 'all', got {vaihingen_areas!r}")
    table = load_table("isprs_classes.csv", classes)
    p_split = _split_of(load_splits("potsdam", "official", splits))
    p_scenes, p_skipped = potsdam_scenes(proot, table, p_split, "rgb", labels,
                                         split_map={"train": "train", "val": "val", "test": "val"})
    v_ids = load_splits("vaihingen", "official", splits)
    if vaihingen_areas == "all":
        v_split = {a: "test" for lst in v_ids.values() for a in lst}
    else:
        v_split = {a: "test" for a in v_ids.get("test", [])}
    v_scenes, v_skipped = vaihingen_scenes(vroot, table, v_split, labels)
    _empty_check(p_scenes, proot, "Potsdam", "official")
    _empty_check(v_scenes, vroot, "Vaihingen", "official test")
    notes = _notes("Potsdam", p_skipped) + _notes("Vaihingen", v_skipped) + [
        "Vaihingen is stored as its NIR,R,G bands and read by the RGB-trained model as a 3-band image (the shift)"]
    prep = Preparation(name="isprs-potsdam-vaihingen", out=Path(out), table=table, tile=tile, stride=stride,
                       unknown=unknown_labels, tolerance=color_tolerance, progress=progress, notes=notes,
                       extra={"labels": labels},
                       options=dict(potsdam_root=potsdam_root, vaihingen_root=vaihingen_root, labels=labels,
                                    vaihingen_areas=vaihingen_areas, splits=splits, classes=classes))
    return prep.run(p_scenes + v_scenes)


__all__ = ["prepare_potsdam", "prepare_vaihingen", "prepare_potsdam_vaihingen", "load_splits"]
