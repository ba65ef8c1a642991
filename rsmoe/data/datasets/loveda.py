"""LoveDA (Land-cOVEr Domain Adaptive semantic segmentation) → the prepared format.

Release (J. Wang, Z. Zheng, A. Ma, X. Lu, Y. Zhong, "LoveDA: A Remote Sensing Land-Cover Dataset for Domain
Adaptive Semantic Segmentation", NeurIPS Datasets and Benchmarks, 2021; https://github.com/Junjue-Wang/LoveDA):
0.3 m Google Earth RGB images of 1024×1024 pixels from Nanjing, Changzhou and Wuhan::

    ROOT/Train/Rural/images_png/0.png   RGB, uint8
    ROOT/Train/Rural/masks_png/0.png    single band: 0 = no-data (ignored), 1..7 classes
    ROOT/Train/Urban/..., ROOT/Val/{Rural,Urban}/..., ROOT/Test/{Rural,Urban}/images_png (no public masks)

(the ``Train``/``Val``/``Test`` folders may sit one or two levels deeper, as the zips unpack). Classes
(``rsmoe/resources/loveda_classes.csv``, official colours): background, building, road, water, barren, forest,
agricultural. No georeferencing.

Domains ``Rural`` and ``Urban``. The rural → urban task (seed §7; source Pukou, Lishui, Gaochun, Jiangxia; target
Yuhuatai, Jintan) uses Train/Rural as source and Val/Urban as target. With ``targets=("Urban",)`` (default) a
target domain's Val images go to split ``test`` and its Train images are not prepared (they would otherwise enter
the training-split normalisation statistics); the other domains keep their folders' splits (Train → train,
Val → val). ``targets=()`` mirrors the folders for both domains. Test images are prepared (split ``test``) only
where a ``masks_png`` folder exists.
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
    pair_by_stem,
    relpath,
    require_root,
)

SPLIT_DIRS = {"train": "train", "val": "val", "test": "test"}
DOMAINS = ("Rural", "Urban")


def _split_dirs(root: Path, max_depth: int = 3) -> dict[str, Path]:
    """{split: folder} for folders named Train/Val/Test (any case) holding Rural|Urban/images_png."""
    found: dict[str, Path] = {}
    frontier = [root]
    for _ in range(max_depth + 1):
        nxt = []
        for d in frontier:
            key = d.name.lower()
            if key in SPLIT_DIRS and key not in found and any((d / dom / "images_png").is_dir() for dom in DOMAINS):
                found[key] = d
                continue
            try:
                nxt.extend(sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")))
            except OSError:
                pass
        frontier = nxt
    return found


def prepare_loveda(
    root: str | Path,
    out: str | Path,
    *,
    targets: Sequence[str] | str | None = ("Urban",),
    tile: int = 512,
    stride: int | None = None,
    classes: str | Path | None = None,
    nodata: float | None | str = None,
    unknown_labels: str = "error",
    progress: bool = False,
) -> Path:
    """Prepare LoveDA (see the module doc)."""
    root = require_root(root)
    dirs = _split_dirs(root)
    if "train" not in dirs:
        raise PrepareError(f"{root}: no LoveDA folder Train/<Rural|Urban>/images_png found (expected "
                           "Train|Val|Test / Rural|Urban / images_png|masks_png)")
    target_set = {t.capitalize() for t in as_list(targets) if t.lower() != "none"}
    bad = sorted(target_set - set(DOMAINS))
    if bad:
        raise PrepareError(f"targets must be among {list(DOMAINS)}, got {bad}")
    table = load_table("loveda_classes.csv", classes)
    scenes: list[Scene] = []
    notes = []
    for split, d in dirs.items():
        for domain in DOMAINS:
            img_dir, mask_dir = d / domain / "images_png", d / domain / "masks_png"
            if not img_dir.is_dir():
                continue
            if domain in target_set and split == "train":
                notes.append(f"{relpath(img_dir, root)} not prepared ({domain} is a target domain)")
                continue
            if not mask_dir.is_dir():
                if split == "test":
                    notes.append(f"{relpath(img_dir, root)} not prepared (no masks_png: LoveDA test masks are not "
                                 "public)")
                    continue
                raise PrepareError(f"{mask_dir}: mask folder not found next to {img_dir.name}/")
            images = find_files(img_dir, ["*.png"])
            if not images:
                raise PrepareError(f"{img_dir}: no images matching *.png (empty domain {domain})")
            pairs = pair_by_stem(images, find_files(mask_dir, ["*.png"]),
                                 expect=lambda im, md=mask_dir: str(md / im.name))
            out_split = "test" if domain in target_set else split
            for img, lab in pairs:
                scenes.append(Scene(image=img, label=lab, domain=domain, split=out_split, sensor="LoveDA",
                                    table=table, source_file=relpath(img, root), expected_bands=3,
                                    band_note="LoveDA images are RGB", nodata=nodata))
    for t in sorted(target_set):
        if not any(s.domain == t for s in scenes):
            raise PrepareError(f"{root}: target domain {t} has no Val/{t}/images_png with masks (empty domain)")
    prep = Preparation(name="loveda", out=Path(out), table=table, tile=tile, stride=stride, unknown=unknown_labels,
                       progress=progress, notes=notes,
                       options=dict(targets=sorted(target_set), nodata=nodata, classes=classes))
    return prep.run(scenes)


__all__ = ["prepare_loveda"]
