"""Sensor names, wavelength checks and the choice of a scene's bands.

The user's ``--sensor`` / ``--wavelengths`` claim is checked by :func:`check_sensor`; a scene's own bands (count,
per-band wavelength metadata, band descriptions) by :func:`scene_bands`, which also returns the bands to read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .model import PredictError, PredictionModel

#: Largest per-band difference (µm) between claimed and checkpoint wavelengths that still counts as a match.
WAVELENGTH_TOLERANCE_UM = 0.02


def _registry() -> dict[str, list[float]]:
    """Sensor name → band centre wavelengths (µm, file order), from :mod:`rsmoe.sensors`."""
    from ..sensors import SENSORS

    return {name: list(sensor.wavelengths) for name, sensor in SENSORS.items()}


def _norm_sensor(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def sensor_wavelengths(name: str, sensors: dict[str, Sequence[float]] | None = None) -> list[float] | None:
    """Wavelengths (µm) of a named sensor from ``sensors`` (default: the :mod:`rsmoe.sensors` registry); ``None`` if
    unknown. Names match exactly, else ignoring case and punctuation (``sentinel2`` finds ``Sentinel-2``)."""
    table = _registry() if sensors is None else sensors
    if name in table:
        return [float(x) for x in table[name]]
    key = _norm_sensor(name)
    for k, v in table.items():
        if _norm_sensor(k) == key:
            return [float(x) for x in v]
    return None


def _fmt_wl(wl: Sequence[float]) -> str:
    return "[" + ", ".join(f"{w:.3f}" for w in wl) + "]"


def _compare_wavelengths(claimed: Sequence[float], expected: Sequence[float], what: str) -> None:
    if len(claimed) != len(expected):
        raise PredictError(
            f"{what} has {len(claimed)} band(s) {_fmt_wl(claimed)} µm but the checkpoint expects "
            f"{len(expected)} {_fmt_wl(expected)} µm"
        )
    bad = [(i, c, e) for i, (c, e) in enumerate(zip(claimed, expected)) if abs(c - e) > WAVELENGTH_TOLERANCE_UM]
    if bad:
        i, c, e = bad[0]
        raise PredictError(
            f"{what}: {_fmt_wl(claimed)} µm do not match the checkpoint's {_fmt_wl(expected)} µm "
            f"(band {i + 1}: {c:.3f} vs {e:.3f} µm, tolerance {WAVELENGTH_TOLERANCE_UM} µm)"
        )


def check_sensor(
    pm: PredictionModel,
    sensor: str | None = None,
    wavelengths: Sequence[float] | None = None,
    bands: Sequence[int] | None = None,
    sensors: dict[str, Sequence[float]] | None = None,
) -> None:
    """Check a user's ``--sensor`` / ``--wavelengths`` claim about the input against the checkpoint.

    ``sensor`` / ``wavelengths`` describe the *file's* bands; with ``bands`` (1-based) the selected bands are compared.
    Raises :class:`PredictError` (one line) on any mismatch beyond :data:`WAVELENGTH_TOLERANCE_UM` per band.
    """
    if sensor is not None and wavelengths is not None:
        raise PredictError("give either --sensor or --wavelengths, not both")
    if sensor is None and wavelengths is None:
        return
    expected = [float(w) for w in pm.wavelengths]
    if sensor is not None:
        claimed = sensor_wavelengths(sensor, sensors)
        if claimed is None:
            if pm.sensor is not None and _norm_sensor(pm.sensor) == _norm_sensor(sensor):
                return  # the checkpoint's own sensor name: nothing to compare
            known = ", ".join(_registry() if sensors is None else sensors)
            raise PredictError(f"unknown sensor {sensor!r} (known: {known}); pass --wavelengths instead")
        what = f"sensor {sensor!r}"
    else:
        claimed = [float(w) for w in wavelengths]  # type: ignore[union-attr]
        what = "--wavelengths"
    if bands is not None:
        if any(b < 1 or b > len(claimed) for b in bands):
            raise PredictError(f"--bands {list(bands)} out of range for the {len(claimed)} band(s) of {what}")
        claimed = [claimed[b - 1] for b in bands]
        what += f" with --bands {','.join(map(str, bands))}"
    _compare_wavelengths(claimed, expected, what)


def _band_wavelength_um(src, bidx: int) -> float | None:
    """Central wavelength (µm) of a band from GDAL IMAGERY metadata or an ENVI-style ``wavelength`` tag."""
    try:
        img = src.tags(bidx, ns="IMAGERY")
    except Exception:  # noqa: BLE001 - missing domain
        img = {}
    if "CENTRAL_WAVELENGTH_UM" in img:
        try:
            return float(img["CENTRAL_WAVELENGTH_UM"])
        except ValueError:
            return None
    tags = {k.lower(): v for k, v in src.tags(bidx).items()}
    if "wavelength" in tags:
        try:
            value = float(tags["wavelength"])
        except ValueError:
            return None
        units = tags.get("wavelength_units", "").lower()
        if units.startswith("nan") or units in ("nm", "nanometers", "nanometer") or (not units and value > 100):
            value /= 1000.0
        return value
    return None


def scene_bands(pm: PredictionModel, src, path: Path, bands: Sequence[int] | None) -> list[int]:
    """Check the scene's bands against the checkpoint and return the 1-based band indexes to read."""
    n_model = len(pm.wavelengths)
    names = ", ".join(f"{n} {w:.3f} µm" for n, w in zip(pm.band_names, pm.wavelengths)) or _fmt_wl(pm.wavelengths)
    if bands is None:
        if src.count != n_model:
            raise PredictError(
                f"{path.name} has {src.count} band(s) but the checkpoint expects {n_model} ({names}); "
                f"use --bands to pick them"
            )
        idx = list(range(1, n_model + 1))
    else:
        idx = [int(b) for b in bands]
        if len(idx) != n_model:
            raise PredictError(f"--bands selects {len(idx)} band(s) but the checkpoint expects {n_model} ({names})")
        if any(b < 1 or b > src.count for b in idx):
            raise PredictError(f"--bands {idx} out of range: {path.name} has {src.count} band(s)")
    wl = [_band_wavelength_um(src, b) for b in idx]
    if all(w is not None for w in wl):
        _compare_wavelengths(wl, pm.wavelengths, f"{path.name} bands {idx}")  # type: ignore[arg-type]
    descs = [src.descriptions[b - 1] for b in idx]
    model_names = [n.lower() for n in pm.band_names]
    if len(model_names) == n_model and all(d for d in descs):
        file_names = [d.lower() for d in descs]  # type: ignore[union-attr]
        if set(file_names) == set(model_names) and file_names != model_names:
            want = [idx[file_names.index(n)] for n in model_names]
            raise PredictError(
                f"{path.name} band order {descs} differs from the checkpoint's {pm.band_names}; "
                f"use --bands {','.join(map(str, want))}"
            )
    return idx


__all__ = ["WAVELENGTH_TOLERANCE_UM", "check_sensor", "scene_bands", "sensor_wavelengths"]
