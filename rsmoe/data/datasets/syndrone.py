"""SynDrone (CARLA-rendered UAV imagery) → the prepared format (an MPerS dataset).

Release (G. Rizzoli, F. Barbato, M. Caligiuri, P. Zanuttigh, "SynDrone — Multi-modal UAV Dataset for Urban
Scenarios", ICCV Workshops 2023; https://github.com/LTTM/Syndrone, whose README lists the downloads and whose
branch ``synth2real`` holds the loader ``utils/data.py`` this module follows): towns 01–07 and 10HD, flight heights
20, 50 and 80 m, 1920×1080 frames::

    ROOT/Town01_Opt_120/ClearNoon/height20m/rgb/00000.jpg        RGB (JPEG)
    ROOT/Town01_Opt_120/ClearNoon/height20m/semantic/00000.png   single band, CARLA/SELMA semantic tags
    ROOT/Town01_Opt_120/ClearNoon/height20m/{depth,camera}/...   (not used)
    ROOT/splits/train.txt, test.txt[, val.txt]                   frame numbers, one per line (splits.zip)

(towns are searched up to three levels below ROOT, so the unpacked per-town ``Town01_Opt_120_color.zip`` is found
wherever it lands; the zips themselves must be extracted). Labels: the 28 fine classes of the release's loader (raw
tags 1, 2, 3, 5–9, 11–22, 40, 41, 100–105: building, fence, other, pole, road line, road, sidewalk, vegetation, wall,
traffic sign, sky, ground, bridge, rail track, guard rail, traffic light, static, dynamic, water, terrain, person,
rider, car, truck, bus, train, motorcycle, bicycle; table ``rsmoe/resources/syndrone_classes.csv`` with the
loader's colours); every other tag (0 = unlabeled) is ignored. ``labels="coarse"`` uses the release's own
``coarse_mapping`` (table ``rsmoe/resources/syndrone_coarse_classes.csv``): road (road line, road, sidewalk,
ground, rail track), nature (vegetation, terrain), person (person, rider), vehicle (car, truck, bus, train,
motorcycle, bicycle), construction (building, fence, wall, bridge), obstacle (other, pole, traffic sign, guard
rail, traffic light, static, dynamic), water (water); **sky is ignored**. A semantic PNG with 3 or more bands is read
from its red band (CARLA's raw convention). No georeferencing.

Split: the release's split lists (frame numbers, applied to every town and height, as the loader does) where found
under ROOT; otherwise by town — ``test_towns`` (default Town10HD) → test, ``val_towns`` → val, the rest → train.
Domain: ``SynDrone`` (``domain_by="height"`` or ``"town"`` gives one domain per flight height or town instead).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import PrepareError
from .files import archives_note, find_files, relpath, require_root
from .labels import LabelTable, load_table
from .preparation import Preparation
from .scenes import Scene
from .tables import as_list

TOWN_RE = re.compile(r"^Town(\d+(?:HD)?)_Opt_\d+$", re.IGNORECASE)
HEIGHT_RE = re.compile(r"^height(\d+)m$", re.IGNORECASE)
TABLES = {"fine": "syndrone_classes.csv", "coarse": "syndrone_coarse_classes.csv"}


def find_towns(root: Path, max_depth: int = 3) -> list[Path]:
    """Folders ``Town<NN>_Opt_<len>`` up to ``max_depth`` levels below ``root``."""
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


def read_frame_list(path: Path) -> set[int]:
    """Frame numbers of one split list (``12`` or ``00012`` per line)."""
    vals = set()
    for i, ln in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        ln = ln.strip()
        if not ln:
            continue
        if not ln.split(".")[0].isdigit():
            raise PrepareError(f"{path} line {i}: {ln!r} is not a frame number")
        vals.add(int(ln.split(".")[0]))
    return vals


def split_lists(root: Path) -> dict[str, set[int]] | None:
    """``{split: frame numbers}`` from the first folder holding ``train.txt`` and ``test.txt``, or None."""
    for d in [root / "splits", root, *sorted(root.glob("*/splits"))]:
        if (d / "train.txt").is_file() and (d / "test.txt").is_file():
            return {split: read_frame_list(d / f"{split}.txt") for split in ("train", "val", "test")
                    if (d / f"{split}.txt").is_file()}
    return None


@dataclass
class FrameSelection:
    """Which frames to take and where they go."""

    table: LabelTable
    lists: dict[str, set[int]] | None
    test_towns: set[str]
    val_towns: set[str]
    domain_by: str
    nodata: float | None | str

    def split(self, town: str, frame: str) -> str | None:
        if self.lists is None:
            return "test" if town.lower() in self.test_towns else "val" if town.lower() in self.val_towns else "train"
        number = int(frame) if frame.isdigit() else -1
        return next((s for s in ("test", "val", "train") if number in self.lists.get(s, ())), None)


def height_scenes(root: Path, h_dir: Path, town: str, sel: FrameSelection) -> list[Scene]:
    """The frames of one ``<town>/<scenario>/height<H>m`` folder in a split."""
    rgb_dir, sem_dir = h_dir / "rgb", h_dir / "semantic"
    images = find_files(rgb_dir, ["*.jpg", "*.jpeg", "*.png"])
    if not images:
        raise PrepareError(f"{rgb_dir}: no frames matching <nnnnn>.jpg")
    sems = {p.stem: p for p in find_files(sem_dir, ["*.png"])}
    scenes = []
    for img in images:
        lab = sems.get(img.stem)
        if lab is None:
            raise PrepareError(f"{img}: image without label (expected {sem_dir / (img.stem + '.png')})")
        split = sel.split(town, img.stem)
        if split is None:
            continue
        domain = {"none": "SynDrone", "height": h_dir.name, "town": town}[sel.domain_by]
        scenes.append(Scene(image=img, label=lab, domain=domain, split=split, sensor="SynDrone", table=sel.table,
                            source_file=relpath(img, root), expected_bands=3, band_note="SynDrone frames are RGB",
                            nodata=sel.nodata, label_band="auto"))
    return scenes


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
    nonfinite: str = "nodata",
    unknown_labels: str = "ignore",
    progress: bool = False,
) -> Path:
    """Prepare SynDrone (see the module doc). Raw tags outside the table are ignored by default (CARLA renders
    tags the 28-class loader drops)."""
    root = require_root(root)
    if labels not in TABLES:
        raise PrepareError(f"labels must be 'fine' or 'coarse', got {labels!r}")
    if domain_by not in ("none", "height", "town"):
        raise PrepareError(f"domain_by must be none, height or town, got {domain_by!r}")
    towns = find_towns(root)
    if not towns:
        raise PrepareError(f"{root}: no SynDrone town folder Town<NN>_Opt_<len>/<scenario>/height<H>m/rgb/ found"
                           f"{archives_note(root)}")
    lists = split_lists(root)
    sel = FrameSelection(load_table(TABLES[labels], classes), lists, {t.lower() for t in as_list(test_towns)},
                         {t.lower() for t in as_list(val_towns)}, domain_by, nodata)
    scen = set(as_list(scenarios))
    hts = {h if h.lower().startswith("height") else f"height{h.rstrip('m')}m" for h in as_list(heights)}
    scenes = []
    for town_dir in towns:
        town = "Town" + TOWN_RE.match(town_dir.name).group(1)
        for scen_dir in sorted(p for p in town_dir.iterdir() if p.is_dir() and (not scen or p.name in scen)):
            for h_dir in sorted(p for p in scen_dir.iterdir() if p.is_dir() and HEIGHT_RE.match(p.name)):
                if not hts or h_dir.name in hts:
                    scenes += height_scenes(root, h_dir, town, sel)
    if not scenes:
        raise PrepareError(f"{root}: no SynDrone frame selected (scenarios {sorted(scen)}, heights {sorted(hts)})")
    notes = ["split from the release's split lists" if lists is not None else
             f"no split lists found under {root}/splits: split by town (test {sorted(sel.test_towns)}, val "
             f"{sorted(sel.val_towns)})"]
    prep = Preparation(name=f"syndrone-{labels}", out=Path(out), table=sel.table, tile=tile, stride=stride,
                       unknown=unknown_labels, progress=progress, nonfinite=nonfinite, notes=notes,
                       options=dict(labels=labels, scenarios=sorted(scen), heights=sorted(hts),
                                    test_towns=sorted(sel.test_towns), val_towns=sorted(sel.val_towns),
                                    domain_by=domain_by, nodata=nodata, classes=classes))
    return prep.run(scenes)


__all__ = ["prepare_syndrone"]
