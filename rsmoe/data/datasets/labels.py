"""Label tables: a release's raw label values (integers or colours) → the prepared class indices.

A label table is a CSV (``rsmoe/resources/*_classes.csv``; a user passes their own with ``classes=``):

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

Decoding (:meth:`LabelTable.decode`) turns a label strip into a uint8 mask (255 = ignore). A colour label may match
a table colour within a tolerance: the largest absolute difference over the three channels (a pixel takes the
nearest table colour if that difference is at most ``tolerance``). A value that matches nothing is an error whose
message names the file, the value, its pixel count and — for colours — the nearest table colour and the
``--color-tolerance`` that would accept it.
"""
from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rsmoe.data.prepared import IGNORE_INDEX

from .errors import PrepareError
from .tables import resource

UNKNOWN_CODE = -1  # a decoded pixel whose raw value is in no table row (before the unknown-label policy applies)
IGNORED_CLASS_NAMES = ("", "ignore", "ignored", "none", "255")


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
        r, g, b = hsv_to_rgb(h, min(s, 1.0), v)
        out.append([int(round(255 * r)), int(round(255 * g)), int(round(255 * b))])
    return out


def hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    """HSV in [0, 1] → RGB in [0, 1]."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def color_code(r: np.ndarray | int, g: np.ndarray | int, b: np.ndarray | int) -> np.ndarray | int:
    """(r, g, b) → one integer ``r·2¹⁶ + g·2⁸ + b`` (int64 arrays stay arrays)."""
    return (r << 16) | (g << 8) | b


def code_rgb(codes: np.ndarray) -> np.ndarray:
    """Integer colour codes (N,) → their channels (N, 3)."""
    codes = np.asarray(codes, dtype=np.int64)
    return np.stack([(codes >> 16) & 255, (codes >> 8) & 255, codes & 255], axis=-1)


@dataclass(frozen=True)
class TableRow:
    """One parsed row of a label table."""

    value: Any  # int, or (r, g, b)
    name: str
    target: str | None  # prepared class (None = ignore)
    color: list[int] | None
    class_index: int | None
    name_color: list[int] | None


def parse_row(row: dict[str, str], where: str) -> TableRow:
    """A CSV row (``value,name,class[,color][,class_index][,name_color]``) → :class:`TableRow`."""
    raw = (row.get("value") or "").strip()
    if not raw:
        raise PrepareError(f"{where}: empty 'value'")
    value: Any = int(raw) if re.fullmatch(r"-?\d+", raw) else parse_color(raw, where)
    name = (row.get("name") or "").strip() or str(raw)
    target = (row.get("class") or "").strip()
    target = None if target.lower() in IGNORED_CLASS_NAMES else target
    color = list(parse_color(row["color"], where)) if (row.get("color") or "").strip() else None
    index = None
    if (row.get("class_index") or "").strip():
        try:
            index = int(row["class_index"])
        except ValueError:
            raise PrepareError(f"{where}: class_index {row['class_index']!r} is not an integer") from None
    name_color = list(parse_color(row["name_color"], where)) if (row.get("name_color") or "").strip() else None
    return TableRow(value, name, target, color, index, name_color)


def class_order(rows: Sequence[TableRow], source: str) -> list[str]:
    """The prepared classes: those with a ``class_index`` first in index order, then the others in order of first
    appearance."""
    order: dict[str, int] = {}
    for i, r in enumerate(rows, start=2):
        if r.target is None or r.class_index is None:
            continue
        if order.get(r.target, r.class_index) != r.class_index or (
                r.class_index in order.values() and order.get(r.target) != r.class_index):
            raise PrepareError(f"{source} line {i}: class_index {r.class_index} conflicts with another row")
        order[r.target] = r.class_index
    classes = list(dict.fromkeys(r.target for r in rows if r.target is not None))
    appearance = {c: i for i, c in enumerate(classes)}
    classes.sort(key=lambda c: (0, order[c]) if c in order else (1, appearance[c]))
    return classes


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
        """``color`` (values are (r, g, b)) or ``index`` (values are integers)."""
        return "color" if self.values and isinstance(self.values[0], tuple) else "index"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def from_rows(cls, source: str, rows: Sequence[dict[str, str]]) -> "LabelTable":
        """Build a table from CSV rows (see the module docstring); ``source`` names the table in errors."""
        if not rows:
            raise PrepareError(f"{source}: the class table has no rows")
        for col in ("value", "class"):
            if col not in rows[0]:
                raise PrepareError(f"{source}: the class table needs the columns value,name,class[,color]; "
                                   f"column {col!r} is missing")
        parsed = [parse_row(row, f"{source} line {i}") for i, row in enumerate(rows, start=2)]
        values = [r.value for r in parsed]
        if len({isinstance(v, tuple) for v in values}) != 1:
            raise PrepareError(f"{source}: mixes integer values and colours; use one kind per table")
        if len(set(values)) != len(values):
            dup = next(v for v in values if values.count(v) > 1)
            raise PrepareError(f"{source}: value {dup} appears more than once")
        classes = class_order(parsed, source)
        if not classes:
            raise PrepareError(f"{source}: every value maps to 'ignore'; at least one class is needed")
        if len(classes) >= IGNORE_INDEX:
            raise PrepareError(f"{source}: {len(classes)} classes do not fit a uint8 mask")
        colors: dict[str, list[int]] = {}
        for r in parsed:
            if r.target is not None and r.color is not None:
                colors.setdefault(r.target, r.color)
        generated = generated_palette(len(classes), source)
        palette = [colors.get(c, generated[i]) for i, c in enumerate(classes)]
        name_colors = {r.name: r.name_color for r in parsed if r.name_color is not None}
        return cls(source, values, [r.name for r in parsed], [r.target for r in parsed], classes, palette,
                   name_colors)

    @classmethod
    def from_csv(cls, path: str | Path) -> "LabelTable":
        """Read a table CSV; a missing file is a one-line error."""
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
    def lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted value codes (int64; colours as :func:`color_code`) and the class index of each (255 = ignore)."""
        index = {c: i for i, c in enumerate(self.classes)}
        out = np.array([IGNORE_INDEX if t is None else index[t] for t in self.targets], dtype=np.int64)
        if self.kind == "color":
            keys = np.array([color_code(r, g, b) for r, g, b in self.values], dtype=np.int64)
        else:
            keys = np.array(self.values, dtype=np.int64)
        order = np.argsort(keys)
        return keys[order], out[order]

    def codes(self, raw: np.ndarray, where: str) -> np.ndarray:
        """A label strip → int64 value codes (H×W): the index itself, or the colour code of a 3×H×W strip."""
        if self.kind == "color":
            if raw.ndim != 3 or raw.shape[0] < 3:
                raise PrepareError(f"{where}: colour-coded label needs 3 bands (R, G, B), found shape {raw.shape}")
            return color_code(*(raw[i].astype(np.int64) for i in range(3)))
        if raw.ndim != 2:
            raise PrepareError(f"{where}: index label must be a single band, found shape {raw.shape}")
        return raw.astype(np.int64)

    def decode(self, raw: np.ndarray, where: str, ignore: np.ndarray | None = None, unknown: str = "error",
               tolerance: int = 0, near: set[str] | None = None) -> np.ndarray:
        """Decode a label strip to a uint8 class mask (255 = ignore).

        ``raw`` is H×W (index labels) or 3×H×W (colour labels). Pixels where ``ignore`` is True (no-data) become
        255 whatever their label. A colour that is not in the table takes the nearest table colour when their
        largest channel difference is at most ``tolerance`` (``where`` is then added to ``near``). A value matched
        by nothing is an error (``unknown="error"``, the message says how to accept it) or ignored
        (``unknown="ignore"``).
        """
        codes = self.codes(raw, where)
        keys, outs = self.lookup()
        pos = np.clip(np.searchsorted(keys, codes), 0, len(keys) - 1)
        mask = np.where(keys[pos] == codes, outs[pos], UNKNOWN_CODE)
        if ignore is not None:
            mask[ignore] = IGNORE_INDEX
        missing = mask == UNKNOWN_CODE
        if not missing.any():
            return mask.astype(np.uint8)
        bad, counts = np.unique(codes[missing], return_counts=True)
        near_class, distance, nearest = self.nearest(bad, keys, outs)
        accepted = distance <= tolerance if self.kind == "color" else np.zeros(len(bad), dtype=bool)
        if not accepted.all() and unknown != "ignore":
            first = int(np.flatnonzero(~accepted)[0])
            raise PrepareError(self.unknown_message(where, bad, counts, accepted, first, nearest, distance))
        if near is not None and accepted.any():
            near.add(where)
        resolved = np.where(accepted, near_class, IGNORE_INDEX)
        mask[missing] = resolved[np.searchsorted(bad, codes[missing])]
        return mask.astype(np.uint8)

    def nearest(self, bad: np.ndarray, keys: np.ndarray, outs: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each unknown code: the class of the nearest table colour, the largest channel difference to it and
        that colour's code (index tables: no distance, all ``inf``)."""
        if self.kind != "color":
            inf = np.full(len(bad), np.iinfo(np.int64).max)
            return np.full(len(bad), IGNORE_INDEX), inf, np.zeros(len(bad), dtype=np.int64)
        dist = np.abs(code_rgb(bad)[:, None, :] - code_rgb(keys)[None, :, :]).max(axis=-1)  # (unknown, table)
        j = dist.argmin(axis=1)
        return outs[j], dist[np.arange(len(bad)), j], keys[j]

    def unknown_message(self, where: str, bad: np.ndarray, counts: np.ndarray, accepted: np.ndarray, first: int,
                        nearest: np.ndarray, distance: np.ndarray) -> str:
        """The one-line error for label values that match no table row (how to accept them included)."""
        shown = format_value(int(bad[first]), self.kind)
        n_others = int((~accepted).sum()) - 1
        others = f", and {n_others} other value(s)" if n_others > 0 else ""
        head = (f"{where}: label {'colour' if self.kind == 'color' else 'value'} {shown} ({int(counts[first])} "
                f"pixel(s){others}) is not in the class table {self.source}")
        if self.kind == "color":
            need = int(distance[~accepted].max())
            hint = (f"; the nearest table colour {format_value(int(nearest[first]), 'color')} differs by "
                    f"{int(distance[first])} per channel: pass --color-tolerance {need} (color_tolerance={need}) to "
                    "give near colours the class of the nearest table colour, or fix the label / extend the table "
                    "(--classes CSV)")
        else:
            known = ", ".join(format_value(int(k), self.kind) for k in sorted(self.values)[:12])
            known += " …" if len(self.values) > 12 else ""
            hint = (f" (known: {known}); fix the label, extend the table (--classes CSV) or pass --unknown-labels "
                    "ignore to ignore such pixels")
        return head + hint


def format_value(code: int, kind: str) -> str:
    """A value code as shown in messages: ``7`` or ``(255, 255, 0)``."""
    if kind == "color":
        r, g, b = (int(v) for v in code_rgb(np.array([code]))[0])
        return f"({r}, {g}, {b})"
    return str(code)


def load_table(default_csv: str, classes: str | Path | None = None) -> LabelTable:
    """The release's shipped class table, or the user's ``classes`` CSV in its place."""
    return LabelTable.from_csv(classes if classes else resource(default_csv))


__all__ = ["LabelTable", "TableRow", "code_rgb", "color_code", "format_value", "generated_palette", "load_table",
           "parse_color", "parse_row"]
