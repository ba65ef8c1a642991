"""SynDrone (CARLA-rendered UAV imagery) → the prepared format (an MPerS dataset).

Release (G. Rizzoli, F. Barbato, M. Caligiuri, P. Zanuttigh, "SynDrone — Multi-modal UAV Dataset for Urban
Scenarios", ICCV Workshops 2023; https://github.com/LTTM/Syndrone): towns 01–07 and 10HD, flight heights 20, 50 and
80 m, 1920×1080 frames::

    ROOT/Town01_Opt_120/ClearNoon/height20m/rgb/00000.jpg        RGB (JPEG)
    ROOT/Town01_Opt_120/ClearNoon/height20m/semantic/00000.png   single band, CARLA/SELMA semantic tags
    ROOT/Town01_Opt_120/ClearNoon/height20m/{depth,camera}/...   (not used)
    ROOT/splits/train.txt, test.txt[, val.txt]                   frame numbers, one per line (splits.zip)

(the per-town zips unpack as ``Town01_Opt_120_color/Town01_Opt_120/…``, which is found too: towns are searched up
to three levels below ROOT). Labels: the 28 fine classes of the release's loader (raw tags 1, 2, 3, 5–9, 11–22,
40, 41, 100–105: building, fence, other, pole, road line, road, sidewalk, vegetation, wall, traffic sign, sky,
ground, bridge, rail track, guard rail, traffic light, static, dynamic, water, terrain, person, rider, car, truck,
bus, train, motorcycle, bicycle); every other tag (0 = unlabeled) is ignored. ``labels="coarse"`` maps them to the 7
coarse classes road, nature, person, vehicle, construction, obstacle, water. Both mappings are the table
``rsmoe/resources/syndrone_classes.csv``: the fine ids come from the release's public loader; the **coarse grouping
is rsmoe's** (a Cityscapes-style grouping — the release's own coarse mapping was not available), so pass your own
table with ``classes=`` where it differs. A semantic PNG with 3 or more bands is read from its red band (CARLA's raw
convention). No georeferencing.

Split: the release's split lists (frame numbers, applied to every town and height) where found under ROOT;
otherwise by town — ``test_towns`` (default Town10HD) → test, ``val_towns`` → val, the rest → train. Domain:
``SynDrone`` (``domain_by="height"`` or ``"town"`` gives one domain per flight height or town instead).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from .common import (
    Preparation,
    PrepareError,
    Scene,
    as_list,
    find_files,
    load_table,
    relpath,
    require_root,
)

TOWN_RE = re.compile(r"^Town(\d+(?:HD)?)_Opt_\d+$", re.IGNORECASE)
HEIGHT_RE = re.compile(r"^height(\d+)m$", re.IGNORECASE)


def _towns(root: Path, max_depth: int = 3) -> list[Path]:
    found, frontier = [], [root]
    for _ in range(max_depth + 1):
        nxt = []
        for d in frontier:
            try:
                subs = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
            for p in subs:
                (found if TOWN_RE.match(p.name) else nxt).append(p)
        frontier = nxt
    return found


def _split_lists(root: Path) -> dict[str, set[int]] | None:
    for d in [root / "splits", root, *sorted(root.glob("*/splits"))]:
        if (d / "train.txt").is_file() and (d / "test.txt").is_file():
            out = {}
            for split in ("train", "val", "test"):
                p = d / f"{split}.txt"
                if p.is_file():
                    vals = set()
                    for i, ln in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
                        ln = ln.strip()
                        if not ln:
                            continue
                        if not ln.split(".")[0].isdigit():
                            raise PrepareError(f"{p} line {i}: {ln!r} is not a frame number")
                        vals.add(int(ln.split(".")[0]))
                    out[split] = vals
            return out
    return None


def prepare_syndrone(
    root: str | Path,
    out: str | Path,
    *,
    labels: str = "fine",
    scenarios: Sequence[str] | str | None = ("ClearNoon",),
    heights: Sequence[str] | str | None = None,
    test_towns: Sequence[str] | str | None = ("Town10HD",),
    val_towns: Sequence[str] | str | None = None,
    domain_by: str = "none",
    tile: int = 512,
    stride: int | None = None,
    classes: str | Path | None = None,
    nodata: float | None | str = None,
    unknown_labels: str = "ignore",
    progress: bool = False,
) -> Path:
    """Prepare SynDrone (see the module doc). Raw tags outside the table are ignored by default (CARLA renders
    tags the 28-class loader drops)."""
    root = require_root(root)
    if labels not in ("fine", "coarse"):
        raise PrepareError(f"labels must be 'fine' or 'coarse', got {labels!r}")
    if domain_by not in ("none", "height", "town"):
        raise PrepareError(f"domain_by must be none, height or town, got {domain_by!r}")
    table = load_table("syndrone_classes.csv", classes)
    if labels == "fine" and not classes:
        table = table.fine()
    towns = _towns(root)
    if not towns:
        raise PrepareError(f"{root}: no SynDrone town folder Town<NN>_Opt_<len>/<scenario>/height<H>m/rgb/ found")
    lists = _split_lists(root)
    scen = set(as_list(scenarios))
    hts = {h if h.lower().startswith("height") else f"height{h.rstrip('m')}m" for h in as_list(heights)}
    test_t = {t.lower() for t in as_list(test_towns)}
    val_t = {t.lower() for t in as_list(val_towns)}
    scenes = []
    for town_dir in towns:
        town = "Town" + TOWN_RE.match(town_dir.name).group(1)
        for scen_dir in sorted(p for p in town_dir.iterdir() if p.is_dir()):
            if scen and scen_dir.name not in scen:
                continue
            for h_dir in sorted(p for p in scen_dir.iterdir() if p.is_dir() and HEIGHT_RE.match(p.name)):
                if hts and h_dir.name not in hts:
                    continue
                rgb_dir, sem_dir = h_dir / "rgb", h_dir / "semantic"
                images = find_files(rgb_dir, ["*.jpg", "*.jpeg", "*.png"])
                if not images:
                    raise PrepareError(f"{rgb_dir}: no frames matching <nnnnn>.jpg")
                sems = {p.stem: p for p in find_files(sem_dir, ["*.png"])}
                for img in images:
                    lab = sems.get(img.stem)
                    if lab is None:
                        raise PrepareError(f"{img}: image without label (expected {sem_dir / (img.stem + '.png')})")
                    if lists is not None:
                        frame = int(img.stem) if img.stem.isdigit() else -1
                        split = next((s for s in ("test", "val", "train") if frame in lists.get(s, ())), None)
                        if split is None:
                            continue
                    else:
                        split = "test" if town.lower() in test_t else "val" if town.lower() in val_t else "train"
                    domain = {"none": "SynDrone", "height": h_dir.name, "town": town}[domain_by]
                    scenes.append(Scene(image=img, label=lab, domain=domain, split=split, sensor="SynDrone",
                                        table=table, source_file=relpath(img, root), expected_bands=3,
                                        band_note="SynDrone frames are RGB", nodata=nodata, label_band="auto"))
    if not scenes:
        raise PrepareError(f"{root}: no SynDrone frame selected (scenarios {sorted(scen)}, heights {sorted(hts)})")
    notes = ["split from the release's split lists" if lists is not None else
             f"no split lists found under {root}/splits: split by town (test {sorted(test_t)}, val {sorted(val_t)})"]
    if labels == "coarse" and not classes:
        notes.append("coarse classes: rsmoe's grouping of the 28 fine classes (see syndrone_classes.csv)")
    prep = Preparation(name=f"syndrone-{labels}", out=Path(out), table=table, tile=tile, stride=stride,
                       unknown=unknown_labels, progress=progress, notes=notes,
                       options=dict(labels=labels, scenarios=sorted(scen), heights=sorted(hts),
                                    test_towns=sorted(test_t), val_towns=sorted(val_t), domain_by=domain_by,
                                    nodata=nodata, classes=classes))
    return prep.run(scenes)


__all__ = ["prepare_syndrone"]
