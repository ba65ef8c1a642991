"""The pretraining corpus: RGB tiles of rsmoe's synthetic world seen by many randomised cameras.

The shipped backbone, depth model and CLIP pair (:mod:`rsmoe.pretrain`) learn from this corpus only. It draws from
the same landscape and spectra model as the benchmark (:mod:`rsmoe.data.synthetic`), but nothing else is shared:

* **Cameras** (:class:`CorpusSensor`, one per *acquisition* of :data:`ACQUISITION_TILES` tiles): three bands
  standing for R, G, B with random centres (R 620–690 nm, G 525–585 nm, B 445–515 nm), widths (30–100 nm) and
  response shapes (boxcar or Gaussian), cut at 700 nm, a random point-spread blur (0–1.2 px), ground sample distance (2–8 m),
  gain, offset, noise and bit depth (8–16 bits, with saturation). RGB only: the benchmark's NIR band is never
  rendered.
* **Regions** (:func:`random_region`): class priors, parcel sizes, forest/water/urban frequencies and texture
  scales drawn per tile, around and beyond the benchmark's three regions.
* **Illumination** (:class:`Illumination`, per tile): a brightness factor, haze (an additive, bluish path
  reflectance), and in most tiles a sun position that casts shadows from buildings and trees and shades the
  terrain (the benchmark's tiles have neither).
* Per tile the generator also returns the **height field** (:func:`rsmoe.data.synthetic.make_heights`, surface
  heights in metres, for depth pretraining) and the **label map** (only ever used to write statistics captions for
  CLIP pretraining, never as a segmentation target).

Normalisation: each acquisition's tiles are standardised per band with that acquisition's own mean and std over
all its pixels, the convention the fine-tuning datasets use (per-band mean/std of one sensor's training split).
Bands are stored in R, G, B order, the channel order of pretrained RGB patch kernels.

Seeds: tile ``index`` of acquisition ``a`` draws from ``numpy.random.default_rng([seed, CORPUS_CODE, a, part,
index])``. Benchmark tiles draw from ``[seed, dataset index, domain index, split code, index]`` with a dataset
index of 0 or 1, so for seeds below 2**32 (each key word one uint32) no corpus key equals any benchmark key:
they differ in the second word. :func:`corpus_key` refuses larger seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from rsmoe.data.synthetic import GRID_UM, HeightField, Region, Scene, make_heights, make_scene

CORPUS_CODE = 1000
"""Second word of every corpus key (benchmark keys hold a dataset index, 0 or 1, there)."""
ACQUISITION_TILES = 16
"""Tiles per acquisition: one camera, normalised with one set of band statistics."""
VISIBLE_LIMIT_UM = 0.700
"""No band response beyond this wavelength (µm)."""
_SENSOR_PART, _TILE_PART, _SECOND_SENSOR_PART = 0, 1, 2
_CENTRES_UM = ((0.620, 0.690), (0.525, 0.585), (0.445, 0.515))  # R, G, B centre ranges


def corpus_key(seed: int, acquisition: int, part: int, index: int) -> list[int]:
    """The entropy words of one corpus draw (see the module docstring); every word must fit a uint32."""
    key = [int(seed), CORPUS_CODE, int(acquisition), int(part), int(index)]
    if any(not 0 <= k < 2**32 for k in key):
        raise ValueError(f"corpus seeds, acquisitions and indices must lie in [0, 2**32), got {key}")
    return key


# ----------------------------------------------------------------------------------------------------------------
# Cameras, regions, illumination
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CorpusSensor:
    """A randomised RGB camera. Bands in R, G, B order; ``DN = gain * rho + offset + noise``, rounded and clipped to
    ``[0, 2**bits - 1]``; ``psf_sigma`` is a Gaussian blur in pixels of the scene grid."""

    centres_um: tuple[float, float, float]
    widths_um: tuple[float, float, float]
    srf: str
    gsd_m: float
    psf_sigma: float
    gain: tuple[float, float, float]
    offset: tuple[float, float, float]
    noise_dn: tuple[float, float, float]
    bits: int

    def responses(self, grid_um: np.ndarray = GRID_UM) -> np.ndarray:
        """Band responses (3, len(grid)), each row summing to 1: a boxcar of the band's width, or a Gaussian with
        FWHM = width cut at ±width; nothing beyond :data:`VISIBLE_LIMIT_UM` (the corpus never sees the red edge or
        the NIR)."""
        grid = np.asarray(grid_um, dtype=np.float64)
        rows = []
        for centre, width in zip(self.centres_um, self.widths_um):
            if self.srf == "boxcar":
                w = (np.abs(grid - centre) <= width / 2 + 1e-9).astype(np.float64)
            else:
                sigma = width / (2.0 * math.sqrt(2.0 * math.log(2.0)))
                w = np.exp(-0.5 * ((grid - centre) / sigma) ** 2) * (np.abs(grid - centre) <= width + 1e-9)
            w = w * (grid <= VISIBLE_LIMIT_UM + 1e-9)
            rows.append(w / w.sum())
        return np.stack(rows)


def random_sensor(rng: np.random.Generator) -> CorpusSensor:
    """Draw a camera (see the module docstring for the ranges)."""
    centres = tuple(float(rng.uniform(lo, hi)) for lo, hi in _CENTRES_UM)
    widths = tuple(float(w) for w in rng.uniform(0.03, 0.10, 3))
    srf = "boxcar" if rng.random() < 0.5 else "gaussian"
    bits = int(rng.choice([8, 10, 11, 12, 14, 16]))
    full = 2.0**bits - 1.0
    # reflectance 0.5 lands between 40 % and 110 % of the range: bright roofs may saturate
    gain0 = full * rng.uniform(0.8, 2.2)
    gain = tuple(float(g) for g in gain0 * rng.uniform(0.85, 1.15, 3))
    offset = tuple(float(o) for o in full * rng.uniform(0.0, 0.08) * rng.uniform(0.7, 1.0, 3))
    noise = tuple(float(n) for n in full * rng.uniform(0.001, 0.008) * rng.uniform(0.8, 1.2, 3))
    return CorpusSensor(centres, widths, srf, gsd_m=float(rng.uniform(2.0, 8.0)),
                        psf_sigma=float(rng.uniform(0.0, 1.2)), gain=gain, offset=offset, noise_dn=noise, bits=bits)


def random_region(rng: np.random.Generator) -> Region:
    """A landscape drawn around and beyond the benchmark's regions (priors, sizes, frequencies, textures)."""
    prior = rng.dirichlet([4.0, 2.5, 1.5, 1.0])
    return Region(
        name="corpus",
        parcel_px=float(rng.uniform(9.0, 32.0)),
        parcel_prior=tuple(float(p) for p in prior),
        forest_prob=float(rng.uniform(0.1, 0.9)), forest_frac=float(rng.uniform(0.08, 0.4)),
        forest_scale=float(rng.uniform(2.0, 7.0)),
        water_prob=float(rng.uniform(0.2, 0.8)), water_frac=float(rng.uniform(0.06, 0.25)),
        water_scale=float(rng.uniform(3.0, 11.0)),
        urban_prob=float(rng.uniform(0.1, 0.8)), urban_frac=float(rng.uniform(0.2, 0.6)),
        building_density=float(rng.uniform(0.6, 2.2)), roads_mean=float(rng.uniform(0.5, 2.5)),
        texture_scale=float(rng.uniform(0.8, 4.0)), dryness=float(rng.uniform(-0.1, 0.35)),
    )


@dataclass(frozen=True)
class Illumination:
    """Per-tile light: reflectance is multiplied by ``factor`` (and by ``shadow_light`` in cast shadows and by the
    terrain shading when ``sun`` is given as (elevation, azimuth) in degrees, azimuth clockwise from north = up),
    then ``haze`` (per band R, G, B, reflectance units) is added."""

    factor: float
    haze: tuple[float, float, float]
    sun: tuple[float, float] | None = None
    shadow_light: float = 1.0


def random_illumination(rng: np.random.Generator) -> Illumination:
    """Brightness 0.7–1.3, haze up to 0.04 (blue) / 0.018 (red), and in 70 % of the tiles a sun at 25–80° elevation
    whose shadows keep 25–60 % of the light."""
    factor = float(rng.uniform(0.7, 1.3))
    haze0 = float(rng.uniform(0.0, 0.04))
    haze = (0.45 * haze0, 0.7 * haze0, haze0)
    if rng.random() < 0.7:
        return Illumination(factor, haze, (float(rng.uniform(25.0, 80.0)), float(rng.uniform(0.0, 360.0))),
                            float(rng.uniform(0.25, 0.6)))
    return Illumination(factor, haze)


# ----------------------------------------------------------------------------------------------------------------
# Shadows and shading
# ----------------------------------------------------------------------------------------------------------------

def _sun_step(azimuth_deg: float) -> tuple[float, float]:
    """(row, col) unit step towards the sun (rows grow southwards)."""
    a = math.radians(azimuth_deg)
    return -math.cos(a), math.sin(a)


def cast_shadows(surface: np.ndarray, gsd_m: float, elevation_deg: float, azimuth_deg: float) -> np.ndarray:
    """Boolean H×W map of pixels in a cast shadow: some pixel k steps towards the sun rises above the sun ray
    through this one (``surface`` in metres, ``gsd_m`` metres per pixel; nearest-pixel ray marching, edges
    clamped)."""
    h, w = surface.shape
    rise = gsd_m * math.tan(math.radians(elevation_deg))  # metres the ray climbs per pixel step
    steps = int(math.ceil((surface.max() - surface.min()) / max(rise, 1e-6)))
    dr, dc = _sun_step(azimuth_deg)
    rows, cols = np.mgrid[0:h, 0:w]
    shadow = np.zeros((h, w), dtype=bool)
    for k in range(1, min(steps, max(h, w)) + 1):
        r = np.clip(np.rint(rows + k * dr).astype(np.int64), 0, h - 1)
        c = np.clip(np.rint(cols + k * dc).astype(np.int64), 0, w - 1)
        shadow |= surface[r, c] > surface + k * rise
    return shadow


def terrain_shading(ground: np.ndarray, gsd_m: float, elevation_deg: float, azimuth_deg: float) -> np.ndarray:
    """Lambertian shading of the terrain relative to flat ground: cos(incidence) / cos(solar zenith), H×W."""
    gy, gx = np.gradient(ground, gsd_m)
    dr, dc = _sun_step(azimuth_deg)
    el = math.radians(elevation_deg)
    sun = np.array([dc * math.cos(el), -dr * math.cos(el), math.sin(el)])  # x east, y north, z up
    normal = np.stack([-gx, gy, np.ones_like(ground)])  # rows grow southwards: north slope is -d/drow
    normal /= np.linalg.norm(normal, axis=0, keepdims=True)
    return np.clip(np.tensordot(sun, normal, axes=1), 0.05, None) / math.sin(el)


# ----------------------------------------------------------------------------------------------------------------
# Tiles and the corpus
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class CorpusTile:
    """One rendered tile: ``dn`` (3, H, W) float32 stored values in R, G, B order, ``labels`` (H, W) uint8 class
    indices, ``height`` (H, W) float32 surface height in metres above the tile's lowest ground point; ``dn2`` the
    same scene through a second camera under its own light (only when asked for)."""

    dn: np.ndarray
    labels: np.ndarray
    height: np.ndarray
    dn2: np.ndarray | None = None


def render_view(rng: np.random.Generator, scene: Scene, heights: HeightField, sensor: CorpusSensor) -> np.ndarray:
    """Draw the light and render ``scene`` with ``sensor``: (3, H, W) float32 stored values."""
    light = random_illumination(rng)
    refl = scene.band_reflectance(sensor.responses(scene.grid_um)) * light.factor
    if light.sun is not None:
        elevation, azimuth = light.sun
        shade = terrain_shading(heights.ground, sensor.gsd_m, elevation, azimuth)
        shadow = cast_shadows(heights.surface, sensor.gsd_m, elevation, azimuth)
        refl = refl * np.where(shadow, light.shadow_light, shade)[None]
    refl = refl + np.asarray(light.haze)[:, None, None]
    if sensor.psf_sigma > 0:
        refl = ndimage.gaussian_filter(refl, (0.0, sensor.psf_sigma, sensor.psf_sigma), mode="reflect")
    dn = refl * np.asarray(sensor.gain)[:, None, None] + np.asarray(sensor.offset)[:, None, None]
    dn = dn + rng.standard_normal(dn.shape) * np.asarray(sensor.noise_dn)[:, None, None]
    return np.clip(np.rint(dn), 0.0, 2.0**sensor.bits - 1.0).astype(np.float32)


def render_corpus_tile(rng: np.random.Generator, sensor: CorpusSensor, size: int = 64,
                       second: CorpusSensor | None = None) -> CorpusTile:
    """Draw a region, a scene and its heights from ``rng`` and render it with ``sensor`` (and, after every draw of
    that first view, with ``second``: the first view is the same with or without a second one)."""
    region = random_region(rng)
    scene = make_scene(rng, size, region)
    heights = make_heights(rng, scene.labels, scene.objects)
    dn = render_view(rng, scene, heights, sensor)
    dn2 = render_view(rng, scene, heights, second) if second is not None else None
    return CorpusTile(dn, scene.labels.copy(), heights.surface.astype(np.float32), dn2)


@dataclass
class Corpus:
    """Tiles of consecutive acquisitions: ``images`` (N, 3, H, W) float32 standardised per acquisition and band,
    ``labels`` (N, H, W) uint8, ``heights`` (N, H, W) float32 metres, ``acquisition`` (N,) int64 and the camera
    of each acquisition in ``sensors``. Paired corpora also hold ``images2``: the same scenes through each
    acquisition's second camera (``sensors2``), standardised with that camera's statistics."""

    images: np.ndarray
    labels: np.ndarray
    heights: np.ndarray
    acquisition: np.ndarray
    sensors: list[CorpusSensor] = field(default_factory=list)
    images2: np.ndarray | None = None
    sensors2: list[CorpusSensor] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def standardise(dn: np.ndarray) -> np.ndarray:
    """(N, C, H, W) stored values → per-band zero mean, unit std over all N tiles (float32; std 0 → 1)."""
    x = dn.astype(np.float64)
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    std = x.std(axis=(0, 2, 3), keepdims=True)
    return ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def build_corpus(seed: int, acquisitions: int, first_acquisition: int = 0, size: int = 64,
                 tiles_per_acquisition: int = ACQUISITION_TILES, progress: bool = False,
                 paired: bool = False) -> Corpus:
    """Render acquisitions ``first_acquisition … first_acquisition + acquisitions - 1`` of corpus ``seed``.

    Acquisition ``a`` always holds the same tiles whatever range it is built in, so a held-out set is simply a
    range of acquisitions after the training range (new cameras, new scenes). ``paired`` also renders every tile
    through the acquisition's second camera (``images2``); ``images`` stay the same.
    """
    if acquisitions < 1 or tiles_per_acquisition < 2 or size < 16:
        raise ValueError(f"build_corpus: need ≥ 1 acquisition of ≥ 2 tiles of ≥ 16 px, got {acquisitions} × "
                         f"{tiles_per_acquisition} × {size}")
    images, images2, labels, heights, owner, sensors, sensors2 = [], [], [], [], [], [], []
    bar = tqdm(total=acquisitions * tiles_per_acquisition, desc="corpus", unit="tile", disable=not progress)
    for a in range(first_acquisition, first_acquisition + acquisitions):
        sensor = random_sensor(np.random.default_rng(corpus_key(seed, a, _SENSOR_PART, 0)))
        second = random_sensor(np.random.default_rng(corpus_key(seed, a, _SECOND_SENSOR_PART, 0))) if paired else None
        tiles = [render_corpus_tile(np.random.default_rng(corpus_key(seed, a, _TILE_PART, i)), sensor, size, second)
                 for i in range(tiles_per_acquisition)]
        bar.update(len(tiles))
        images.append(standardise(np.stack([t.dn for t in tiles])))
        if paired:
            images2.append(standardise(np.stack([t.dn2 for t in tiles])))
            sensors2.append(second)
        labels.extend(t.labels for t in tiles)
        heights.extend(t.height for t in tiles)
        owner.extend([a] * len(tiles))
        sensors.append(sensor)
    bar.close()
    return Corpus(np.concatenate(images), np.stack(labels), np.stack(heights), np.asarray(owner, dtype=np.int64),
                  sensors, np.concatenate(images2) if paired else None, sensors2)


__all__ = ["ACQUISITION_TILES", "CORPUS_CODE", "VISIBLE_LIMIT_UM", "Corpus", "CorpusSensor", "CorpusTile", "Illumination",
           "build_corpus", "cast_shadows", "corpus_key", "random_illumination", "random_region", "random_sensor",
           "render_corpus_tile", "render_view", "standardise", "terrain_shading"]
