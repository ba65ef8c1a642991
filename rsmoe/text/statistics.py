"""The offline ``statistics`` captioner **[design]**: the three MPerS captions written from a label map.

No MLLM is involved: the captions answer the three prompts of :mod:`rsmoe.text.prompts` from the pixels of a class
map, so they state categories, amounts and positions exactly, in the same sentence shapes an MLLM is asked for.

Where the label map comes from decides what the captions may be used for (docs/mpers.md §3): while building the *training*
caption store it is the ground-truth mask; at evaluation it must be the model's own first-pass prediction — never the
ground truth of the evaluated image.

What the captions say, for the valid pixels (not ``ignore_index``):

1. ``This image contains the following land cover types: a, b, c.`` — present classes, largest first.
2. ``This image contains: a (48%), b (31%), c (<1%).`` — share of the valid pixels, rounded half up to whole
   percent; a present class under 0.5% is written ``<1%``.
3. A paragraph: an opening with the dominant classes; for each major class (≥ :data:`MAJOR_SHARE` of the image,
   the first :data:`MAX_MAJOR` of them, and below :data:`MOST_SHARE`, which the opening already covers) where it
   lies — the 3×3 grid cell of its centroid ("upper left", "centre", …), or "spread across the image" when it
   fills at least :data:`SPREAD_CELLS` of the 9 cells (≥ :data:`SPREAD_CELL_SHARE` of a cell's valid pixels each)
   — and how many separate regions (8-connected, ignoring specks smaller than :data:`MIN_REGION_SHARE` of the
   image) it forms; further major classes with their shares; the classes under :data:`MAJOR_SHARE` as small
   amounts; then the relation of the two largest classes: whether they adjoin (share a 4-neighbour edge) and where
   the second lies relative to the first (centroid direction).

Everything is deterministic: the same label map gives the same captions.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

MAJOR_SHARE = 0.05
MAX_MAJOR = 4
SPREAD_CELLS = 7
SPREAD_CELL_SHARE = 0.10
MOST_SHARE = 0.70
MIN_REGION_SHARE = 0.002
GRID_NAMES = (
    ("upper left", "upper centre", "upper right"),
    ("centre left", "centre", "centre right"),
    ("lower left", "lower centre", "lower right"),
)
_DIRECTIONS = ("to the right of", "to the lower right of", "below", "to the lower left of", "to the left of",
               "to the upper left of", "above", "to the upper right of")


def format_percent(fraction: float) -> str:
    """``0.456 -> '46%'`` (half up), a positive share under 0.5% -> ``'<1%'``."""
    pct = 100.0 * float(fraction)
    if 0.0 < pct < 0.5:
        return "<1%"
    return f"{int(math.floor(pct + 0.5))}%"


def _join(names: Sequence[str]) -> str:
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _capital(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def grid_position(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> str:
    """Name of the 3×3 grid cell holding the centroid of the pixels ``(rows, cols)`` of a ``shape`` image."""
    h, w = shape
    r = (float(np.mean(rows)) + 0.5) / h
    c = (float(np.mean(cols)) + 0.5) / w
    return GRID_NAMES[min(2, int(r * 3))][min(2, int(c * 3))]


def _direction(from_rc: tuple[float, float], to_rc: tuple[float, float]) -> str:
    """Compass-like word for where ``to_rc`` lies seen from ``from_rc`` (image axes: rows grow downwards)."""
    dr, dc = to_rc[0] - from_rc[0], to_rc[1] - from_rc[1]
    angle = math.degrees(math.atan2(dr, dc)) % 360.0  # 0 = right, 90 = below
    return _DIRECTIONS[int(((angle + 22.5) % 360.0) // 45.0)]


def _adjacent(label_map: np.ndarray, a: int, b: int) -> bool:
    """Whether some pixel of class ``a`` has a 4-neighbour of class ``b``."""
    pairs = [(label_map[:, :-1], label_map[:, 1:]), (label_map[:-1, :], label_map[1:, :])]
    return any(bool(np.any(((x == a) & (y == b)) | ((x == b) & (y == a)))) for x, y in pairs)


def class_shares(label_map: np.ndarray, num_classes: int, ignore_index: int = 255) -> tuple[np.ndarray, int]:
    """Pixel counts per class (length ``num_classes``) and the number of valid pixels."""
    valid = label_map != ignore_index
    values = label_map[valid]
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        bad = int(values[(values < 0) | (values >= num_classes)][0])
        raise ValueError(
            f"statistics_captions: label value {bad} is neither a class index (0..{num_classes - 1}) nor the "
            f"ignore index {ignore_index}"
        )
    counts = np.bincount(values.astype(np.int64), minlength=num_classes)[:num_classes]
    return counts, int(values.size)


def statistics_captions(label_map: np.ndarray, class_names: Sequence[str], ignore_index: int = 255) -> list[str]:
    """The three captions (prompts 1, 2, 3) for a H×W class-index map; see the module docstring."""
    lm = np.asarray(label_map)
    if lm.ndim != 2:
        raise ValueError(f"statistics_captions: label map must be H×W, got shape {lm.shape}")
    if not np.issubdtype(lm.dtype, np.integer):
        raise ValueError(f"statistics_captions: label map must hold integers, got dtype {lm.dtype}")
    names = [str(c) for c in class_names]
    counts, total = class_shares(lm, len(names), ignore_index)
    if total == 0:
        return [
            "This image contains no labelled land cover types.",
            "This image contains: no labelled land cover (0%).",
            "The image holds no valid pixels, so no land cover can be located in it.",
        ]
    order = sorted((i for i in range(len(names)) if counts[i] > 0), key=lambda i: (-counts[i], i))
    share = {i: counts[i] / total for i in order}

    first = "This image contains the following land cover types: " + ", ".join(names[i] for i in order) + "."
    second = "This image contains: " + ", ".join(f"{names[i]} ({format_percent(share[i])})" for i in order) + "."
    return [first, second, _paragraph(lm, lm != ignore_index, names, order, share, total)]


def _paragraph(
    lm: np.ndarray, valid: np.ndarray, names: list[str], order: list[int], share: dict[int, float], total: int
) -> str:
    h, w = lm.shape
    top = order[0]
    mixed = [i for i in order if share[i] >= 0.10][:3]
    if share[top] >= 0.5 or len(mixed) < 2:
        sentences = [f"An overhead view dominated by {names[top]} ({format_percent(share[top])} of the image)."]
    else:
        listed = _join([f"{names[i]} ({format_percent(share[i])})" for i in mixed])
        sentences = [f"An overhead view showing mainly {listed}."]

    cell_r = np.minimum(2, (np.arange(h) * 3) // h)
    cell_c = np.minimum(2, (np.arange(w) * 3) // w)
    cell_of = cell_r[:, None] * 3 + cell_c[None, :]
    min_region = max(1, int(math.ceil(MIN_REGION_SHARE * total)))
    structure = np.ones((3, 3), dtype=bool)
    centroids: dict[int, tuple[float, float]] = {}
    cell_sizes = np.bincount(cell_of[valid], minlength=9)  # valid pixels per 3×3 cell, for the spread test

    large = [i for i in order if share[i] >= MAJOR_SHARE] or [top]
    major, further = large[:MAX_MAJOR], large[MAX_MAJOR:]
    for i in order:
        rows, cols = np.nonzero(lm == i)
        centroids[i] = (float(rows.mean()), float(cols.mean()))
        if i not in major:
            continue
        name = names[i]
        if share[i] >= MOST_SHARE:  # the opening already says the scene is dominated by it
            continue
        cell_hits = np.bincount(cell_of[rows, cols], minlength=9)
        filled = int(np.sum(cell_hits >= SPREAD_CELL_SHARE * np.maximum(cell_sizes, 1)))
        if filled >= SPREAD_CELLS:
            sentences.append(f"Regions of {name} are spread across the image.")
            continue
        position = grid_position(rows, cols, (h, w))
        labels, n = ndimage.label(lm == i, structure=structure)
        sizes = np.bincount(labels.ravel())[1:] if n else np.zeros(0, dtype=np.int64)
        regions = int(np.sum(sizes >= min_region))
        if regions == 1:
            sentences.append(f"One region of {name} lies in the {position} of the image.")
        elif regions >= 2:
            sentences.append(f"{regions} separate regions of {name} lie mostly in the {position} of the image.")
        else:
            sentences.append(f"Small patches of {name} lie mostly in the {position} of the image.")

    if further:
        listed = _join([f"{names[i]} ({format_percent(share[i])})" for i in further])
        sentences.append(f"Further regions of {listed} are present.")
    minor = [names[i] for i in order if i not in large]
    if minor:
        sentences.append(f"Small amounts of {_join(minor)} are also present.")

    if len(order) >= 2:
        a, b = order[0], order[1]
        touch = _adjacent(lm, a, b)
        (ra, ca), (rb, cb) = centroids[a], centroids[b]
        far = math.hypot((rb - ra) / h, (cb - ca) / w) >= 1.0 / 6.0
        if far:
            where = f"regions of {names[b]} lie mostly {_direction((ra, ca), (rb, cb))} those of {names[a]}"
            sentences.append(_capital(where) + (", and the two adjoin each other." if touch
                                                 else ", separated from them."))
        elif touch:
            sentences.append(f"{_capital(names[a])} and {names[b]} are intermixed and adjoin each other.")
        else:
            sentences.append(f"{_capital(names[a])} and {names[b]} are intermixed without touching.")
    return " ".join(sentences)


__all__ = ["statistics_captions", "class_shares", "format_percent", "grid_position", "GRID_NAMES"]
