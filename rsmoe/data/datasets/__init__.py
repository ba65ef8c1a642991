"""Release preparers: an official dataset release on disk → the prepared format (:mod:`rsmoe.data.prepared`).

One module per release (its docstring gives the layout, classes and citation):

========================  =====================================================================================
name                      release / task
========================  =====================================================================================
``fbp``                   Five-Billion-Pixels (+ the five-megacities targets): ``task`` cross-sensor | cross-regional
``fbp-cross-sensor``      ``fbp`` with ``task="cross-sensor"``
``fbp-cross-regional``    ``fbp`` with ``task="cross-regional"`` (needs ``regions``, an image → region CSV)
``whu-ohs``               WHU-OHS, 32-band Orbita hyperspectral (source images → target images, 7 classes)
``flair``                 FLAIR #1 aerial R, G, B, NIR (12 classes, domains = départements)
``loveda``                LoveDA rural → urban (RGB)
``potsdam``               ISPRS Potsdam R, G, B (MPerS)
``vaihingen``             ISPRS Vaihingen NIR, R, G (MPerS)
``potsdam-vaihingen``     ISPRS Potsdam (RGB) → Vaihingen (NIR-R-G), the SpectralMoE cross-spectral-band task
``openearthmap``          OpenEarthMap, domains = continents (target Europe)
``syndrone``              SynDrone UAV renders (MPerS)
========================  =====================================================================================

``prepare(name, root, out, **options)`` runs one and returns the prepared folder; :func:`available` lists the
names; :func:`options_of` the keyword options a preparer takes. Options every preparer takes: ``tile`` and
``stride`` (pixels; stride defaults to the tile), ``classes`` (a class-table CSV replacing the shipped one, see
:mod:`rsmoe.data.datasets.labels`), ``unknown_labels`` (``error`` | ``ignore``), ``nonfinite`` (``nodata`` |
``error``: NaN/inf pixels, see :mod:`rsmoe.data.datasets.tiling`), ``progress``. Errors from a wrong
release are :class:`PrepareError` (one line; nothing is left at ``out``). :func:`summarize` renders the summary
that ``rsmoe prepare`` prints. ``loveda``, ``potsdam``, ``vaihingen`` and ``potsdam-vaihingen`` read the downloaded
zip archives directly (``root`` = the folder holding them, or a zip).

The shared machinery, one concept per module: :mod:`.errors` (:class:`PrepareError`), :mod:`.tables` (shipped and
user tables), :mod:`.labels` (label tables and colour decoding), :mod:`.files` (finding a release's files, zips
included), :mod:`.scenes` (one image + label and its checks), :mod:`.tiling` (cutting a scene into tiles),
:mod:`.preparation` (a whole preparation), :mod:`.summary` (what it wrote). ``docs/datasets.md`` describes every
release as published and the sources each preparer follows.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import PrepareError
from .fbp import prepare_fbp
from .flair import prepare_flair
from .isprs import prepare_potsdam, prepare_potsdam_vaihingen, prepare_vaihingen
from .labels import LabelTable
from .loveda import prepare_loveda
from .openearthmap import prepare_openearthmap
from .syndrone import prepare_syndrone
from .summary import summarize
from .whu_ohs import prepare_whu_ohs


@dataclass(frozen=True)
class Release:
    name: str
    fn: Callable[..., Path]
    description: str
    fixed: tuple[tuple[str, Any], ...] = ()  # options set by the name (e.g. fbp-cross-regional → task)

    def __call__(self, root: str | Path, out: str | Path, **options: Any) -> Path:
        return self.fn(root, out, **dict(self.fixed), **options)


RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        Release("fbp", prepare_fbp, "Five-Billion-Pixels GF-2 (+ five megacities); task cross-sensor|cross-regional"),
        Release("fbp-cross-sensor", prepare_fbp, "Five-Billion-Pixels GF-2 → five-megacities sensors",
                (("task", "cross-sensor"),)),
        Release("fbp-cross-regional", prepare_fbp, "Five-Billion-Pixels GF-2 regions → 12 target cities",
                (("task", "cross-regional"),)),
        Release("whu-ohs", prepare_whu_ohs, "WHU-OHS 32-band hyperspectral, source images S1-S8 → target images T1-T8"),
        Release("flair", prepare_flair, "FLAIR #1 aerial R,G,B,NIR, 12 classes, domains = départements"),
        Release("loveda", prepare_loveda, "LoveDA RGB, domains Rural/Urban"),
        Release("potsdam", prepare_potsdam, "ISPRS Potsdam RGB (MPerS splits)"),
        Release("vaihingen", prepare_vaihingen, "ISPRS Vaihingen NIR-R-G (MPerS splits)"),
        Release("potsdam-vaihingen", prepare_potsdam_vaihingen, "ISPRS Potsdam RGB → Vaihingen NIR-R-G"),
        Release("openearthmap", prepare_openearthmap, "OpenEarthMap RGB, domains = continents"),
        Release("syndrone", prepare_syndrone, "SynDrone CARLA UAV RGB (MPerS)"),
    )
}


def _key(name: str) -> str:
    return str(name).strip().lower().replace("_", "-")


def available() -> list[str]:
    """The preparer names, in registry order."""
    return list(RELEASES)


def get(name: str) -> Release:
    try:
        return RELEASES[_key(name)]
    except KeyError:
        raise PrepareError(f"unknown dataset {name!r}; available: {', '.join(RELEASES)}") from None


def options_of(name: str) -> dict[str, Any]:
    """``{option: default}`` of a preparer's keyword options (without those its name fixes)."""
    rel = get(name)
    fixed = dict(rel.fixed)
    return {p.name: p.default for p in inspect.signature(rel.fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in fixed}


def prepare(name: str, root: str | Path, out: str | Path, **options: Any) -> Path:
    """Prepare release ``name`` found at ``root`` into ``out``; returns ``out``.

    Unknown options are an error naming the options the preparer takes."""
    rel = get(name)
    known = options_of(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise PrepareError(f"{rel.name}: unknown option(s) {', '.join(unknown)}; it takes: {', '.join(known)}")
    out = Path(out)
    root = Path(root)
    if out.resolve() == root.resolve() or out.resolve() in root.resolve().parents:
        raise PrepareError(f"{out}: the output folder would replace the release folder {root}; choose another --out")
    return rel(root, out, **options)


__all__ = ["RELEASES", "Release", "available", "get", "options_of", "prepare", "summarize", "PrepareError",
           "LabelTable"]
