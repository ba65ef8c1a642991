"""What a preparation wrote and skipped: counted while tiling (:class:`Stats`), stored in ``preparation.json``
next to ``dataset.yaml`` (:func:`preparation_details`) and printed by ``rsmoe prepare`` (:func:`summarize`).

``preparation.json`` holds: ``release``, ``tile``, ``stride``, ``options``, ``tiles_skipped_empty`` (tiles with no
labelled, valid pixel), ``scenes_smaller_than_tile`` (files not tiled because an axis is shorter than the tile),
``nonfinite_pixels`` (``{file: count}`` of pixels with a NaN/inf value, written as no-data), ``notes``,
``class_pixels`` (``{domain: {split: [pixels per class..., ignored]}}``) and whatever the preparer adds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rsmoe.data.prepared import IGNORE_INDEX, load_dataset_info

PREPARATION_FILE = "preparation.json"  # written next to dataset.yaml
SPLITS = ("train", "val", "test")


@dataclass
class Stats:
    """What a preparation wrote and skipped."""

    classes: int
    pixels: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # domain -> split -> per class + ignored
    tiles: dict[str, dict[str, int]] = field(default_factory=dict)  # domain -> split -> tiles written
    tiles_skipped_empty: int = 0
    scenes_too_small: list[str] = field(default_factory=list)
    nonfinite: dict[str, int] = field(default_factory=dict)  # source file -> pixels with a NaN/inf value
    near_colors: set[str] = field(default_factory=set)  # label files with colours matched within the tolerance
    notes: list[str] = field(default_factory=list)

    def add(self, domain: str, split: str, mask: np.ndarray) -> None:
        """Count one written tile and its mask's pixels per class (255 counted last)."""
        counts = np.bincount(np.where(mask == IGNORE_INDEX, self.classes, mask).ravel(), minlength=self.classes + 1)
        acc = self.pixels.setdefault(domain, {}).setdefault(split, [0] * (self.classes + 1))
        for i, c in enumerate(counts[: self.classes + 1]):
            acc[i] += int(c)
        per_split = self.tiles.setdefault(domain, {})
        per_split[split] = per_split.get(split, 0) + 1

    def written(self, domain: str | None = None, split: str | None = None) -> int:
        """Tiles written (of one domain and/or split)."""
        return sum(n for d, per in self.tiles.items() if domain in (None, d)
                   for s, n in per.items() if split in (None, s))

    def all_notes(self) -> list[str]:
        """The preparer's notes, one line per file whose non-finite pixels were written as no-data, and the label
        files whose colours were matched within the colour tolerance (defective or lossy labels)."""
        out = list(self.notes)
        if self.near_colors:
            files = sorted(self.near_colors)
            out.append(f"{len(files)} label file(s) with colours off the class table, matched to the nearest table "
                       f"colour within the colour tolerance: {', '.join(files[:8])}{' …' if len(files) > 8 else ''}")
        for source, n in self.nonfinite.items():
            out.append(f"{source}: {n} pixel(s) with NaN/inf values written as no-data (mask 255, image 0)")
        return out


def plain(v: Any) -> Any:
    """``v`` with paths and unknown objects as strings (JSON-safe)."""
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def preparation_details(out: str | Path) -> dict[str, Any]:
    """What a preparation recorded (``preparation.json``), or ``dataset.yaml``'s ``preparation`` entry where that
    file is absent."""
    path = Path(out) / PREPARATION_FILE
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return dict((load_dataset_info(out).extra or {}).get("preparation", {}) or {})


def class_pixel_lines(classes: list[str], pixels: dict[str, dict[str, list[int]]]) -> list[str]:
    """One line per split: labelled and ignored pixels and the share of each class."""
    lines = []
    n = len(classes)
    for split in SPLITS:
        acc = np.zeros(n + 1, dtype=np.int64)
        for per_split in pixels.values():
            if split in per_split:
                acc += np.asarray(per_split[split], dtype=np.int64)
        if acc.sum() == 0:
            continue
        labelled = acc[:n].sum()
        parts = [f"{c} {100.0 * acc[i] / max(labelled, 1):.1f}%" for i, c in enumerate(classes)]
        lines.append(f"class pixels ({split}, {labelled} labelled, {acc[n]} ignored): " + ", ".join(parts))
    return lines


def summarize(out: str | Path) -> str:
    """A text summary of a prepared folder: tiles per domain and split, class histogram per split, notes."""
    info = load_dataset_info(out)
    tiles: dict[str, dict[str, int]] = (info.extra or {}).get("tiles", {}) or {}
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
    lines += class_pixel_lines(list(info.classes), prep.get("class_pixels", {}) or {})
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


__all__ = ["PREPARATION_FILE", "SPLITS", "Stats", "plain", "preparation_details", "summarize"]
