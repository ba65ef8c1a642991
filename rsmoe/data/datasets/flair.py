"""FLAIR #1 (IGN aerial ortho-images) → the prepared format.

Release (A. Garioud et al., "FLAIR: French Land cover from Aerospace ImageRy" / "FLAIR #1: semantic segmentation
and domain adaptation dataset", arXiv:2211.12979, 2022; https://ignf.github.io/FLAIR/): 0.2 m patches of 512×512
pixels with 5 channels (R, G, B, NIR, elevation; uint8), Lambert-93 GeoTIFFs, over 50 spatial domains named
``D<département>_<year>``. Official layout after unzipping::

    ROOT/flair_aerial_train/D004_2021/Z1_NN/img/IMG_000001.tif
    ROOT/flair_labels_train/D004_2021/Z1_NN/msk/MSK_000001.tif
    ROOT/flair_1_aerial_test/D012_2019/Z10_UU/img/IMG_062700.tif
    ROOT/flair_1_labels_test/D012_2019/Z10_UU/msk/MSK_062700.tif

(``<domain>/<zone>/img`` and ``<domain>/<zone>/msk`` side by side under one folder works too: images are found as
``**/img/IMG_<id>.tif`` and masks as ``**/msk/MSK_<id>.tif`` anywhere under ROOT, paired by id.)

Labels 1–19 (building, pervious surface, impervious surface, bare soil, water, coniferous, deciduous, brushwood,
vineyard, herbaceous vegetation, agricultural land, plowed land, swimming pool, snow, clear cut, mixed, ligneous,
greenhouse, other). The SpectralMoE task keeps the first 12; values above 12 (and 0) are ignored — the table
``rsmoe/resources/flair_classes.csv`` (colours: the FLAIR toolkit's LUT as recalled, unverified). The prepared
tiles keep R, G, B, NIR (sensor ``FLAIR``) and drop the elevation channel.

Domains are the ``D…_…`` folders. Split: the official FLAIR #1 domain split
(``rsmoe/resources/flair_domains.yaml``: 40 train domains, 10 test domains) — a test domain's tiles go to
``test``, the others to ``train``; a domain in neither list takes its split from its top folder's name (``…test…``
→ test). ``val_domains`` moves whole training domains to ``val``; ``domains`` prepares a subset.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from .errors import PrepareError
from .files import archives_note, find_files, relpath, require_root
from .labels import load_table
from .preparation import Preparation
from .scenes import Scene
from .tables import as_list, read_yaml_file, resource

DOMAIN_RE = re.compile(r"^D\d{3}_\d{4}$")
ID_RE = re.compile(r"^(?:IMG|MSK)_(\d+)$", re.IGNORECASE)


def official_domains() -> dict[str, list[str]]:
    data = read_yaml_file(resource("flair_domains.yaml"), "FLAIR domain list")
    return {"train": [str(d) for d in data["train"]], "test": [str(d) for d in data["test"]]}


def prepare_flair(
    root: str | Path,
    out: str | Path,
    *,
    domains: Sequence[str] | str | None = None,
    val_domains: Sequence[str] | str | None = None,
    test_domains: Sequence[str] | str | None = None,
    tile: int = 512,
    stride: int | None = None,
    classes: str | Path | None = None,
    nodata: float | None | str = None,
    nonfinite: str = "nodata",
    unknown_labels: str = "error",
    progress: bool = False,
) -> Path:
    """Prepare FLAIR #1 (see the module doc)."""
    root = require_root(root)
    images = [p for p in find_files(root, ["IMG_*.tif", "IMG_*.tiff"], recursive=True) if p.parent.name == "img"]
    if not images:
        raise PrepareError(f"{root}: no FLAIR images matching <domain>/<zone>/img/IMG_<id>.tif (e.g. "
                           f"flair_aerial_train/D004_2021/Z1_NN/img/IMG_000001.tif){archives_note(root)}")
    masks: dict[str, Path] = {}
    for m in find_files(root, ["MSK_*.tif", "MSK_*.tiff"], recursive=True):
        if m.parent.name == "msk" and ID_RE.match(m.stem):
            masks.setdefault(ID_RE.match(m.stem).group(1), m)
    table = load_table("flair_classes.csv", classes)
    official = official_domains()
    test_set = set(as_list(test_domains) or official["test"])
    train_set = set(official["train"])
    only = set(as_list(domains))
    val_set = set(as_list(val_domains))
    scenes = []
    unlisted: set[str] = set()
    for img in images:
        rel = img.relative_to(root).parts
        domain = next((p for p in rel if DOMAIN_RE.match(p)), None)
        if domain is None:
            raise PrepareError(f"{img}: no D<département>_<year> folder in its path (expected "
                               "<domain>/<zone>/img/IMG_<id>.tif)")
        if only and domain not in only:
            continue
        m = ID_RE.match(img.stem)
        mask = masks.get(m.group(1)) if m else None
        if mask is None:
            raise PrepareError(f"{img}: image without mask (expected MSK_{m.group(1) if m else '<id>'}.tif in a "
                               f"msk/ folder, e.g. flair_labels_*/{domain}/<zone>/msk/)")
        if domain in test_set:
            split = "test"
        elif domain in train_set:
            split = "train"
        else:
            unlisted.add(domain)
            split = "test" if "test" in rel[0].lower() else "train"
        if domain in val_set and split == "train":
            split = "val"
        scenes.append(Scene(image=img, label=mask, domain=domain, split=split, sensor="FLAIR", table=table,
                            source_file=relpath(img, root), bands=(0, 1, 2, 3), expected_bands=5,
                            band_note="FLAIR patches are R,G,B,NIR,elevation", nodata=nodata))
    if only:
        missing = sorted(only - {s.domain for s in scenes})
        if missing:
            raise PrepareError(f"{root}: domain(s) {', '.join(missing)} not found (empty domain)")
    notes = []
    if unlisted:
        notes.append(f"domain(s) not in the official FLAIR #1 lists, split taken from the folder name: "
                     f"{', '.join(sorted(unlisted))}")
    prep = Preparation(name="flair", out=Path(out), table=table, tile=tile, stride=stride, unknown=unknown_labels,
                       progress=progress, nonfinite=nonfinite, notes=notes,
                       options=dict(domains=sorted(only), val_domains=sorted(val_set),
                                    test_domains=sorted(as_list(test_domains)), nodata=nodata, classes=classes))
    return prep.run(scenes)


__all__ = ["prepare_flair", "official_domains"]
