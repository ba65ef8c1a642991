"""OpenEarthMap → the prepared format (cross-continent task).

Release (J. Xia, N. Yokoya, B. Adriano, C. Broni-Bediako, "OpenEarthMap: A Benchmark Dataset for Global
High-Resolution Land Cover Mapping", WACV 2023; https://open-earth-map.org): 5000 aerial and satellite images,
0.25–0.5 m, 97 regions in 44 countries on 6 continents::

    ROOT/aachen/images/aachen_1.tif    RGB GeoTIFF (uint8)
    ROOT/aachen/labels/aachen_1.tif    single band: 0 = unknown (ignored), 1..8 classes
    ROOT/train.txt, ROOT/val.txt, ROOT/test.txt   file names (aachen_1.tif), one per line

(``OpenEarthMap_wo_xBD/`` one level deeper is found too.) The region of an image is its file name without the
trailing ``_<n>``. Classes (``rsmoe/resources/openearthmap_classes.csv``, official colours): bareland, rangeland,
developed space, road, tree, water, agriculture land, building. The release without xBD lacks the xBD regions' RGB
images: listed images that are missing on disk are skipped and counted in the summary. Images listed in
``test.txt`` without a label are skipped too (test labels were held back for the benchmark); a train/val image
without label is an error.

Domains are continents, from the region → continent table ``rsmoe/resources/openearthmap_continents.csv``
(columns ``region,country,continent,source``; every entry says where it comes from and the uncertain ones say so).
``continents`` (a CSV with at least ``region,continent``) overrides the entries of the regions it lists. The task
(seed §7.4): source = North America, South America, Africa, Asia, Oceania; target = Europe. Every image of a
``target_continents`` continent goes to split ``test`` (whatever list names it); the others keep their list's
split (train.txt → train, val.txt → val, test.txt → test). ``preparation.json`` lists the regions of each
domain.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .errors import PrepareError
from .files import archives_note, relpath, require_root
from .labels import load_table
from .preparation import Preparation
from .scenes import Scene
from .tables import as_list, read_csv_rows, resource

LISTS = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}


def continent_table(override: str | Path | None = None) -> dict[str, str]:
    """``{region: continent}`` from the shipped table, with the user's rows on top."""
    rows = read_csv_rows(resource("openearthmap_continents.csv"), ("region", "continent"), "region → continent table")
    table = {r["region"]: r["continent"] for r in rows}
    if override:
        for r in read_csv_rows(override, ("region", "continent"), "region → continent table"):
            table[r["region"]] = r["continent"]
    return table


def _region(name: str) -> str:
    stem = Path(name).stem
    head, _, tail = stem.rpartition("_")
    return head if head and tail.isdigit() else stem


def _find_base(root: Path) -> Path:
    for cand in [root, *sorted(p for p in root.iterdir() if p.is_dir()),
                 *sorted(q for p in root.iterdir() if p.is_dir() for q in p.iterdir() if q.is_dir())]:
        if any((cand / f).is_file() for f in LISTS.values()):
            return cand
    raise PrepareError(f"{root}: no OpenEarthMap split list train.txt / val.txt / test.txt found (expected "
                       "<region>/images/<region>_<n>.tif, <region>/labels/<region>_<n>.tif and the split lists)"
                       f"{archives_note(root)}")


def prepare_openearthmap(
    root: str | Path,
    out: str | Path,
    *,
    continents: str | Path | None = None,
    target_continents: Sequence[str] | str | None = ("Europe",),
    tile: int = 512,
    stride: int | None = None,
    classes: str | Path | None = None,
    nodata: float | None | str = None,
    nonfinite: str = "nodata",
    unknown_labels: str = "error",
    progress: bool = False,
) -> Path:
    """Prepare OpenEarthMap by continent (see the module doc)."""
    root = require_root(root)
    base = _find_base(root)
    table = load_table("openearthmap_classes.csv", classes)
    region_continent = continent_table(continents)
    targets = set(as_list(target_continents))
    known = set(region_continent.values())
    bad = sorted(targets - known)
    if bad:
        raise PrepareError(f"target continent(s) {', '.join(bad)} not in the region → continent table "
                           f"(known: {', '.join(sorted(known))})")
    scenes: list[Scene] = []
    missing_images, unlabelled_test = [], []
    seen: set[str] = set()
    for split, fname in LISTS.items():
        path = base / fname
        if not path.is_file():
            continue
        names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            region = _region(name)
            continent = region_continent.get(region)
            if continent is None:
                raise PrepareError(f"{path}: region {region!r} of {name} is not in the region → continent table "
                                   f"{resource('openearthmap_continents.csv').name}; add it with continents=CSV "
                                   "(columns region,continent)")
            img = base / region / "images" / name
            lab = base / region / "labels" / name
            if not img.is_file():
                missing_images.append(name)
                continue
            if not lab.is_file():
                if split == "test":
                    unlabelled_test.append(name)
                    continue
                raise PrepareError(f"{img}: image without label (expected {lab})")
            scenes.append(Scene(image=img, label=lab, domain=continent,
                                split="test" if continent in targets else split, sensor="OpenEarthMap",
                                table=table, source_file=relpath(img, root), expected_bands=3,
                                band_note="OpenEarthMap images are RGB", nodata=nodata))
    if not scenes:
        raise PrepareError(f"{base}: the split lists name no image present on disk under <region>/images/")
    for t in sorted(targets):
        if not any(s.domain == t for s in scenes):
            raise PrepareError(f"{base}: target continent {t} has no labelled image (empty domain)")
    notes = []
    if missing_images:
        notes.append(f"{len(missing_images)} listed image(s) not on disk, skipped (xBD images are not in "
                     f"OpenEarthMap_wo_xBD): {', '.join(missing_images[:5])}{' …' if len(missing_images) > 5 else ''}")
    if unlabelled_test:
        notes.append(f"{len(unlabelled_test)} test image(s) without label skipped")
    prep = Preparation(name="openearthmap", out=Path(out), table=table, tile=tile, stride=stride,
                       unknown=unknown_labels, progress=progress, nonfinite=nonfinite, notes=notes,
                       details={"regions": {s.domain: sorted({_region(x.image.name) for x in scenes
                                                              if x.domain == s.domain}) for s in scenes}},
                       options=dict(continents=continents, target_continents=sorted(targets), nodata=nodata,
                                    classes=classes))
    return prep.run(scenes)


__all__ = ["prepare_openearthmap", "continent_table"]
