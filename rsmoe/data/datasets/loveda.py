"""LoveDA (Land-cOVEr Domain Adaptive semantic segmentation) → the prepared format.

Release (J. Wang, Z. Zheng, A. Ma, X. Lu, Y. Zhong, "LoveDA: A Remote Sensing Land-Cover Dataset for Domain
Adaptive Semantic Segmentation", NeurIPS Datasets and Benchmarks, 2021; https://github.com/Junjue-Wang/LoveDA):
0.3 m Google Earth RGB images of 1024×1024 pixels from Nanjing, Changzhou and Wuhan, published (Zenodo record
5706578) as three zips — the layout torchgeo's ``datasets/loveda.py`` (and its test archives) and MMSegmentation's
``tools/dataset_converters/loveda.py`` read::

    Train.zip / Train/Rural/images_png/0.png   RGB, uint8
    Train.zip / Train/Rural/masks_png/0.png    single band: 0 = no-data (ignored), 1..7 classes
    Train.zip / Train/Urban/..., Val.zip / Val/{Rural,Urban}/..., Test.zip / Test/{Rural,Urban}/images_png only

``root`` may be the folder holding the zips (read directly, nothing is extracted), one of the zips, or the
unpacked ``Train``/``Val``/``Test`` folders (at any depth). Classes (``rsmoe/resources/loveda_classes.csv``,
official colours): background, building, road, water, barren, forest, agricultural. No georeferencing.

Domains ``Rural`` and ``Urban``. The rural → urban task (SpectralMoE supplementary §7.1; source Pukou, Lishui,
Gaochun, Jiangxia; target Yuhuatai, Jintan) uses Train/Rural as source and Val/Urban as target. With
``targets=("Urban",)`` (default) a target domain's Val images go to split ``test`` and its Train images are not
prepared (they would otherwise enter the training-split normalisation statistics); the other domains keep their
folders' splits (Train → train, Val → val). ``targets=()`` mirrors the folders for both domains. Test images are
prepared (split ``test``) only where masks exist (the public Test.zip has none).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Sequence

from .errors import PrepareError
from .files import ReleaseFile, list_release_files, pair_by_stem, require_root
from .labels import LabelTable, load_table
from .preparation import Preparation
from .scenes import Scene
from .tables import as_list

SPLIT_DIRS = {"train": "train", "val": "val", "test": "test"}
DOMAINS = ("Rural", "Urban")
KINDS = ("images_png", "masks_png")


@dataclass
class Group:
    """The files of one ``<Split>/<Domain>`` folder: its path (as shown) and images/masks by file name."""

    folder: PurePosixPath
    images: dict[str, ReleaseFile] = field(default_factory=dict)
    masks: dict[str, ReleaseFile] = field(default_factory=dict)


def loveda_groups(files: Sequence[ReleaseFile]) -> dict[tuple[str, str], Group]:
    """``{(split, domain): Group}`` from files ``…/<Train|Val|Test>/<Rural|Urban>/<images_png|masks_png>/*.png``
    (folder names in any case; the first copy of a file wins, files on disk before zip members)."""
    groups: dict[tuple[str, str], Group] = {}
    domains = {d.lower(): d for d in DOMAINS}
    for f in files:
        parts = f.rel.parts
        if len(parts) < 4:
            continue
        split, domain, kind = parts[-4].lower(), domains.get(parts[-3].lower()), parts[-2].lower()
        if split not in SPLIT_DIRS or domain is None or kind not in KINDS:
            continue
        group = groups.setdefault((split, domain), Group(f.rel.parent.parent))
        (group.images if kind == "images_png" else group.masks).setdefault(f.name, f)
    return groups


def group_scenes(group: Group, domain: str, out_split: str, table: LabelTable, nodata) -> list[Scene]:
    """The scenes of one ``<Split>/<Domain>`` folder (each image paired with the mask of the same name)."""
    images = [group.images[n] for n in sorted(group.images)]
    pairs = pair_by_stem(images, group.masks.values(),
                         expect=lambda im: f"{group.folder}/masks_png/{im.name}")
    return [Scene(image=img, label=lab, domain=domain, split=out_split, sensor="LoveDA", table=table,
                  source_file=img.rel.as_posix(), expected_bands=3, band_note="LoveDA images are RGB", nodata=nodata)
            for img, lab in pairs]


def loveda_scenes(root: Path, groups: dict[tuple[str, str], Group], targets: set[str], table: LabelTable,
                  nodata) -> tuple[list[Scene], list[str]]:
    """All scenes to prepare (target domains' Train skipped, Test without masks skipped) and the notes."""
    scenes: list[Scene] = []
    notes = []
    for (split, domain), group in sorted(groups.items(), key=lambda kv: (list(SPLIT_DIRS).index(kv[0][0]), kv[0][1])):
        if not group.images:
            continue
        if domain in targets and split == "train":
            notes.append(f"{group.folder}/images_png not prepared ({domain} is a target domain)")
            continue
        if not group.masks:
            if split == "test":
                notes.append(f"{group.folder}/images_png not prepared (no masks_png: LoveDA test masks are not "
                             "public)")
                continue
            raise PrepareError(f"{root}/{group.folder}/masks_png: mask folder not found next to images_png/")
        out_split = "test" if domain in targets else split
        scenes += group_scenes(group, domain, out_split, table, nodata)
    return scenes, notes


def prepare_loveda(
    root: str | Path,
    out: str | Path,
    *,
    targets: Sequence[str] | str | None = ("Urban",),
    tile: int = 512,
    stride: int | None = None,
    classes: str | Path | None = None,
    nodata: float | None | str = None,
    nonfinite: str = "nodata",
    unknown_labels: str = "error",
    progress: bool = False,
) -> Path:
    """Prepare LoveDA (see the module doc). ``root``: a folder (zips or unpacked folders) or a zip."""
    root = require_root(root, archives=True)
    groups = loveda_groups(list_release_files(root, (".png",)))
    if not any(split == "train" and g.images for (split, _), g in groups.items()):
        raise PrepareError(f"{root}: no LoveDA folder Train/<Rural|Urban>/images_png found (expected Train.zip, "
                           "Val.zip, Test.zip or their folders Train|Val|Test / Rural|Urban / images_png|masks_png)")
    target_set = {t.capitalize() for t in as_list(targets) if t.lower() != "none"}
    bad = sorted(target_set - set(DOMAINS))
    if bad:
        raise PrepareError(f"targets must be among {list(DOMAINS)}, got {bad}")
    table = load_table("loveda_classes.csv", classes)
    scenes, notes = loveda_scenes(root, groups, target_set, table, nodata)
    for t in sorted(target_set):
        if not any(s.domain == t for s in scenes):
            raise PrepareError(f"{root}: no images in Val/{t}/images_png with masks (empty domain {t})")
    prep = Preparation(name="loveda", out=Path(out), table=table, tile=tile, stride=stride, unknown=unknown_labels,
                       progress=progress, nonfinite=nonfinite, notes=notes,
                       options=dict(targets=sorted(target_set), nodata=nodata, classes=classes))
    return prep.run(scenes)


__all__ = ["prepare_loveda"]
