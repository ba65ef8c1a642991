"""Sensor registry: band names, centre wavelengths, band ranges and ground sample distance per sensor.

Units: wavelengths and band ranges in micrometres (µm), ground sample distance (GSD) in metres.

The band order of a sensor is the order in which the bands are stored in the files that rsmoe reads (the prepared
GeoTIFF tiles). Several real releases ship more than one band order (Five-Billion-Pixels has 8-bit NIR-R-G-B and
16-bit B-G-R-NIR folders); the preparer of each release reorders bands to the order given here.

- ``GF-2``, ``GF-1``, ``PlanetScope``, ``Sentinel-2``: B, G, R, NIR. This is also the order of the synthetic
  benchmark's multispectral domains (``rsmoe.data.synthetic``). Ranges for GF-2, GF-1 and PlanetScope are those of
  the SpectralMoE supplementary material §7.1. For Sentinel-2 the paper gives only centres (0.49, 0.56, 0.66,
  0.83 µm for B2, B3, B4, B8); those centres are used here, with ESA's approximate band extents as ranges.
- ``FLAIR``: R, G, B, NIR (aerial, UltraCam Eagle Mark3 / CAMv2); the ranges are approximate typical UltraCam
  values, not calibrated spectral responses.
- ``OHS``: the 32 Orbita hyperspectral bands of WHU-OHS, centres 466…940 nm; each range is the centre ± 7.5 nm, an
  approximation (the source gives a 2.5 nm average spectral resolution but no per-band response).
- ``ISPRS-Potsdam``: R, G, B, IR; ``ISPRS-Vaihingen``: NIR, R, G (false colour). Ranges are not published with
  the benchmark, so they are ``None``; centres are nominal.
- ``RGB``: generic R, G, B (LoveDA, OpenEarthMap, SynDrone, user RGB imagery).
- ``ISPRS-Potsdam-RGB``: the R, G, B bands of Potsdam's RGBIR tiles (the release preparers store these three for
  the Potsdam→Vaihingen and MPerS tasks). ``LoveDA`` (0.3 m Google Earth), ``OpenEarthMap`` (0.25–0.5 m aerial
  and satellite; GSD given as 0.5 m) and ``SynDrone`` (CARLA UAV renders; the GSD depends on the flight height,
  about h/960 m for its 90° 1920-pixel camera, given as 0.05 m for 50 m) are R, G, B with nominal centres.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Band:
    """One spectral band: ``name``, ``center_um`` (µm) and ``range_um`` ((low, high) µm, or None if unknown)."""

    name: str
    center_um: float
    range_um: tuple[float, float] | None = None


@dataclass(frozen=True)
class Sensor:
    """A sensor: its bands in file order, ground sample distance ``gsd_m`` (metres) and a one-line description."""

    name: str
    bands: tuple[Band, ...]
    gsd_m: float
    description: str

    @property
    def wavelengths(self) -> list[float]:
        """Centre wavelength of each band, in µm, in file order."""
        return [b.center_um for b in self.bands]

    @property
    def band_names(self) -> list[str]:
        return [b.name for b in self.bands]

    @property
    def num_bands(self) -> int:
        return len(self.bands)


def _ranged(name: str, low: float, high: float) -> Band:
    """A band whose centre is the middle of its range."""
    return Band(name, round((low + high) / 2, 6), (low, high))


_GF_BANDS = (
    _ranged("blue", 0.45, 0.52),
    _ranged("green", 0.52, 0.59),
    _ranged("red", 0.63, 0.69),
    _ranged("nir", 0.77, 0.89),
)

OHS_CENTERS_NM = (
    466, 480, 500, 520, 536, 550, 566, 580, 596, 610, 626, 640, 656, 670, 686, 700,
    716, 730, 746, 760, 776, 790, 806, 820, 836, 850, 866, 880, 896, 910, 926, 940,
)
_OHS_HALF_WIDTH_UM = 0.0075


def _ohs_bands() -> tuple[Band, ...]:
    bands = []
    for i, nm in enumerate(OHS_CENTERS_NM, start=1):
        c = nm / 1000.0
        bands.append(Band(f"b{i:02d}_{nm}nm", c, (round(c - _OHS_HALF_WIDTH_UM, 6), round(c + _OHS_HALF_WIDTH_UM, 6))))
    return tuple(bands)


#: Nominal centre wavelengths (µm) of R, G, B, in the channel order of RGB-pretrained kernels (the centres of the
#: Sentinel-2 / Landsat-8 visible bands, close to the peaks of the CIE colour-matching functions).
RGB_CENTRES_UM: tuple[float, float, float] = (0.665, 0.560, 0.490)

#: R, G, B at nominal centres (µm), for sensors that publish no band ranges
_RGB_NOMINAL = tuple(Band(name, c) for name, c in zip(("red", "green", "blue"), RGB_CENTRES_UM))

SENSORS: dict[str, Sensor] = {
    s.name: s
    for s in (
        Sensor("GF-2", _GF_BANDS, 4.0, "Gaofen-2 PMS multispectral, 4 m, bands B,G,R,NIR"),
        Sensor("GF-1", _GF_BANDS, 8.0, "Gaofen-1 PMS multispectral, 8 m, band ranges as GF-2, bands B,G,R,NIR"),
        Sensor(
            "PlanetScope",
            (
                _ranged("blue", 0.46, 0.52),
                _ranged("green", 0.50, 0.59),
                _ranged("red", 0.59, 0.67),
                _ranged("nir", 0.78, 0.86),
            ),
            3.7,
            "PlanetScope CubeSat constellation, 3.7-4.1 m, bands B,G,R,NIR",
        ),
        Sensor(
            "Sentinel-2",
            (
                Band("B2", 0.49, (0.458, 0.523)),
                Band("B3", 0.56, (0.543, 0.578)),
                Band("B4", 0.66, (0.650, 0.680)),
                Band("B8", 0.83, (0.785, 0.900)),
            ),
            10.0,
            "Sentinel-2 MSI 10 m bands B2,B3,B4,B8 (centres as in the SpectralMoE paper, approximate ESA ranges)",
        ),
        Sensor(
            "FLAIR",
            (
                Band("red", 0.63, (0.58, 0.68)),
                Band("green", 0.55, (0.48, 0.62)),
                Band("blue", 0.46, (0.40, 0.52)),
                Band("nir", 0.82, (0.69, 0.95)),
            ),
            0.2,
            "FLAIR #1 IGN aerial ortho-images, 0.2 m, bands R,G,B,NIR (approximate UltraCam ranges)",
        ),
        Sensor("OHS", _ohs_bands(), 10.0, "Orbita OHS hyperspectral (WHU-OHS), 10 m, 32 bands 466-940 nm (approx.)"),
        Sensor(
            "ISPRS-Potsdam",
            (*_RGB_NOMINAL, Band("ir", 0.842)),
            0.05,
            "ISPRS Potsdam true ortho-photos, 5 cm, bands R,G,B,IR (nominal centres)",
        ),
        Sensor(
            "ISPRS-Vaihingen",
            (Band("nir", 0.842), Band("red", 0.665), Band("green", 0.56)),
            0.09,
            "ISPRS Vaihingen true ortho-photos, 9 cm, false colour bands NIR,R,G (nominal centres)",
        ),
        Sensor(
            "RGB",
            _RGB_NOMINAL,
            1.0,
            "Generic RGB imagery, bands R,G,B (GSD nominal)",
        ),
        Sensor(
            "ISPRS-Potsdam-RGB",
            _RGB_NOMINAL,
            0.05,
            "ISPRS Potsdam true ortho-photos, 5 cm, the R,G,B bands of the RGBIR tiles (nominal centres)",
        ),
        Sensor(
            "LoveDA",
            _RGB_NOMINAL,
            0.3,
            "LoveDA Google Earth imagery, 0.3 m, bands R,G,B (nominal centres)",
        ),
        Sensor(
            "OpenEarthMap",
            _RGB_NOMINAL,
            0.5,
            "OpenEarthMap aerial and satellite imagery, 0.25-0.5 m, bands R,G,B (nominal centres)",
        ),
        Sensor(
            "SynDrone",
            _RGB_NOMINAL,
            0.05,
            "SynDrone CARLA UAV renders, bands R,G,B; GSD about h/960 m at flight height h (0.05 m at 50 m)",
        ),
    )
}


def get_sensor(name: str) -> Sensor:
    """The registered sensor called ``name``; ``KeyError`` listing the known names otherwise."""
    try:
        return SENSORS[name]
    except KeyError:
        raise KeyError(f"unknown sensor {name!r}; known sensors: {', '.join(SENSORS)}") from None


def _distance_key(a: float, b: float) -> int:
    """|a − b| in picometres, rounded: exact ties (e.g. 480 and 500 nm around 490 nm) stay ties in floating point."""
    return round(abs(a - b) * 1e6)


def nearest_band(wavelengths: Sequence[float], target: float) -> int:
    """Index of the band whose centre (µm) is nearest ``target`` (µm); ties go to the lower index.

    Distances are compared at picometre resolution, so two bands equally far from the target are a tie rather than
    a floating-point coin toss (for [0.63, 0.70] around 0.665 µm the first band wins)."""
    wl = [float(w) for w in wavelengths]
    if not wl:
        raise ValueError("nearest_band: no wavelengths given")
    return min(range(len(wl)), key=lambda i: (_distance_key(wl[i], target), i))


def rgb_band_indices(wavelengths: Sequence[float]) -> list[int]:
    """Indices of the bands that stand for R, G and B (nearest :data:`RGB_CENTRES_UM`), in R, G, B order.

    The one rule rsmoe uses wherever an RGB-only model or picture needs three bands of a multispectral image (the
    depth branch, previews, the CLIP caption check). With fewer than three distinct bands an index can repeat."""
    return [nearest_band(wavelengths, c) for c in RGB_CENTRES_UM]


#: A sensor "has" a colour when a band centre lies within this distance (µm) of its nominal centre.
COLOUR_TOLERANCE_UM = 0.05
#: Bands beyond this centre (µm) are near infrared for display purposes; the false-colour composite takes the one
#: nearest :data:`NIR_DISPLAY_UM`.
NIR_FROM_UM = 0.70
NIR_DISPLAY_UM = 0.842


def display_band_indices(wavelengths: Sequence[float]) -> list[int]:
    """The three bands to show as a picture's R, G, B: true colour when the sensor has red, green and blue bands
    (:func:`rgb_band_indices`), else the standard false-colour composite NIR → R, red → G, green → B (e.g.
    ISPRS Vaihingen's NIR-R-G tiles, shown as they are published), else the nearest bands."""
    wl = [float(w) for w in wavelengths]
    has = [any(abs(w - c) <= COLOUR_TOLERANCE_UM for w in wl) for c in RGB_CENTRES_UM]
    nir = nearest_band(wl, NIR_DISPLAY_UM)
    if all(has) or wl[nir] <= NIR_FROM_UM or not (has[0] and has[1]):
        return rgb_band_indices(wl)
    return [nir, nearest_band(wl, RGB_CENTRES_UM[0]), nearest_band(wl, RGB_CENTRES_UM[1])]
