"""What the release preparers share: errors, label tables, layout search, the tiler and the summary.

Every preparer (one module per release) turns an official release on disk into the prepared format of
:mod:`rsmoe.data.prepared` in three steps:

1. **Discover** the release's files and pair images with labels (:func:`find_files`, :func:`locate_dirs`,
   :func:`pair_by_stem`), giving one :class:`Scene` per image: its label file, domain, split, sensor, the bands to
   keep (in the sensor registry's order), the no-data value and the :class:`LabelTable` that decodes its labels.
2. **Check** every scene before a pixel is written (:meth:`Preparation.run`): the image and label files open, the
   image has the release's band count, image and label have the same size.
3. **Tile** each scene once (:func:`tile_scene`): a fixed grid of ``tile``-pixel windows every ``stride`` pixels
   whose last row/column is shifted to end at the image edge (no padding); the image and its label are read
   through rasterio windows one tile-row strip at a time, so a scene is never read twice nor held whole in
   memory. No-data pixels (all kept bands equal to the no-data value) become mask 255; tiles with no labelled,
   valid pixel are skipped. Georeferenced sources keep their CRS and each tile's window transform.

Besides the tiles, ``manifest.csv`` and ``dataset.yaml`` (whose ``preparation`` entry holds the release name, tile,
stride and any alternate mask folders), a preparation writes ``preparation.json``: the options, notes, skipped
tiles and files, and the class pixel counts per domain and split (:func:`preparation_details`).

Everything goes through :class:`rsmoe.data.prepared.PreparedWriter`, which writes into a temporary folder and
renames it into place only on success, so an error — here or in the writer — leaves nothing half-written at the
output path. All errors that a wrong input can cause are :class:`PrepareError`, one line, naming the file or
folder and what was expected.

Label tables (CSV, ``rsmoe/resources/*_classes.csv``; a user can pass their own with ``classes=``):

``value``
    the raw label value in the release's files: an integer (index labels) or a colour ``r g b`` / ``r-g-b`` /
    ``#rrggbb`` (colour-coded labels). All rows of a table are of one kind.
``name``
    the release's name for that value (documentation; also the class name of :meth:`LabelTable.fine`).
``class``
    the prepared class the value maps to; empty or ``ignore`` → mask 255. The prepared classes are the distinct
    ``class`` entries in order of first appearance (so class merges are plain table rows).
``color`` (optional)
    the palette colour ``r g b`` of the prepared class (the first non-empty entry of a class counts; classes
    without one get a generated colour).
``class_index`` (optional)
    the index of the prepared class (on any one row of the class); classes with an index come first, in index
    order, the others follow in order of appearance.
``name_color`` (optional)
    the palette colour of the fine class ``name`` (used by :meth:`LabelTable.fine`).

Any other column (``source``, notes) is kept for humans and ignored.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import rasterio
import yaml
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import Affine
from rasterio.windows import Window

from rsmoe.data.prepared import IGNORE_INDEX, PreparedWriter, load_dataset_info
from rsmoe.data.raster import write_raster
from rsmoe.errors import DataError, one_line
from rsmoe.sensors import get_sensor

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
PREPARATION_FILE = "preparation.json"  # written next to dataset.yaml: options, notes, skipped tiles, class pixels
SPLITS = ("train", "val", "test")
_UNKNOWN = -1


class PrepareError(DataError):
    """A wrong or incomplete release: one line naming the file or folder and what was expected."""


def resource(name: str) -> Path:
    """A data table shipped in ``rsmoe/resources``."""
    return RESOURCES / name


# ----------------------------------------------------------------------------------------------------- tables
def parse_color(text: str, where: str = "") -> tuple[int, int, int]:
    """``"r g b"``, ``"r,g,b"``, ``"r-g-b"`` or ``"#rrggbb"`` → (r, g, b)."""
    t = str(text).strip()
    if t.startswith("#") and len(t) == 7:
        try:
            return int(t[1:3], 16), int(t[3:5], 16), int(t[5:7], 16)
        except ValueError:
            pass
    parts = [p for p in re.split(r"[\s,;/-]+", t) if p]
    try:
        rgb = tuple(int(p) for p in parts)
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise PrepareError(f"{where}: {text!r} is not a colour (expected 'r g b' with values 0-255 or '#rrggbb')")
    return rgb  # type: ignore[return-value]


def generated_palette(n: int, seed: str = "rsmoe") -> list[list[int]]:
    """``n`` distinct, reproducible colours (golden-ratio hues) for classes a release gives no colour for."""
    out = []
    offset = int(hashlib.md5(seed.encode()).hexdigest()[:6], 16) / 0xFFFFFF
    for i in range(n):
        h = (offset + i * 0.618033988749895) % 1.0
        s, v = 0.65 + 0.3 * ((i * 7) % 3) / 2, 0.95 - 0.25 * ((i * 5) % 2)
        r, g, b = _hsv_to_rgb(h, min(s, 1.0), v)
        out.append([int(round(255 * r)), int(round(255 * g)), int(round(255 * b))])
    return out


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


@dataclass
class LabelTable:
    """Raw label values (integers or colours) → prepared class index (255 = ignore)."""

    source: str
    values: list[Any]  # int, or (r, g, b)
    names: list[str]
    targets: list[str | None]  # prepared class per value (None = ignore)
    classes: list[str]
    palette: list[list[int]]
    name_colors: dict[str, list[int]] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "color" if self.values and isinstance(self.values[0], tuple) else "index"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def from_rows(cls, source: str, rows: Sequence[dict[str, str]]) -> "LabelTable":
        if not rows:
            raise PrepareError(f"{source}: the class table has no rows")
        for col in ("value", "class"):
            if col not in rows[0]:
                raise PrepareError(f"{source}: the class table needs the columns value,name,class[,color]; "
                                   f"column {col!r} is missing")
        values, names, targets = [], [], []
        order: dict[str, int] = {}
        colors: dict[str, list[int]] = {}
        name_colors: dict[str, list[int]] = {}
        for i, row in enumerate(rows, start=2):
            where = f"{source} line {i}"
            raw = (row.get("value") or "").strip()
            if not raw:
                raise PrepareError(f"{where}: empty 'value'")
            if re.fullmatch(r"-?\d+", raw):
                value: Any = int(raw)
            else:
                value = parse_color(raw, where)
            values.append(value)
            name = (row.get("name") or "").strip() or str(raw)
            names.append(name)
            target = (row.get("class") or "").strip()
            target = None if target.lower() in ("", "ignore", "ignored", "none", "255") else target
            targets.append(target)
            if target is not None and (row.get("color") or "").strip() and target not in colors:
                colors[target] = list(parse_color(row["color"], where))
            if target is not None and (row.get("class_index") or "").strip():
                try:
                    idx = int(row["class_index"])
                except ValueError:
                    raise PrepareError(f"{where}: class_index {row['class_index']!r} is not an integer") from None
                if order.get(target, idx) != idx or (idx in order.values() and order.get(target) != idx):
                    raise PrepareError(f"{where}: class_index {idx} conflicts with another row")
                order[target] = idx
            if (row.get("name_color") or "").strip():
                name_colors[name] = list(parse_color(row["name_color"], where))
        kinds = {isinstance(v, tuple) for v in values}
        if len(kinds) != 1:
            raise PrepareError(f"{source}: mixes integer values and colours; use one kind per table")
        if len(set(values)) != len(values):
            dup = next(v for v in values if values.count(v) > 1)
            raise PrepareError(f"{source}: value {dup} appears more than once")
        classes = list(dict.fromkeys(t for t in targets if t is not None))
        if order:  # classes with a class_index first, in that order; the others after, in order of appearance
            classes.sort(key=lambda c: (0, order[c]) if c in order else (1, classes.index(c)))
        if not classes:
            raise PrepareError(f"{source}: every value maps to 'ignore'; at least one class is needed")
        if len(classes) >= IGNORE_INDEX:
            raise PrepareError(f"{source}: {len(classes)} classes do not fit a uint8 mask")
        generated = generated_palette(len(classes), source)
        palette = [colors.get(c, generated[i]) for i, c in enumerate(classes)]
        return cls(source, values, names, targets, classes, palette, name_colors)

    @classmethod
    def from_csv(cls, path: str | Path) -> "LabelTable":
        path = Path(path)
        if not path.is_file():
            raise PrepareError(f"{path}: class table not found (a CSV with columns value,name,class[,color])")
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.DictReader(f) if any((v or "").strip() for v in r.values() if isinstance(v, str))]
        return cls.from_rows(str(path), rows)

    def fine(self) -> "LabelTable":
        """The same values, each non-ignored value its own class named by its ``name`` (no merging)."""
        rows = []
        class_color = dict(zip(self.classes, self.palette))
        for v, n, t in zip(self.values, self.names, self.targets):
            color = self.name_colors.get(n) or (class_color.get(t) if t == n else None)
            rows.append({
                "value": " ".join(map(str, v)) if isinstance(v, tuple) else str(v),
                "name": n,
                "class": "" if t is None else n,
                "color": " ".join(map(str, color)) if color else "",
            })
        return LabelTable.from_rows(f"{self.source} (fine classes)", rows)

    # -- decoding ------------------------------------------------------------------------------------------
    def _lookup(self) -> tuple[np.ndarray, np.ndarray]:
        index = {c: i for i, c in enumerate(self.classes)}
        out = np.array([IGNORE_INDEX if t is None else index[t] for t in self.targets], dtype=np.int64)
        if self.kind == "color":
            keys = np.array([(r << 16) | (g << 8) | b for r, g, b in self.values], dtype=np.int64)
        else:
            keys = np.array(self.values, dtype=np.int64)
        order = np.argsort(keys)
        return keys[order], out[order]

    def decode(
        self,
        raw: np.ndarray,
        where: str,
        ignore: np.ndarray | None = None,
        unknown: str = "error",
        tolerance: int = 0,
    ) -> np.ndarray:
        """Decode a label strip to a uint8 class mask (255 = ignore).

        ``raw`` is H×W (index labels) or 3×H×W (colour labels). Pixels where ``ignore`` is True (no-data) become
        255 whatever their label. A value not in the table is an error (``unknown="error"``) or ignored
        (``unknown="ignore"``); colour labels may match a table colour within ``tolerance`` (max abs difference
        per channel).
        """
        if self.kind == "color":
            if raw.ndim != 3 or raw.shape[0] < 3:
                raise PrepareError(f"{where}: colour-coded label needs 3 bands (R, G, B), found shape {raw.shape}")
            r, g, b = (raw[i].astype(np.int64) for i in range(3))
            codes = (r << 16) | (g << 8) | b
        else:
            if raw.ndim != 2:
                raise PrepareError(f"{where}: index label must be a single band, found shape {raw.shape}")
            codes = raw.astype(np.int64)
        keys, outs = self._lookup()
        pos = np.clip(np.searchsorted(keys, codes), 0, len(keys) - 1)
        hit = keys[pos] == codes
        mask = np.where(hit, outs[pos], _UNKNOWN)
        if ignore is not None:
            mask[ignore] = IGNORE_INDEX
        missing = mask == _UNKNOWN
        if missing.any():
            bad = np.unique(codes[missing])
            resolved = {}
            if self.kind == "color" and tolerance > 0:
                table_rgb = np.stack([(keys >> 16) & 255, (keys >> 8) & 255, keys & 255], axis=1)
                for code in bad:
                    rgb = np.array([(code >> 16) & 255, (code >> 8) & 255, code & 255])
                    dist = np.abs(table_rgb - rgb).max(axis=1)
                    j = int(dist.argmin())
                    if dist[j] <= tolerance:
                        resolved[int(code)] = int(outs[j])
            unresolved = [int(c) for c in bad if int(c) not in resolved]
            if unresolved and unknown != "ignore":
                first = unresolved[0]
                shown = _format_value(first, self.kind)
                count = int((codes[missing] == first).sum())
                known = ", ".join(_format_value(int(k), self.kind) for k in keys[:12])
                known += " …" if len(keys) > 12 else ""
                others = f", and {len(unresolved) - 1} other value(s)" if len(unresolved) > 1 else ""
                raise PrepareError(
                    f"{where}: label value {shown} ({count} pixels{others}) "
                    f"is not in the class table {self.source} (known: {known}); fix the label, extend the table "
                    "(classes=CSV) or pass unknown_labels=ignore"
                )
            for code, cls_index in resolved.items():
                mask[missing & (codes == code)] = cls_index
            mask[mask == _UNKNOWN] = IGNORE_INDEX
        return mask.astype(np.uint8)


def _format_value(code: int, kind: str) -> str:
    if kind == "color":
        return f"({(code >> 16) & 255}, {(code >> 8) & 255}, {code & 255})"
    return str(code)


def load_table(default_csv: str, classes: str | Path | None = None) -> LabelTable:
    """The release's shipped class table, or the user's ``classes`` CSV in its place."""
    return LabelTable.from_csv(classes if classes else resource(default_csv))


def read_csv_rows(path: str | Path, required: Sequence[str], what: str) -> list[dict[str, str]]:
    """Rows of a user or shipped CSV; a one-line error names the file and the missing columns."""
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"{path}: {what} not found (a CSV with columns {','.join(required)})")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in cols]
        if missing:
            raise PrepareError(f"{path}: {what} needs the columns {','.join(required)}; missing {','.join(missing)}")
        rows = []
        for row in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str) or v is None}
            if any(row.values()):
                rows.append(row)
    return rows


def read_yaml_file(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise PrepareError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None


def as_list(value: Any) -> list[str]:
    """A list of strings from a list, a tuple or a comma-separated string (``None``/'' → [])."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v).strip() for v in value if str(v).strip()]


# ------------------------------------------------------------------------------------------------- layout
def locate_dirs(root: Path, relpath: str, max_depth: int = 3) -> list[Path]:
    """Folders ``D`` with ``D/relpath`` an existing folder, for ``D`` = ``root`` or a subfolder up to ``max_depth``
    levels below it (releases are often unzipped one level deeper than documented)."""
    found = []
    frontier = [root]
    for _ in range(max_depth + 1):
        nxt = []
        for d in frontier:
            if (d / relpath).is_dir():
                found.append(d)
            try:
                nxt.extend(sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")))
            except OSError:
                continue
        frontier = nxt
    return found


def find_files(folder: Path, patterns: Sequence[str], recursive: bool = False) -> list[Path]:
    """Files in ``folder`` (and its subfolders with ``recursive``) whose name matches a glob pattern, ignoring
    case (``*.tif`` also finds ``X.TIF``)."""
    if not folder.is_dir():
        return []
    pats = [p.lower() for p in patterns]
    entries = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in entries if not p.name.startswith(".") and any(fnmatch(p.name.lower(), q) for q in pats)
                  and p.is_file())


def require_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise PrepareError(f"{root}: release folder not found")
    return root


def relpath(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def pair_by_stem(
    images: Sequence[Path],
    labels: Iterable[Path],
    label_suffixes: Sequence[str] = ("",),
    where: str = "",
    expect: Callable[[Path], str] | None = None,
    missing: str = "error",
) -> list[tuple[Path, Path | None]]:
    """Pair each image with the label of the same stem (the label's stem may add one of ``label_suffixes``).

    An image without label is an error naming the image and the label expected (``expect(image)`` describes it),
    unless ``missing="skip"`` (the pair is returned with ``None``)."""
    index: dict[str, Path] = {}
    for lab in labels:
        stem = lab.stem
        for suf in sorted(label_suffixes, key=len, reverse=True):
            if suf and stem.endswith(suf):
                stem = stem[: -len(suf)]
                break
        index.setdefault(stem, lab)
    pairs = []
    for img in images:
        lab = index.get(img.stem)
        if lab is None and missing != "skip":
            wanted = expect(img) if expect else f"a label named {img.stem}{label_suffixes[0]}.*"
            raise PrepareError(f"{img}: image without label ({where}expected {wanted})")
        pairs.append((img, lab))
    return pairs


# ------------------------------------------------------------------------------------------------- scenes
@dataclass
class Scene:
    """One image of a release and how to prepare it."""

    image: Path
    label: Path
    domain: str
    split: str
    sensor: str
    table: LabelTable
    source_file: str  # the manifest's source_file (path relative to the release root)
    bands: Sequence[int] | None = None  # 0-based bands to keep, in the sensor's order (None: all, as stored)
    expected_bands: int | None = None  # band count the image file must have (None: the sensor's)
    band_note: str = ""  # what the expected bands are, for error messages ("R,G,B,NIR,elevation")
    nodata: float | None | str = "file"  # value, None, or "file" (the file's nodata tag, else none)
    label_band: int | None | str = None  # read this 0-based band of an index label whatever its band count;
    # "auto": band 0 of a label with 3 or more bands (CARLA's raw encoding), else the single band
    alt_labels: dict[str, Path] = field(default_factory=dict)  # variant name -> label file (ISPRS full labels)
    # filled by inspect()
    height: int = 0
    width: int = 0
    crs: Any = None
    transform: Any = None
    georef: bool = False
    nodata_value: float | None = None


def _open(path: Path, what: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except (RasterioError, OSError) as e:
        raise PrepareError(f"{path}: cannot read {what} ({one_line(e)})") from None


def inspect_scene(scene: Scene) -> None:
    """Open the scene's files (headers only) and check band counts and sizes; fills the scene's geometry."""
    sensor = get_sensor(scene.sensor)
    with _open(scene.image, "image") as src:
        note = f" ({scene.band_note})" if scene.band_note else ""
        if scene.expected_bands is None and scene.bands is not None:
            if src.count <= max(scene.bands):
                raise PrepareError(f"{scene.image}: image has {src.count} band(s), band {max(scene.bands) + 1} "
                                   f"is needed{note}")
        else:
            expected = scene.expected_bands or sensor.num_bands
            if src.count != expected:
                raise PrepareError(f"{scene.image}: image has {src.count} band(s), expected {expected}{note}")
        keep = list(scene.bands) if scene.bands is not None else list(range(src.count))
        if len(keep) != sensor.num_bands:
            raise PrepareError(f"{scene.image}: keeping {len(keep)} band(s) but sensor {scene.sensor} has "
                               f"{sensor.num_bands}")
        scene.height, scene.width = src.height, src.width
        scene.crs, scene.transform = src.crs, src.transform
        scene.georef = src.crs is not None or (src.transform is not None and src.transform != Affine.identity())
        if scene.nodata == "file":
            scene.nodata_value = src.nodata
        else:
            scene.nodata_value = scene.nodata  # type: ignore[assignment]
    for variant, path in [("label", scene.label), *scene.alt_labels.items()]:
        with _open(path, f"{variant} label") as lab:
            if scene.label_band == "auto":
                scene.label_band = 0 if lab.count >= 3 else None
            if (lab.height, lab.width) != (scene.height, scene.width):
                raise PrepareError(f"{path}: label is {lab.height}×{lab.width} pixels but image {scene.image.name} "
                                   f"is {scene.height}×{scene.width}")
            if scene.table.kind == "color" and lab.count < 3:
                raise PrepareError(f"{path}: colour-coded label needs 3 bands (R, G, B), found {lab.count}")
            if scene.table.kind == "index" and scene.label_band is None and lab.count != 1:
                raise PrepareError(f"{path}: index label must have 1 band, found {lab.count}")
            if scene.label_band is not None and scene.label_band >= lab.count:
                raise PrepareError(f"{path}: label has {lab.count} band(s), band {scene.label_band + 1} requested")


def grid(length: int, tile: int, stride: int) -> list[int]:
    """Window starts along one axis: every ``stride`` pixels, the last one shifted to end at ``length``."""
    if length < tile:
        return []
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def _read_label(src, scene: Scene, window: Window) -> np.ndarray:
    if scene.table.kind == "color":
        return src.read(indexes=[1, 2, 3], window=window)
    band = 1 if scene.label_band is None else scene.label_band + 1
    return src.read(band, window=window)


@dataclass
class Stats:
    """What a preparation wrote and skipped (goes into dataset.yaml under ``preparation``)."""

    classes: int
    pixels: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # domain -> split -> per class + ignored
    tiles_skipped_empty: int = 0
    scenes_too_small: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, domain: str, split: str, mask: np.ndarray) -> None:
        counts = np.bincount(np.where(mask == IGNORE_INDEX, self.classes, mask).ravel(), minlength=self.classes + 1)
        acc = self.pixels.setdefault(domain, {}).setdefault(split, [0] * (self.classes + 1))
        for i, c in enumerate(counts[: self.classes + 1]):
            acc[i] += int(c)


def tile_scene(writer: PreparedWriter, scene: Scene, tile: int, stride: int, stats: Stats,
               unknown: str = "error", tolerance: int = 0) -> int:
    """Write the tiles of one scene; returns the number written."""
    rows, cols = grid(scene.height, tile, stride), grid(scene.width, tile, stride)
    if not rows or not cols:
        stats.scenes_too_small.append(scene.source_file)
        return 0
    bands = [b + 1 for b in scene.bands] if scene.bands is not None else None
    written = 0
    alt_dirs = {v: f"masks_{v}" for v in scene.alt_labels}
    srcs = []
    try:
        src = _open(scene.image, "image")
        srcs.append(src)
        lab = _open(scene.label, "label")
        srcs.append(lab)
        alts = {}
        for v, p in scene.alt_labels.items():
            alts[v] = _open(p, f"{v} label")
            srcs.append(alts[v])
        for r in rows:
            strip = Window(0, r, scene.width, tile)
            try:
                image = src.read(indexes=bands, window=strip) if bands else src.read(window=strip)
            except RasterioError as e:
                raise PrepareError(f"{scene.image}: cannot read rows {r}-{r + tile} ({one_line(e)})") from None
            nodata = None
            if scene.nodata_value is not None and not (isinstance(scene.nodata_value, float)
                                                      and math.isnan(scene.nodata_value)):
                nodata = np.all(image == scene.nodata_value, axis=0)
            elif scene.nodata_value is not None:
                nodata = np.all(np.isnan(image), axis=0)
            try:
                raw = _read_label(lab, scene, strip)
                alt_raw = {v: _read_label(a, scene, strip) for v, a in alts.items()}
            except RasterioError as e:
                raise PrepareError(f"{scene.label}: cannot read rows {r}-{r + tile} ({one_line(e)})") from None
            mask = scene.table.decode(raw, str(scene.label), ignore=nodata, unknown=unknown, tolerance=tolerance)
            alt_masks = {v: scene.table.decode(a, str(scene.alt_labels[v]), ignore=nodata, unknown=unknown,
                                               tolerance=tolerance) for v, a in alt_raw.items()}
            for c in cols:
                m = mask[:, c:c + tile]
                if not (m != IGNORE_INDEX).any():
                    stats.tiles_skipped_empty += 1
                    continue
                crs = transform = None
                if scene.georef:
                    crs = scene.crs
                    transform = scene.transform @ Affine.translation(c, r)  # the window's own transform
                writer.add_tile(image[:, :, c:c + tile], m, scene.domain, scene.split, scene.sensor,
                                source_file=scene.source_file, row=r, col=c, crs=crs, transform=transform)
                stats.add(scene.domain, scene.split, m)
                if alt_masks:
                    rel = writer._rows[-1]["mask"]  # masks/<domain>/<split>/<stem>.tif
                    for v, am in alt_masks.items():
                        write_raster(writer.tmp_dir / (alt_dirs[v] + rel[len("masks"):]),
                                     am[:, c:c + tile].astype(np.uint8), crs=crs, transform=transform)
                written += 1
    finally:
        for s in srcs:
            s.close()
    return written


# -------------------------------------------------------------------------------------------- preparation
@dataclass
class Preparation:
    """Check and tile a list of scenes into one prepared folder.

    ``name``: the dataset name written to dataset.yaml; ``table``: the label table all scenes share (its classes
    and palette become the dataset's); ``extra``: more dataset.yaml keys (``preparation`` is added: release,
    tile, stride, alternate mask folders); ``options``, ``notes`` and ``details`` go to ``preparation.json``
    together with the skipped tiles/files and the class pixel counts per domain and split.

    All scenes are checked (:func:`inspect_scene`) before the writer is created; every error after that aborts
    the writer, so ``out`` is either the complete new dataset or left as it was.
    """

    name: str
    out: Path
    table: LabelTable
    tile: int = 512
    stride: int | None = None
    unknown: str = "error"
    tolerance: int = 0
    progress: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # more entries for preparation.json

    def run(self, scenes: Sequence[Scene]) -> Path:
        tile = int(self.tile)
        stride = int(self.stride or tile)
        if tile < 1 or stride < 1:
            raise PrepareError(f"tile and stride must be positive, got tile={tile} stride={stride}")
        if self.unknown not in ("error", "ignore"):
            raise PrepareError(f"unknown_labels must be 'error' or 'ignore', got {self.unknown!r}")
        if not scenes:
            raise PrepareError(f"{self.name}: no scenes to prepare")
        for s in scenes:
            if s.table.classes != self.table.classes:
                raise PrepareError(f"{s.label}: its class table {s.table.source} has other classes than "
                                   f"{self.table.source}")
            if s.split not in SPLITS:
                raise PrepareError(f"{s.image}: split {s.split!r} is not one of {list(SPLITS)}")
        domains = list(dict.fromkeys(s.domain for s in scenes))
        from tqdm.auto import tqdm

        for s in tqdm(scenes, desc=f"check {self.name}", unit="file", disable=not self.progress):
            inspect_scene(s)
        if not any(s.split == "train" for s in scenes):
            raise PrepareError(f"{self.name}: no scene in split 'train' (normalisation statistics are computed "
                               "on the training split)")
        stats = Stats(self.table.num_classes, notes=list(self.notes))
        self.out = Path(self.out)
        try:
            writer = PreparedWriter(self.out, self.name, self.table.classes, self.table.palette,
                                    extra=dict(self.extra), domains=domains)
        except ValueError as e:
            raise PrepareError(str(e)) from None
        try:
            per_domain: dict[str, int] = {d: 0 for d in domains}
            for s in tqdm(scenes, desc=f"tile {self.name}", unit="file", disable=not self.progress):
                per_domain[s.domain] += tile_scene(writer, s, tile, stride, stats, self.unknown, self.tolerance)
            empty = [d for d, n in per_domain.items() if n == 0]
            if empty:
                files = ", ".join(f"{d}: {sum(1 for s in scenes if s.domain == d)} file(s)" for d in empty)
                raise PrepareError(
                    f"{self.out}: domain(s) {', '.join(empty)} got no tile ({files} "
                    f"all smaller than the {tile}-pixel tile, no-data or unlabelled)"
                )
            if not any(r["split"] == "train" for r in writer._rows):
                raise PrepareError(f"{self.out}: no tile in split 'train' (every training scene was no-data, "
                                   "unlabelled or smaller than the tile)")
            details = {
                "release": self.name,
                "tile": tile,
                "stride": stride,
                "options": {k: _plain(v) for k, v in self.options.items()},
                "tiles_skipped_empty": stats.tiles_skipped_empty,
                "scenes_smaller_than_tile": stats.scenes_too_small,
                "notes": stats.notes,
                "class_pixels": stats.pixels,
                **{k: _plain(v) for k, v in self.details.items()},
            }
            alt = sorted({v for s in scenes for v in s.alt_labels})
            if alt:
                details["alternate_masks"] = {v: f"masks_{v}/" for v in alt}
            # dataset.yaml stays small (it is parsed for every dataset a run opens); the details go to a JSON file
            writer.extra["preparation"] = {k: details[k] for k in ("release", "tile", "stride")}
            writer.extra["preparation"]["details"] = PREPARATION_FILE
            if alt:
                writer.extra["preparation"]["alternate_masks"] = details["alternate_masks"]
            with open(writer.tmp_dir / PREPARATION_FILE, "w", encoding="utf-8") as f:
                json.dump(details, f, indent=1)
            writer.close()
        except PrepareError:
            writer.abort()
            raise
        except ValueError as e:  # the writer's own validation
            writer.abort()
            raise PrepareError(str(e)) from None
        except BaseException:
            writer.abort()
            raise
        return self.out


def _plain(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


# ------------------------------------------------------------------------------------------------- summary
def preparation_details(out: str | Path) -> dict[str, Any]:
    """What a preparation recorded (``preparation.json``: options, notes, skipped tiles, class pixels per domain
    and split), or ``dataset.yaml``'s ``preparation`` entry where that file is absent."""
    path = Path(out) / PREPARATION_FILE
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return dict((load_dataset_info(out).extra or {}).get("preparation", {}) or {})


def summarize(out: str | Path) -> str:
    """A text summary of a prepared folder: tiles per domain and split, class histogram per split, notes."""
    info = load_dataset_info(out)
    extra = info.extra or {}
    tiles: dict[str, dict[str, int]] = extra.get("tiles", {}) or {}
    prep = preparation_details(out)
    lines = [f"prepared {info.name}: {out}"]
    total = sum(sum(v.values()) for v in tiles.values())
    lines.append(f"{total} tiles of {prep.get('tile', '?')} px (stride {prep.get('stride', '?')}), "
                 f"{len(info.classes)} classes, bands per sensor {info.bands}")
    width = max([len("domain")] + [len(d) for d in tiles]) + 2
    header = f"{'domain':<{width}}{'sensor':<20}" + "".join(f"{s:>8}" for s in SPLITS)
    lines += [header, "-" * len(header)]
    for d, counts in tiles.items():
        lines.append(f"{d:<{width}}{info.sensors.get(d, '?'):<20}" + "".join(f"{counts.get(s, 0):>8}" for s in SPLITS))
    pixels = prep.get("class_pixels", {}) or {}
    n = len(info.classes)
    for split in SPLITS:
        acc = np.zeros(n + 1, dtype=np.int64)
        for per_split in pixels.values():
            if split in per_split:
                acc += np.asarray(per_split[split], dtype=np.int64)
        if acc.sum() == 0:
            continue
        labelled = acc[:n].sum()
        parts = [f"{c} {100.0 * acc[i] / max(labelled, 1):.1f}%" for i, c in enumerate(info.classes)]
        lines.append(f"class pixels ({split}, {labelled} labelled, {acc[n]} ignored): " + ", ".join(parts))
    if prep.get("tiles_skipped_empty"):
        lines.append(f"skipped {prep['tiles_skipped_empty']} tile(s) with no labelled, valid pixel")
    if prep.get("scenes_smaller_than_tile"):
        sm = prep["scenes_smaller_than_tile"]
        more = " …" if len(sm) > 5 else ""
        lines.append(f"skipped {len(sm)} file(s) smaller than the tile: {', '.join(sm[:5])}{more}")
    for note in prep.get("notes", []) or []:
        lines.append(f"note: {note}")
    mean, std = [round(v, 3) for v in info.mean], [round(v, 3) for v in info.std]
    lines.append(f"normalisation (train): mean {mean}, std {std}")
    return "\n".join(lines)
