"""The synthetic spectral-shift benchmark: rsmoe's own data for the demo and the tests.

Two prepared datasets (see :mod:`rsmoe.data.prepared`) are written by :func:`synthesize`:

``multispectral`` (cross-sensor)
    Domains ``GF-2`` (source: ``train``, ``val``), ``GF-1``, ``PlanetScope``, ``Sentinel-2`` (targets: ``test``).
    Every domain holds its own scenes drawn from the same landscape model (``Region-A``), so the shift between
    domains is the sensor: band ranges, resolution, radiometry, noise and bit depth. Bands are stored B, G, R, NIR
    for all four sensors (the registry's order).
``hyperspectral`` (cross-regional)
    32-band OHS tiles; domains ``Region-A`` (source: ``train``, ``val``), ``Region-B`` and ``Region-C`` (targets:
    ``test``). The regions differ in class priors, parcel size, texture scale and vegetation dryness.

Classes (index = mask value): water, forest, cropland, grassland, built-up, road, bare soil; 255 = ignore (a tenth
of the tiles carry a no-data border strip, image value 0, like the padding of real scenes).

How a tile is made
------------------
1. **Labels** (:func:`make_labels`): a rotated grid of agricultural parcels (cropland, grassland, bare soil,
   forest), forest patches from thresholded smooth noise, an urban zone with a street grid and rectangular
   buildings, water bodies (smooth blobs or a meandering river) and straight roads. Every pixel also carries an
   object id (a parcel, a building, a road, a connected patch).
2. **Spectra** (:func:`class_spectra`): two endmember reflectance spectra per class on a 1 nm grid, 400–1000 nm
   (vegetation with its green peak, red absorption and red edge; water absorbing beyond 700 nm; soils rising
   slowly; flat-ish built-up surfaces and asphalt). Each object gets a brightness factor and a smooth spectral shape
   perturbation; each pixel mixes the class's two endmembers (e.g. crop and soil, green and dry grass, clear and
   turbid water, concrete and tile roofs) with an object-level fraction plus smooth per-pixel noise, and is scaled by
   a per-pixel texture field and a per-tile illumination factor. This defines the scene reflectance cube
   ``rho(lambda, y, x)`` (:class:`Scene`, materialised by :meth:`Scene.cube`). Because every later step is linear
   until the radiometry, the cube is kept factored (objects × spectra) and integrated per object.
3. **Sensor** (:func:`render_scene`): band-integrate the cube over each band's spectral response (a boxcar over
   the registry's band range; a Gaussian with FWHM = range width for OHS), then simulate the sensor's coarser ground
   sample distance on the *same tile grid* by a Gaussian point-spread blur of
   ``sigma = 0.5 * sqrt((gsd / ref_gsd)**2 - 1)`` pixels (0 when the sensor is as fine as the reference: GF-2 at
   4 m for the multispectral set, OHS itself for the hyperspectral one), then ``DN = gain * rho + offset`` per band,
   additive Gaussian noise (in DN), rounding and clipping to the sensor's bit depth (:data:`RADIOMETRY`).
   Tiles therefore keep the pixel count and label grid of the scene; the geotransform written with each tile uses
   the sensor's nominal GSD as pixel size, so it is plausible metadata rather than an exact ground footprint.
4. **Heights** (:func:`make_heights`): terrain (smooth relief of 0–20 m), flat water at the level of its lowest
   shore, roads and bare soil at ground level, crops 0.1–1.5 m, flat-roofed buildings 3–40 m and tree canopies
   5–25 m. Written as the optional ``heights/`` layer of the prepared format (float32 metres above the tile's
   lowest ground point; NaN on the no-data border). They are drawn after every draw of the image and the mask, so
   adding them left the benchmark's pixels unchanged (generator version 1). The benchmark's images carry no shadows
   or shading; the pretraining corpus (:mod:`rsmoe.pretrain.corpus`) renders both.

All randomness comes from ``numpy.random.default_rng`` seeded per tile from ``(seed, dataset, domain, split,
index)``: the same seed gives identical pixels, another seed different ones. CRS: EPSG:32650 (UTM 50N).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml
from rasterio.crs import CRS
from rasterio.transform import Affine
from scipy import ndimage
from tqdm.auto import tqdm

from rsmoe.data.prepared import IGNORE_INDEX, PreparedWriter
from rsmoe.sensors import Sensor, get_sensor

GENERATOR_VERSION = 1

CLASSES = ("water", "forest", "cropland", "grassland", "built-up", "road", "bare soil")
PALETTE = (
    (0, 92, 230),
    (0, 110, 40),
    (240, 200, 60),
    (150, 220, 110),
    (220, 40, 40),
    (120, 120, 120),
    (170, 120, 70),
)
WATER, FOREST, CROPLAND, GRASSLAND, BUILT, ROAD, BARE = range(7)
VEGETATION = (FOREST, CROPLAND, GRASSLAND)

GRID_UM = np.arange(400, 1001, dtype=np.float64) / 1000.0
"""Spectral grid of the scene reflectance, µm (1 nm steps, 400–1000 nm)."""

CRS_EPSG = 32650
NODATA_TILE_FRACTION = 0.1
PSF_K = 0.5

# (wavelength nm, reflectance) anchors; per class a main endmember and an alternative one mixed in per pixel.
_ANCHORS: dict[int, tuple[list[tuple[float, float]], list[tuple[float, float]]]] = {
    WATER: (  # clear water / turbid (sediment-laden) water
        [(400, 0.060), (450, 0.065), (500, 0.060), (550, 0.055), (600, 0.035), (650, 0.025), (700, 0.012),
         (750, 0.006), (800, 0.004), (1000, 0.002)],
        [(400, 0.060), (500, 0.080), (550, 0.100), (600, 0.100), (650, 0.090), (700, 0.060), (750, 0.030),
         (800, 0.020), (900, 0.010), (1000, 0.005)],
    ),
    FOREST: (  # broadleaf canopy / darker conifer canopy
        [(400, 0.025), (440, 0.030), (490, 0.035), (520, 0.055), (550, 0.085), (580, 0.072), (600, 0.062),
         (630, 0.045), (660, 0.032), (675, 0.027), (690, 0.040), (705, 0.100), (720, 0.200), (740, 0.300),
         (760, 0.360), (800, 0.380), (900, 0.390), (950, 0.370), (970, 0.330), (1000, 0.350)],
        [(400, 0.020), (490, 0.025), (550, 0.050), (610, 0.030), (670, 0.020), (690, 0.030), (705, 0.060),
         (740, 0.180), (780, 0.240), (900, 0.250), (970, 0.210), (1000, 0.230)],
    ),
    CROPLAND: (  # vigorous crop / bare field soil
        [(400, 0.030), (490, 0.040), (520, 0.065), (550, 0.120), (580, 0.100), (600, 0.082), (630, 0.055),
         (660, 0.040), (675, 0.034), (690, 0.050), (700, 0.090), (720, 0.250), (750, 0.420), (800, 0.480),
         (900, 0.500), (970, 0.440), (1000, 0.460)],
        [(400, 0.090), (500, 0.130), (600, 0.190), (700, 0.240), (800, 0.280), (900, 0.300), (1000, 0.320)],
    ),
    GRASSLAND: (  # green grass / dry senescent grass
        [(400, 0.040), (490, 0.050), (550, 0.100), (580, 0.092), (600, 0.085), (630, 0.068), (660, 0.057),
         (675, 0.053), (690, 0.065), (700, 0.100), (730, 0.220), (760, 0.300), (800, 0.330), (1000, 0.320)],
        [(400, 0.060), (500, 0.090), (550, 0.120), (600, 0.150), (650, 0.170), (700, 0.200), (750, 0.240),
         (800, 0.260), (1000, 0.280)],
    ),
    BUILT: (  # concrete / grey roofs, red tile roofs
        [(400, 0.180), (500, 0.210), (600, 0.230), (700, 0.240), (800, 0.250), (1000, 0.260)],
        [(400, 0.070), (500, 0.080), (560, 0.100), (600, 0.200), (650, 0.270), (700, 0.300), (800, 0.330),
         (1000, 0.350)],
    ),
    ROAD: (  # asphalt / concrete
        [(400, 0.070), (500, 0.080), (600, 0.090), (700, 0.100), (800, 0.110), (1000, 0.120)],
        [(400, 0.200), (600, 0.250), (1000, 0.280)],
    ),
    BARE: (  # dry bare soil / wet dark soil
        [(400, 0.100), (500, 0.140), (600, 0.200), (700, 0.250), (800, 0.290), (900, 0.310), (1000, 0.330)],
        [(400, 0.060), (500, 0.080), (600, 0.110), (700, 0.140), (800, 0.160), (1000, 0.190)],
    ),
}

# Per class: Beta(a, b) of the object-level alternative-endmember fraction, per-pixel fraction noise amplitude,
# texture amplitude (relative brightness std of the smooth texture field).
_VARIABILITY = {
    WATER: (1.0, 6.0, 0.05, 0.02),
    FOREST: (1.5, 5.0, 0.10, 0.12),
    CROPLAND: (1.0, 4.0, 0.10, 0.06),
    GRASSLAND: (2.0, 4.0, 0.12, 0.06),
    BUILT: (0.3, 0.6, 0.0, 0.05),
    ROAD: (0.5, 2.0, 0.0, 0.03),
    BARE: (1.5, 3.0, 0.10, 0.06),
}


def class_spectra(grid_um: np.ndarray = GRID_UM) -> tuple[np.ndarray, np.ndarray]:
    """Main and alternative endmember reflectance of each class on ``grid_um``: two arrays (7, len(grid))."""
    main, alt = _class_spectra(tuple(float(g) for g in np.asarray(grid_um).ravel()))
    return main.copy(), alt.copy()


@functools.lru_cache(maxsize=4)
def _class_spectra(grid: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    grid_nm = np.asarray(grid, dtype=np.float64) * 1000.0
    out = []
    for which in (0, 1):
        spectra = []
        for c in range(len(CLASSES)):
            pts = np.array(_ANCHORS[c][which], dtype=np.float64)
            fine = np.arange(400.0, 1001.0)
            s = ndimage.gaussian_filter1d(np.interp(fine, pts[:, 0], pts[:, 1]), 4.0, mode="nearest")
            spectra.append(np.interp(grid_nm, fine, s))
        out.append(np.stack(spectra))
    return out[0], out[1]


@dataclass(frozen=True)
class Region:
    """Landscape model of one region: class priors, object sizes and textures (all sizes in pixels)."""

    name: str
    parcel_px: float = 18.0
    parcel_prior: tuple[float, float, float, float] = (0.55, 0.25, 0.12, 0.08)  # cropland, grassland, bare, forest
    forest_prob: float = 0.5
    forest_frac: float = 0.2
    forest_scale: float = 4.0
    water_prob: float = 0.45
    water_frac: float = 0.15
    water_scale: float = 7.0
    urban_prob: float = 0.35
    urban_frac: float = 0.4
    building_density: float = 1.4
    roads_mean: float = 1.2
    texture_scale: float = 2.0
    dryness: float = 0.0


REGIONS: dict[str, Region] = {
    r.name: r
    for r in (
        Region("Region-A"),
        # Dense, fine-grained peri-urban landscape: small parcels, many buildings and roads, drier vegetation.
        Region(
            "Region-B", parcel_px=11.0, parcel_prior=(0.35, 0.35, 0.25, 0.05), forest_prob=0.25, forest_frac=0.12,
            forest_scale=2.5, water_prob=0.3, water_frac=0.1, water_scale=4.0, urban_prob=0.7, urban_frac=0.55,
            building_density=2.0, roads_mean=2.0, texture_scale=1.0, dryness=0.25,
        ),
        # Wet, forested, coarse-grained landscape: large parcels, lakes and rivers, little urban land.
        Region(
            "Region-C", parcel_px=28.0, parcel_prior=(0.45, 0.3, 0.05, 0.2), forest_prob=0.8, forest_frac=0.35,
            forest_scale=6.0, water_prob=0.7, water_frac=0.22, water_scale=10.0, urban_prob=0.12,
            urban_frac=0.25, building_density=0.8, roads_mean=0.7, texture_scale=3.5, dryness=-0.05,
        ),
    )
}


@dataclass(frozen=True)
class Radiometry:
    """How a sensor turns band reflectance into stored numbers: ``DN = gain * rho + offset + noise``, rounded and
    clipped to ``[dn_min, dn_max]``, stored as ``dtype``. ``srf`` is the band response shape (boxcar/gaussian)."""

    gain: tuple[float, ...]
    offset: tuple[float, ...]
    noise_dn: tuple[float, ...]
    dn_min: int
    dn_max: int
    dtype: str
    srf: str = "boxcar"
    note: str = ""


def _ohs_noise() -> tuple[float, ...]:
    # Noisier at the ends of the spectral range, where the detector is less sensitive.
    centres = np.array(get_sensor("OHS").wavelengths)
    edge = np.clip(np.maximum(0.52 - centres, centres - 0.88) / 0.06, 0.0, 1.0)
    return tuple(float(v) for v in np.round(30.0 * (1.0 + 1.5 * edge), 2))


RADIOMETRY: dict[str, Radiometry] = {
    "GF-2": Radiometry((1150.0, 1200.0, 1250.0, 1100.0), (30.0, 25.0, 20.0, 15.0), (2.5,) * 4, 0, 1023, "uint16",
                       note="10-bit DN in uint16"),
    "GF-1": Radiometry((1000.0, 1050.0, 1080.0, 960.0), (45.0, 40.0, 30.0, 20.0), (3.0,) * 4, 0, 1023, "uint16",
                       note="10-bit DN in uint16"),
    "PlanetScope": Radiometry((4000.0, 4100.0, 4200.0, 3900.0), (80.0, 60.0, 50.0, 40.0), (10.0,) * 4, 0, 4095,
                              "uint16", note="12-bit DN in uint16"),
    "Sentinel-2": Radiometry((10000.0,) * 4, (1000.0,) * 4, (25.0,) * 4, 0, 65535, "uint16",
                             note="L2A-style reflectance x 10000 with the +1000 offset of processing baseline 04.00"),
    "OHS": Radiometry((10000.0,) * 32, (0.0,) * 32, _ohs_noise(), -32768, 32767, "int16", srf="gaussian",
                      note="reflectance x 10000 in int16, as WHU-OHS"),
}


def get_radiometry(sensor: str) -> Radiometry:
    try:
        return RADIOMETRY[sensor]
    except KeyError:
        raise KeyError(
            f"the synthetic benchmark cannot render sensor {sensor!r}; renderable sensors: {', '.join(RADIOMETRY)}"
        ) from None


def band_responses(sensor: Sensor | str, grid_um: np.ndarray = GRID_UM, shape: str | None = None) -> np.ndarray:
    """Spectral response of each band of ``sensor`` on ``grid_um``: (C, len(grid)) weights, each row summing to 1.

    ``shape``: ``"boxcar"`` (uniform over the band range) or ``"gaussian"`` (centred on the band centre, FWHM = the
    range width); default from :data:`RADIOMETRY` (boxcar for sensors it does not know).
    """
    s = get_sensor(sensor) if isinstance(sensor, str) else sensor
    if shape is None:
        shape = RADIOMETRY[s.name].srf if s.name in RADIOMETRY else "boxcar"
    grid = np.asarray(grid_um, dtype=np.float64)
    rows = []
    for b in s.bands:
        if b.range_um is None:
            raise ValueError(f"sensor {s.name} band {b.name} has no band range; cannot integrate a spectrum over it")
        lo, hi = b.range_um
        if shape == "boxcar":
            w = ((grid >= lo - 1e-9) & (grid <= hi + 1e-9)).astype(np.float64)
        elif shape == "gaussian":
            sigma = (hi - lo) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
            w = np.exp(-0.5 * ((grid - b.center_um) / sigma) ** 2)
        else:
            raise ValueError(f"unknown band response shape {shape!r}; use 'boxcar' or 'gaussian'")
        if w.sum() == 0:
            raise ValueError(f"sensor {s.name} band {b.name} range {b.range_um} misses the spectral grid")
        rows.append(w / w.sum())
    return np.stack(rows)


def psf_sigma(sensor: Sensor | str, ref_gsd_m: float) -> float:
    """Gaussian blur (pixels of the reference grid) that turns a ``ref_gsd_m`` image into one at the sensor's GSD."""
    s = get_sensor(sensor) if isinstance(sensor, str) else sensor
    ratio = s.gsd_m / float(ref_gsd_m)
    return PSF_K * math.sqrt(ratio * ratio - 1.0) if ratio > 1.0 else 0.0


# --------------------------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------------------------


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered white noise of ``shape`` (correlation length ``sigma`` pixels, wrapped)."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape), max(sigma, 0.3), mode="wrap")
    n -= n.mean()
    return n / (n.std() + 1e-12)


@dataclass
class LabelCanvas:
    """The label map under construction: pixel grid, the rotated parcel-grid axes ``u``/``v`` (pixels, angle
    ``theta``), class indices ``labels`` (uint8) and object ids ``objects`` (int32, not yet compacted)."""

    size: int
    theta: float
    xx: np.ndarray
    yy: np.ndarray
    u: np.ndarray
    v: np.ndarray
    labels: np.ndarray | None = None
    objects: np.ndarray | None = None
    next_id: int = 0

    @classmethod
    def start(cls, rng: np.random.Generator, size: int) -> "LabelCanvas":
        """A blank ``size``×``size`` canvas whose parcel grid is rotated by a random angle in [0, π)."""
        h = w = int(size)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        theta = rng.uniform(0.0, math.pi)
        cos_t, sin_t = math.cos(theta), math.sin(theta)
        return cls(int(size), theta, xx, yy, xx * cos_t + yy * sin_t, -xx * sin_t + yy * cos_t)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    def paint(self, mask: np.ndarray, cls: int, components: bool = True) -> None:
        """Set ``mask`` to class ``cls``; its pixels get new object ids (one per connected component, or one in
        all with ``components=False``)."""
        if not mask.any():
            return
        self.labels[mask] = cls
        if components:
            comp, n = ndimage.label(mask)
            self.objects[mask] = comp[mask] - 1 + self.next_id
            self.next_id += n
        else:
            self.objects[mask] = self.next_id
            self.next_id += 1

    def compact_objects(self) -> np.ndarray:
        """Object ids renumbered 0..n-1 in increasing order of the raw ids (int32, H×W)."""
        _, compact = np.unique(self.objects, return_inverse=True)
        return compact.reshape(self.shape).astype(np.int32)


def _parcels(rng: np.random.Generator, canvas: LabelCanvas, region: Region) -> None:
    """Rows of a rotated grid of agricultural parcels, each row with its own parcel width and phase."""
    u, v = canvas.u, canvas.v
    pw = region.parcel_px * rng.uniform(0.75, 1.3)
    ph = pw * rng.uniform(0.35, 0.9)
    vrow = np.floor((v - v.min() + rng.uniform(0.0, ph)) / ph).astype(np.int64)
    nrows = int(vrow.max()) + 1
    widths = pw * rng.uniform(0.6, 1.4, nrows)
    phases = rng.uniform(0.0, pw, nrows)
    ucol = np.floor((u - u.min() + phases[vrow]) / widths[vrow]).astype(np.int64)
    _, parcel = np.unique(vrow * 100000 + ucol, return_inverse=True)
    parcel = parcel.reshape(canvas.shape)
    parcel_cls = rng.choice(np.array([CROPLAND, GRASSLAND, BARE, FOREST]), size=int(parcel.max()) + 1,
                            p=np.asarray(region.parcel_prior) / sum(region.parcel_prior))
    canvas.labels = parcel_cls[parcel].astype(np.uint8)
    canvas.objects = parcel.astype(np.int32)
    canvas.next_id = int(canvas.objects.max()) + 1


def _urban_zone(rng: np.random.Generator, canvas: LabelCanvas, region: Region) -> np.ndarray:
    """Urban zone (lawns / vacant lots between the buildings to come) painted; returns its mask."""
    urban = np.zeros(canvas.shape, dtype=bool)
    if rng.random() < region.urban_prob:
        frac = float(np.clip(region.urban_frac * rng.uniform(0.5, 1.5), 0.05, 0.95))
        n = smooth_noise(rng, canvas.shape, canvas.size / 4.0)
        urban = n > np.quantile(n, 1.0 - frac)
        canvas.paint(urban, GRASSLAND if rng.random() < 0.6 else BARE)
    return urban


def _forest_patches(rng: np.random.Generator, canvas: LabelCanvas, region: Region, urban: np.ndarray) -> None:
    """Forest patches: thresholded smooth noise outside the urban zone."""
    if rng.random() < region.forest_prob:
        frac = float(np.clip(region.forest_frac * rng.uniform(0.4, 1.6), 0.02, 0.9))
        n = smooth_noise(rng, canvas.shape, region.forest_scale * rng.uniform(0.8, 1.25))
        canvas.paint((n > np.quantile(n, 1.0 - frac)) & ~urban, FOREST)


def _water(rng: np.random.Generator, canvas: LabelCanvas, region: Region) -> np.ndarray:
    """A smooth blob (lake, pond) or a meandering river, painted; returns the water mask."""
    xx, yy, size = canvas.xx, canvas.yy, canvas.size
    water = np.zeros(canvas.shape, dtype=bool)
    if rng.random() < region.water_prob:
        if rng.random() < 0.6:
            frac = float(np.clip(region.water_frac * rng.uniform(0.4, 1.8), 0.02, 0.6))
            cy, cx = rng.uniform(0, size), rng.uniform(0, size)
            bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * (size / 3.0) ** 2))
            n = smooth_noise(rng, canvas.shape, region.water_scale) + 3.0 * bump
            water = n > np.quantile(n, 1.0 - frac)
        else:
            phi = rng.uniform(0.0, math.pi)
            a = xx * math.cos(phi) + yy * math.sin(phi)
            b = -xx * math.sin(phi) + yy * math.cos(phi)
            centre = rng.uniform(b.min() + 0.25 * (b.max() - b.min()), b.max() - 0.25 * (b.max() - b.min()))
            amp, period = rng.uniform(2.0, size / 6.0), rng.uniform(size / 2.0, 1.5 * size)
            course = centre + amp * np.sin(2.0 * math.pi * a / period + rng.uniform(0, 2 * math.pi))
            water = np.abs(b - course) < rng.uniform(1.5, max(2.0, region.water_scale / 2.0))
        canvas.paint(water, WATER)
    return water


def _roads(rng: np.random.Generator, canvas: LabelCanvas, region: Region, urban: np.ndarray,
           water: np.ndarray) -> np.ndarray:
    """Straight roads (mostly along the parcel grid) and the urban street grid, painted; returns the road mask."""
    xx, yy, theta = canvas.xx, canvas.yy, canvas.theta
    road = np.zeros(canvas.shape, dtype=bool)
    for _ in range(int(rng.poisson(region.roads_mean))):
        if rng.random() < 0.7:
            ang = theta + (0.0 if rng.random() < 0.5 else math.pi / 2)
        else:
            ang = rng.uniform(0.0, math.pi)
        py, px = rng.uniform(0, canvas.size), rng.uniform(0, canvas.size)
        dist = np.abs(-(xx - px) * math.sin(ang) + (yy - py) * math.cos(ang))
        line = dist < rng.choice([0.6, 1.0, 1.0, 1.5])
        road |= line
        canvas.paint(line, ROAD, components=False)
    if urban.any():
        block = rng.uniform(12.0, 20.0)
        width = rng.choice([1.0, 1.5, 2.0])
        grid = ((np.mod(canvas.u + rng.uniform(0, block), block) < width)
                | (np.mod(canvas.v + rng.uniform(0, block), block) < width))
        streets = grid & urban & ~water
        road |= streets
        canvas.paint(streets, ROAD, components=False)
    return road


def _buildings(rng: np.random.Generator, canvas: LabelCanvas, region: Region, urban: np.ndarray,
               road: np.ndarray, water: np.ndarray) -> None:
    """Rectangular buildings aligned with the street grid, in the urban zone, not touching each other."""
    if not urban.any():
        return
    u, v = canvas.u, canvas.v
    free = urban & ~road & ~water
    built = np.zeros(canvas.shape, dtype=bool)
    n_build = int(region.building_density * free.sum() / 25.0)
    candidates = np.flatnonzero(free)
    for _ in range(n_build):
        if candidates.size == 0:
            break
        k = candidates[rng.integers(candidates.size)]
        cy, cx = divmod(int(k), canvas.size)
        uc, vc = u[cy, cx], v[cy, cx]
        bw, bh = rng.uniform(2.5, 8.0), rng.uniform(2.5, 6.0)
        rect = (np.abs(u - uc) < bw / 2) & (np.abs(v - vc) < bh / 2) & free
        if not rect.any() or (ndimage.binary_dilation(rect) & built).any():
            continue
        built |= rect
        canvas.paint(rect, BUILT, components=False)


def make_labels(rng: np.random.Generator, size: int, region: Region) -> tuple[np.ndarray, np.ndarray]:
    """A ``size``×``size`` land-cover map (uint8 class indices) and an object-id map (int32, 0..n-1).

    Layers, each painted over the previous ones: parcels, the urban zone, forest patches, water, roads, buildings.
    """
    canvas = LabelCanvas.start(rng, size)
    _parcels(rng, canvas, region)
    urban = _urban_zone(rng, canvas, region)
    _forest_patches(rng, canvas, region, urban)
    water = _water(rng, canvas, region)
    road = _roads(rng, canvas, region, urban, water)
    _buildings(rng, canvas, region, urban, road, water)
    return canvas.labels, canvas.compact_objects()


@dataclass
class Scene:
    """A scene's reflectance, kept factored: ``rho(lambda, p) = texture(p) * ((1 - mix(p)) * main[obj(p)](lambda)
    + mix(p) * alt[obj(p)](lambda))`` on the spectral grid ``grid_um``; ``labels`` are the class indices."""

    labels: np.ndarray  # (H, W) uint8
    objects: np.ndarray  # (H, W) int32
    main: np.ndarray  # (n_objects, n_grid) reflectance
    alt: np.ndarray  # (n_objects, n_grid) reflectance
    mix: np.ndarray  # (H, W) in [0, 1]
    texture: np.ndarray  # (H, W) multiplicative, includes the tile's illumination
    grid_um: np.ndarray = field(default_factory=lambda: GRID_UM.copy())

    def cube(self) -> np.ndarray:
        """The full reflectance cube (n_grid, H, W), float64 (for inspection and tests; large)."""
        m = self.mix[None]
        return self.texture[None] * ((1.0 - m) * self.main.T[:, self.objects] + m * self.alt.T[:, self.objects])

    def band_reflectance(self, responses: np.ndarray) -> np.ndarray:
        """Band-integrated reflectance (C, H, W) for band responses (C, n_grid) (see :func:`band_responses`)."""
        main_b = self.main @ responses.T  # (n_objects, C)
        alt_b = self.alt @ responses.T
        m = self.mix[None]
        return self.texture[None] * ((1.0 - m) * main_b.T[:, self.objects] + m * alt_b.T[:, self.objects])


def make_scene(rng: np.random.Generator, size: int, region: Region, grid_um: np.ndarray = GRID_UM) -> Scene:
    """Draw labels, per-object spectra and per-pixel mixing/texture for one ``size``×``size`` scene."""
    labels, objects = make_labels(rng, size, region)
    n_obj = int(objects.max()) + 1
    obj_cls = np.zeros(n_obj, dtype=np.int64)
    obj_cls[objects.ravel()] = labels.ravel()
    base_main, base_alt = class_spectra(grid_um)

    brightness = np.clip(np.exp(rng.normal(0.0, 0.07, n_obj)), 0.8, 1.25)
    lam = (np.asarray(grid_um) - 0.4) / 0.6  # 0..1 over 400–1000 nm
    a1, a2 = rng.normal(0.0, 0.03, n_obj), rng.normal(0.0, 0.03, n_obj)
    phase = rng.uniform(0.0, 2.0 * math.pi, n_obj)
    tilt = a1[:, None] * (2.0 * lam[None] - 1.0)
    wave = a2[:, None] * np.sin(2.0 * math.pi * lam[None] + phase[:, None])
    shape = 1.0 + tilt + wave
    scale = np.clip(shape, 0.5, 1.5) * brightness[:, None]
    main = base_main[obj_cls] * scale
    alt = base_alt[obj_cls] * scale

    a = np.array([_VARIABILITY[c][0] for c in range(len(CLASSES))])
    b = np.array([_VARIABILITY[c][1] for c in range(len(CLASSES))])
    mix0 = rng.beta(a[obj_cls], b[obj_cls])
    veg = np.isin(obj_cls, VEGETATION)
    mix0[veg] = np.clip(mix0[veg] + region.dryness, 0.0, 1.0)
    mix_amp = np.array([_VARIABILITY[c][2] for c in range(len(CLASSES))])[labels]
    mix = np.clip(mix0[objects] + mix_amp * smooth_noise(rng, labels.shape, 1.5), 0.0, 1.0)

    tex_amp = np.array([_VARIABILITY[c][3] for c in range(len(CLASSES))])[labels]
    texture = 1.0 + tex_amp * smooth_noise(rng, labels.shape, region.texture_scale)
    texture += 0.02 * smooth_noise(rng, labels.shape, 0.5)
    texture = np.clip(texture, 0.6, 1.4) * rng.uniform(0.92, 1.08)
    return Scene(labels, objects, main, alt, mix, texture, np.asarray(grid_um, dtype=np.float64))


# --------------------------------------------------------------------------------------------------------------
# Heights
# --------------------------------------------------------------------------------------------------------------

BUILDING_HEIGHT_M = (3.0, 40.0)
TREE_HEIGHT_M = (5.0, 25.0)
RELIEF_M = (0.0, 20.0)
"""Ranges (metres) of building heights, tree heights and the terrain relief of one tile."""


@dataclass
class HeightField:
    """Heights of a scene in metres above the tile's lowest ground point (float64, H×W each): ``ground`` is the
    terrain (flat under each water body, at the level of its lowest shore), ``surface`` the terrain plus what stands
    on it (buildings with flat roofs, tree canopies, crops)."""

    ground: np.ndarray
    surface: np.ndarray


def make_heights(rng: np.random.Generator, labels: np.ndarray, objects: np.ndarray) -> HeightField:
    """Draw the height field of a scene from its class and object maps (H×W).

    Terrain: smooth noise at a third of the tile, scaled to a relief drawn from :data:`RELIEF_M`. Water: flat at
    the lowest terrain of each water object. Roads, bare soil and grass: at ground level (grass +0.1 m). Crops:
    0.1–1.5 m per parcel. Buildings: flat roofs, 3 m per floor (1 + a geometric number of floors, p = 0.3) plus
    0–1.5 m, clipped to :data:`BUILDING_HEIGHT_M`, on the mean terrain of their footprint. Trees: a canopy mean of
    8–22 m per forest object with ±2.5 m crown texture, clipped to :data:`TREE_HEIGHT_M`. The draws are a fixed
    number per tile (per object, not per class), so a tile's heights never shift another layer's random stream.
    """
    shape = labels.shape
    n_obj = int(objects.max()) + 1
    obj_cls = np.zeros(n_obj, dtype=np.int64)
    obj_cls[objects.ravel()] = labels.ravel()
    relief = rng.uniform(*RELIEF_M)
    terrain = smooth_noise(rng, shape, max(shape) / 3.0)
    span = terrain.max() - terrain.min()
    ground = relief * (terrain - terrain.min()) / (span if span > 0 else 1.0)
    floors = 1 + rng.geometric(0.3, n_obj)
    building = np.clip(3.0 * floors + rng.uniform(0.0, 1.5, n_obj), *BUILDING_HEIGHT_M)
    canopy = rng.uniform(8.0, 22.0, n_obj)
    crop = rng.uniform(0.1, 1.5, n_obj)
    crowns = 2.5 * smooth_noise(rng, shape, 1.0)

    index = objects.ravel()
    count = np.bincount(index, minlength=n_obj).astype(np.float64)
    mean_ground = np.bincount(index, weights=ground.ravel(), minlength=n_obj) / np.maximum(count, 1.0)
    lowest = np.full(n_obj, np.inf)
    np.minimum.at(lowest, index, ground.ravel())
    water = labels == WATER
    ground = np.where(water, lowest[objects], ground)
    built = labels == BUILT
    ground = np.where(built, mean_ground[objects], ground)

    above = np.zeros(shape)
    above[built] = building[objects[built]]
    forest = labels == FOREST
    above[forest] = np.clip(canopy[objects[forest]] + crowns[forest], *TREE_HEIGHT_M)
    crops = labels == CROPLAND
    above[crops] = crop[objects[crops]]
    above[labels == GRASSLAND] = 0.1
    return HeightField(ground=ground, surface=ground + above)


# --------------------------------------------------------------------------------------------------------------
# Sensors
# --------------------------------------------------------------------------------------------------------------


def render_reflectance(scene: Scene, sensor: str, ref_gsd_m: float) -> np.ndarray:
    """Band reflectance (C, H, W) float64 of ``scene`` seen by ``sensor``: band integration and PSF blur only."""
    s = get_sensor(sensor)
    refl = scene.band_reflectance(band_responses(s, scene.grid_um))
    sigma = psf_sigma(s, ref_gsd_m)
    if sigma > 0:
        refl = ndimage.gaussian_filter(refl, (0.0, sigma, sigma), mode="reflect")
    return refl


def render_scene(
    scene: Scene,
    sensor: str,
    rng: np.random.Generator | None = None,
    ref_gsd_m: float = 4.0,
    noise: bool = True,
) -> np.ndarray:
    """Stored pixel values (C, H, W) of ``scene`` seen by ``sensor`` (dtype of :data:`RADIOMETRY`).

    ``ref_gsd_m`` is the ground sample distance the scene grid stands for; ``noise=False`` skips the additive
    noise (then ``rng`` is not needed).
    """
    rad = get_radiometry(sensor)
    refl = render_reflectance(scene, sensor, ref_gsd_m)
    dn = refl * np.asarray(rad.gain)[:, None, None] + np.asarray(rad.offset)[:, None, None]
    if noise:
        if rng is None:
            raise ValueError("render_scene: noise=True needs an rng")
        dn = dn + rng.standard_normal(dn.shape) * np.asarray(rad.noise_dn)[:, None, None]
    return np.clip(np.rint(dn), rad.dn_min, rad.dn_max).astype(rad.dtype)


def render_sensors(
    scene: Scene,
    sensors: Sequence[str],
    rng: np.random.Generator | None = None,
    ref_gsd_m: float = 4.0,
    noise: bool = True,
) -> dict[str, np.ndarray]:
    """The same scene through several sensors: ``{sensor: stored values (C, H, W)}``."""
    return {s: render_scene(scene, s, rng, ref_gsd_m, noise) for s in sensors}


def to_reflectance(dn: np.ndarray, sensor: str) -> np.ndarray:
    """Undo a sensor's gain and offset: stored values (C, H, W) → band reflectance, float64."""
    rad = get_radiometry(sensor)
    offset, gain = np.asarray(rad.offset)[:, None, None], np.asarray(rad.gain)[:, None, None]
    return (np.asarray(dn, dtype=np.float64) - offset) / gain


# --------------------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------------------

DATASETS: dict[str, dict[str, Any]] = {
    "multispectral": {
        "ref_gsd_m": 4.0,
        "domains": {  # domain: (sensor, region, {split: tiles})
            "GF-2": ("GF-2", "Region-A", {"train": 48, "val": 8}),
            "GF-1": ("GF-1", "Region-A", {"test": 16}),
            "PlanetScope": ("PlanetScope", "Region-A", {"test": 16}),
            "Sentinel-2": ("Sentinel-2", "Region-A", {"test": 16}),
        },
    },
    "hyperspectral": {
        "ref_gsd_m": 10.0,
        "domains": {
            "Region-A": ("OHS", "Region-A", {"train": 48, "val": 8}),
            "Region-B": ("OHS", "Region-B", {"test": 16}),
            "Region-C": ("OHS", "Region-C", {"test": 16}),
        },
    },
}
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
TILES_PER_ROW = 8


def default_tiles() -> dict[str, dict[str, int]]:
    """Default ``{domain: {split: tiles}}`` of both datasets."""
    return {d: dict(spec[2]) for ds in DATASETS.values() for d, spec in ds["domains"].items()}


def _add_nodata_border(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> None:
    side = int(rng.integers(4))
    width = int(rng.integers(max(2, mask.shape[0] // 16), max(3, mask.shape[0] // 5) + 1))
    sl = [(slice(None, width), slice(None)), (slice(-width, None), slice(None)),
          (slice(None), slice(None, width)), (slice(None), slice(-width, None))][side]
    image[(slice(None),) + sl] = 0
    mask[sl] = 255


def render_tile(
    seed: int, dataset: str, domain: str, split: str, index: int, tile: int
) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask of one benchmark tile, from its own seeded generator (independent of other tiles)."""
    image, mask, _ = render_tile_layers(seed, dataset, domain, split, index, tile)
    return image, mask


def render_tile_layers(
    seed: int, dataset: str, domain: str, split: str, index: int, tile: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (C×H×W), mask (H×W) and surface height (H×W float32 metres, NaN on the no-data border) of one
    benchmark tile. The heights are drawn after every draw the image and mask use, so adding them left the
    benchmark's pixels unchanged."""
    spec = DATASETS[dataset]
    domain_names = list(spec["domains"])
    sensor, region, _ = spec["domains"][domain]
    rng = np.random.default_rng(
        [int(seed), list(DATASETS).index(dataset), domain_names.index(domain), SPLIT_CODES[split], int(index)]
    )
    scene = make_scene(rng, tile, REGIONS[region])
    image = render_scene(scene, sensor, rng, spec["ref_gsd_m"], noise=True)
    mask = scene.labels.copy()
    if rng.random() < NODATA_TILE_FRACTION:
        _add_nodata_border(rng, image, mask)
    height = make_heights(rng, scene.labels, scene.objects).surface.astype(np.float32)
    height[mask == IGNORE_INDEX] = np.nan
    return image, mask, height


def _params(dataset: str, seed: int, tile: int, tiles: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    spec = DATASETS[dataset]
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "tile": int(tile),
        "ref_gsd_m": float(spec["ref_gsd_m"]),
        "tiles": {d: {s: int(n) for s, n in tiles[d].items()} for d in spec["domains"]},
        "regions": {d: v[1] for d, v in spec["domains"].items()},
        "layers": ["height"],
    }


def _up_to_date(root: Path, params: dict[str, Any]) -> bool:
    path = root / "dataset.yaml"
    if not path.is_file() or not (root / "manifest.csv").is_file():
        return False
    try:
        with open(path, encoding="utf-8") as f:
            recorded = (yaml.safe_load(f) or {}).get("synthetic")
    except (yaml.YAMLError, AttributeError):
        return False
    return recorded == yaml.safe_load(yaml.safe_dump(params))


def synthesize(
    out: str | Path,
    seed: int = 0,
    tile: int = 64,
    tiles_per_domain: Mapping[str, Mapping[str, int]] | None = None,
    show_progress: bool = True,
    datasets: Sequence[str] = ("multispectral", "hyperspectral"),
) -> dict[str, Path]:
    """Write the benchmark's prepared datasets under ``out`` and return ``{dataset name: folder}``.

    ``tiles_per_domain`` overrides the tile counts ``{domain: {split: count}}`` of :func:`default_tiles` (domains
    not named keep their defaults). A dataset whose ``dataset.yaml`` records the same parameters (under
    ``synthetic``) is not rewritten.
    """
    out = Path(out)
    if tile < 16:
        raise ValueError(f"synthesize: tile must be at least 16 pixels, got {tile}")
    unknown_ds = [d for d in datasets if d not in DATASETS]
    if unknown_ds:
        raise ValueError(f"synthesize: unknown dataset(s) {unknown_ds}; known: {list(DATASETS)}")
    tiles = default_tiles()
    for domain, counts in (tiles_per_domain or {}).items():
        if domain not in tiles:
            raise ValueError(f"synthesize: unknown domain {domain!r} in tiles_per_domain; known: {list(tiles)}")
        bad = [s for s in counts if s not in SPLIT_CODES]
        if bad:
            raise ValueError(f"synthesize: unknown split(s) {bad} for domain {domain}; use {list(SPLIT_CODES)}")
        tiles[domain] = {s: int(n) for s, n in counts.items() if int(n) > 0}

    result: dict[str, Path] = {}
    crs = CRS.from_epsg(CRS_EPSG)
    for ds_index, name in enumerate(DATASETS):
        if name not in datasets:
            continue
        spec = DATASETS[name]
        root = out / name
        result[name] = root
        params = _params(name, seed, tile, tiles)
        if _up_to_date(root, params):
            continue
        total = sum(sum(tiles[d].values()) for d in spec["domains"])
        bar = tqdm(total=total, desc=f"synthesize {name}", unit="tile", disable=not show_progress)
        with PreparedWriter(root, f"synthetic-{name}", CLASSES, PALETTE, extra={"synthetic": params},
                            domains=list(spec["domains"])) as writer:
            for dom_index, (domain, (sensor, _region, _)) in enumerate(spec["domains"].items()):
                gsd = get_sensor(sensor).gsd_m
                for split, count in tiles[domain].items():
                    # Tiles of a (domain, split) are windows of one virtual mosaic, TILES_PER_ROW tiles wide.
                    x0 = 300000.0 + 100000.0 * dom_index + 25000.0 * SPLIT_CODES[split]
                    y0 = 3500000.0 - 200000.0 * ds_index
                    for i in range(count):
                        image, mask, height = render_tile_layers(seed, name, domain, split, i, tile)
                        row, col = (i // TILES_PER_ROW) * tile, (i % TILES_PER_ROW) * tile
                        transform = Affine(gsd, 0.0, x0 + col * gsd, 0.0, -gsd, y0 - row * gsd)
                        writer.add_tile(image, mask, domain, split, sensor,
                                        source_file=f"synthetic_{domain}_{split}.tif", row=row, col=col,
                                        crs=crs, transform=transform, height=height)
                        bar.update(1)
        bar.close()
    return result


__all__ = [
    "CLASSES", "PALETTE", "GRID_UM", "REGIONS", "RADIOMETRY", "DATASETS", "Region", "Radiometry", "Scene",
    "class_spectra", "band_responses", "psf_sigma", "make_labels", "make_scene", "render_reflectance",
    "render_scene", "render_sensors", "to_reflectance", "render_tile", "render_tile_layers", "default_tiles",
    "synthesize", "get_radiometry", "smooth_noise", "LabelCanvas", "HeightField", "make_heights",
    "BUILDING_HEIGHT_M", "TREE_HEIGHT_M", "RELIEF_M",
]
