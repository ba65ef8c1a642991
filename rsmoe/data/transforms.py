"""Training-recipe transforms on the sample dict (mmsegmentation's pipeline semantics, generalised to C bands).

Each transform takes and returns the sample dict (``image`` float32 C×H×W, ``mask`` int64 H×W with the ignore index
255). Image and mask always move together; masks are resampled by nearest neighbour only, so the ignore value is
never blended into a class. Randomness comes from torch's global RNG (seed it with ``torch.manual_seed``; DataLoader
workers get their own seeds from Lightning).

The order is mmseg's: the geometric and photometric steps run on **raw** values
(``RandomResize → RandomCrop → RandomFlip → PhotometricDistortion``), then
:class:`~rsmoe.data.normalize.Normalize` standardises each band and :class:`Pad` pads to the crop size with 0 (the
band mean) in the image and the ignore index in the mask, as mmseg's data preprocessor does after normalisation.
Evaluation and ``rsmoe predict`` use the same ``Normalize`` (from the checkpoint), so the three agree exactly.

The one known difference: mmseg keeps uint8 images uint8 through the resize (cv2 rounds to integers); here the image
stays float.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from .normalize import Normalize

IGNORE_INDEX = 255


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def _coin(p: float) -> bool:
    return p > 0 and float(torch.rand(())) < p


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[dict], dict]]):
        self.transforms = list(transforms)

    def __call__(self, sample: dict) -> dict:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomResize:
    """Rescale image (bilinear) and mask (nearest) by a random factor, keeping the aspect ratio.

    The rule (mmcv ``RandomResize(scale=(max_size, base), ratio_range=scale, keep_ratio=True)`` exactly): draw
    ``r ~ U(scale[0], scale[1])``, then the factor is ``f = base·r / short_side``, and with ``max_size`` set
    ``f = min(f, max_size·r / long_side)`` — the image is made as large as fits inside
    ``(max_size·r, base·r)``. The new size is ``int(side·f + 0.5)``. So the short side becomes ``base·r`` unless
    the image is more elongated than ``max_size : base`` (then the long side becomes ``max_size·r``).
    """

    def __init__(self, scale: Sequence[float] = (0.5, 2.0), base: int = 512, max_size: int | None = 1024):
        lo, hi = float(scale[0]), float(scale[1])
        if not 0 < lo <= hi:
            raise ValueError(f"RandomResize scale must be 0 < low <= high, got {tuple(scale)}")
        if base <= 0 or (max_size is not None and max_size < base):
            raise ValueError(f"RandomResize needs base > 0 and max_size >= base, got base={base}, "
                             f"max_size={max_size}")
        self.scale = (lo, hi)
        self.base = int(base)
        self.max_size = max_size

    def size_for(self, height: int, width: int, ratio: float) -> tuple[int, int]:
        """Output (H, W) for a given ratio r (deterministic part of the rule)."""
        short, long = min(height, width), max(height, width)
        factor = self.base * ratio / short
        if self.max_size is not None:
            factor = min(factor, self.max_size * ratio / long)
        return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))

    def sample_size(self, height: int, width: int) -> tuple[int, int]:
        return self.size_for(height, width, _uniform(*self.scale))

    def __call__(self, sample: dict) -> dict:
        image, mask = sample["image"], sample["mask"]
        size = self.sample_size(*image.shape[-2:])
        if size != tuple(image.shape[-2:]):
            sample["image"] = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
            sample["mask"] = resize_mask(mask, size)
        return sample

    def __repr__(self) -> str:
        return f"RandomResize(scale={self.scale}, base={self.base}, max_size={self.max_size})"


class RandomChoiceResize(RandomResize):
    """Rescale so that the short side is one of ``choices`` (picked uniformly), keeping the aspect ratio; with
    ``max_size`` the long side is capped there (mmseg ``RandomChoiceResize(scales, resize_type=
    "ResizeShortestEdge", max_size)``, what the public SpectralMoE configs use). New size ``int(side · f + 0.5)``."""

    def __init__(self, choices: Sequence[int], max_size: int | None = 1024):
        self.choices = [int(c) for c in choices]
        if not self.choices or min(self.choices) <= 0:
            raise ValueError(f"RandomChoiceResize choices must be positive sizes, got {list(choices)}")
        if max_size is not None and max_size < max(self.choices):
            raise ValueError(f"RandomChoiceResize max_size {max_size} is below the largest choice {max(self.choices)}")
        self.max_size = max_size

    def sample_size(self, height: int, width: int) -> tuple[int, int]:
        short_side = self.choices[int(torch.randint(len(self.choices), ()))]
        factor = short_side / min(height, width)
        if self.max_size is not None:
            factor = min(factor, self.max_size / max(height, width))
        return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))

    def __repr__(self) -> str:
        return f"RandomChoiceResize(choices={self.choices}, max_size={self.max_size})"


def resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of an H×W integer mask (values, the ignore index included, are only copied).

    Output pixel i takes source pixel ``floor((i + 0.5)·in/out)``: the source pixel whose centre is nearest to the
    point the bilinear image resize samples (``(i + 0.5)·in/out − 0.5``), so mask and image stay aligned to within
    half a source pixel. (cv2's INTER_NEAREST, used by mmseg, takes ``floor(i·in/out)``, up to one pixel off.)"""
    out = F.interpolate(mask[None, None].to(torch.float32), size=size, mode="nearest-exact")[0, 0]
    return out.to(mask.dtype)


def pad_sample(sample: dict, size: tuple[int, int], pad_value: float = 0.0,
               ignore_index: int = IGNORE_INDEX) -> dict:
    """Pad bottom/right up to ``size`` (image with ``pad_value`` — 0 is the band mean after normalisation —, mask
    with the ignore index); larger sides are left alone."""
    h, w = sample["image"].shape[-2:]
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    if ph or pw:
        sample["image"] = F.pad(sample["image"], (0, pw, 0, ph), value=pad_value)
        sample["mask"] = F.pad(sample["mask"], (0, pw, 0, ph), value=ignore_index)
    return sample


class Pad:
    """Pad to at least ``size`` at the bottom/right (mmseg's data-preprocessor padding: 0 image, 255 mask)."""

    def __init__(self, size: int | Sequence[int], pad_value: float = 0.0, ignore_index: int = IGNORE_INDEX):
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.pad_value = pad_value
        self.ignore_index = ignore_index

    def __call__(self, sample: dict) -> dict:
        return pad_sample(sample, self.size, self.pad_value, self.ignore_index)

    def __repr__(self) -> str:
        return f"Pad(size={self.size})"


class RandomCrop:
    """A random ``size`` window of image and mask (mmseg ``RandomCrop`` semantics).

    The window's offset is uniform over the valid positions (a side shorter than the crop is taken whole). With
    ``cat_max_ratio < 1`` a window is re-drawn, at most ``retries`` times, while its non-ignore pixels hold fewer
    than two classes or one class covers ``cat_max_ratio`` or more of them; after the last retry the last drawn
    window is used unchecked (mmseg's loop). ``pad=True`` then pads a smaller result to ``size`` (0 image,
    ignore mask); :func:`build_train_transforms` pads at the end instead, as mmseg does.
    """

    def __init__(self, size: int | Sequence[int], cat_max_ratio: float = 0.75, ignore_index: int = IGNORE_INDEX,
                 retries: int = 10, pad: bool = True):
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(self.size) <= 0:
            raise ValueError(f"RandomCrop size must be positive, got {size}")
        self.cat_max_ratio = float(cat_max_ratio)
        self.ignore_index = ignore_index
        self.retries = int(retries)
        self.pad = pad

    def draw_window(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(y1, y2, x1, x2) of one random window."""
        margin_h, margin_w = max(height - self.size[0], 0), max(width - self.size[1], 0)
        y1 = int(torch.randint(0, margin_h + 1, ()))
        x1 = int(torch.randint(0, margin_w + 1, ()))
        return y1, min(y1 + self.size[0], height), x1, min(x1 + self.size[1], width)

    def accepts(self, mask_window: Tensor) -> bool:
        """True when the window holds ≥ 2 classes and none covers ``cat_max_ratio`` or more of its labelled
        pixels."""
        labels = mask_window[mask_window != self.ignore_index]
        if labels.numel() == 0:
            return False
        counts = torch.bincount(labels.flatten().long())
        counts = counts[counts > 0]
        return counts.numel() > 1 and float(counts.max()) / float(counts.sum()) < self.cat_max_ratio

    def choose_window(self, mask: Tensor) -> tuple[int, int, int, int]:
        h, w = mask.shape[-2:]
        box = self.draw_window(h, w)
        if self.cat_max_ratio < 1.0:
            for _ in range(self.retries):
                y1, y2, x1, x2 = box
                if self.accepts(mask[y1:y2, x1:x2]):
                    break
                box = self.draw_window(h, w)
        return box

    def __call__(self, sample: dict) -> dict:
        y1, y2, x1, x2 = self.choose_window(sample["mask"])
        sample["image"] = sample["image"][:, y1:y2, x1:x2]
        sample["mask"] = sample["mask"][y1:y2, x1:x2]
        if self.pad:
            pad_sample(sample, self.size, 0.0, self.ignore_index)
        return sample

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, cat_max_ratio={self.cat_max_ratio}, retries={self.retries})"


class RandomFlip:
    """Horizontal flip with probability ``horizontal``, then vertical with probability ``vertical``
    (independent draws)."""

    def __init__(self, horizontal: float = 0.5, vertical: float = 0.0):
        for name, p in (("horizontal", horizontal), ("vertical", vertical)):
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"RandomFlip {name} probability must be in [0, 1], got {p}")
        self.horizontal = float(horizontal)
        self.vertical = float(vertical)

    def __call__(self, sample: dict) -> dict:
        if _coin(self.horizontal):
            sample["image"] = sample["image"].flip(-1)
            sample["mask"] = sample["mask"].flip(-1)
        if _coin(self.vertical):
            sample["image"] = sample["image"].flip(-2)
            sample["mask"] = sample["mask"].flip(-2)
        return sample

    def __repr__(self) -> str:
        return f"RandomFlip(horizontal={self.horizontal}, vertical={self.vertical})"


# --------------------------------------------------------------------------------------------- photometric
def _rgb_to_hsv(rgb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """3×H×W non-negative → hue in degrees [0, 360), saturation [0, 1], value (same units as the input)."""
    r, g, b = rgb[0], rgb[1], rgb[2]
    v, _ = rgb.max(0)
    mn, _ = rgb.min(0)
    delta = v - mn
    s = torch.where(v > 0, delta / v.clamp_min(1e-12), torch.zeros_like(v))
    safe = delta.clamp_min(1e-12)
    h = torch.where(v == r, (g - b) / safe, torch.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = torch.where(delta > 0, (h * 60.0) % 360.0, torch.zeros_like(h))
    return h, s, v


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    def channel(n: float) -> Tensor:
        k = (n + h / 60.0) % 6.0
        return v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)

    return torch.stack([channel(5.0), channel(3.0), channel(1.0)])


class PhotometricDistortion:
    """mmseg's ``PhotometricDistortion`` on raw values, for any band count.

    Each step with probability 1/2: brightness ``x + δ``, δ ~ U(−brightness_delta, brightness_delta) (one δ for all
    bands); contrast ``α·x``, α ~ U(contrast_range) (one α for all bands); and for 3-band images only, saturation
    (×U(saturation_range), clipped to [0, 1]) and hue (shift by an integer in [−hue_delta, hue_delta) in OpenCV's
    8-bit hue units, 180 per turn) in HSV. Contrast comes before or after the HSV steps with equal probability
    (mmseg's ``mode``). ``value_range`` (raw units, e.g. ``(0, 255)`` for uint8 imagery) clips after every step as
    mmseg does; ``None`` clips nothing.

    Saturation and hue are defined only for an RGB triple, so they are skipped when C ≠ 3: multispectral images get
    brightness and contrast, one draw shared by all bands. Band order (RGB or BGR) does not change their
    distribution: the hue shift is symmetric. Hue follows OpenCV's uint8 convention (mmseg applied to float images
    shifts a 0–360 hue modulo 180, a quirk not reproduced).
    """

    def __init__(self, brightness_delta: float = 32.0, contrast_range: Sequence[float] = (0.5, 1.5),
                 saturation_range: Sequence[float] = (0.5, 1.5), hue_delta: int = 18,
                 value_range: Sequence[float] | None = None):
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = (float(contrast_range[0]), float(contrast_range[1]))
        self.saturation_range = (float(saturation_range[0]), float(saturation_range[1]))
        self.hue_delta = int(hue_delta)
        self.value_range = None if value_range is None else (float(value_range[0]), float(value_range[1]))

    def sample_params(self, bands: int) -> dict[str, Any]:
        """One random draw: ``brightness`` (raw shift or None), ``contrast`` (factor or None),
        ``contrast_first`` (bool), and for 3 bands ``saturation`` (factor or None), ``hue`` (int or None)."""
        p: dict[str, Any] = {}
        p["brightness"] = _uniform(-self.brightness_delta, self.brightness_delta) if _coin(0.5) else None
        p["contrast_first"] = _coin(0.5)
        p["contrast"] = _uniform(*self.contrast_range) if _coin(0.5) else None
        if bands == 3:
            p["saturation"] = _uniform(*self.saturation_range) if _coin(0.5) else None
            p["hue"] = int(torch.randint(-self.hue_delta, self.hue_delta, ())) if _coin(0.5) else None
        return p

    def clip(self, image: Tensor) -> Tensor:
        return image if self.value_range is None else image.clamp(*self.value_range)

    def apply(self, image: Tensor, params: dict[str, Any]) -> Tensor:
        """The distortion ``params`` applied to a raw C×H×W image."""
        out = image
        if params.get("brightness") is not None:
            out = self.clip(out + params["brightness"])
        if params.get("contrast") is not None and params["contrast_first"]:
            out = self.clip(out * params["contrast"])
        if image.shape[0] == 3 and (params.get("saturation") is not None or params.get("hue") is not None):
            h, s, v = _rgb_to_hsv(out.clamp_min(0.0))  # HSV needs non-negative values
            if params.get("saturation") is not None:
                s = (s * params["saturation"]).clamp(0.0, 1.0)
            if params.get("hue") is not None:
                h = (h + 2.0 * params["hue"]) % 360.0
            out = self.clip(_hsv_to_rgb(h, s, v))
        if params.get("contrast") is not None and not params["contrast_first"]:
            out = self.clip(out * params["contrast"])
        return out

    def __call__(self, sample: dict) -> dict:
        sample["image"] = self.apply(sample["image"], self.sample_params(sample["image"].shape[0]))
        return sample

    def __repr__(self) -> str:
        return (f"PhotometricDistortion(brightness_delta={self.brightness_delta}, "
                f"contrast_range={self.contrast_range}, value_range={self.value_range})")


def build_train_transforms(cfg_augment: Any, normalize: Normalize, value_range: Sequence[float] | None = None,
                           ignore_index: int = IGNORE_INDEX) -> Compose:
    """The training pipeline of a ``data.augment`` section (:class:`rsmoe.config.AugmentConfig`):
    RandomResize (``resize_scale`` set) or RandomChoiceResize (``resize_choices`` set) → RandomCrop (``crop`` set)
    → RandomFlip → PhotometricDistortion
    (``photometric``) → ``normalize`` → Pad to the crop size. ``value_range``: raw clip range of the photometric
    step (``(0, 255)`` for uint8 data)."""
    a = cfg_augment
    steps: list[Callable[[dict], dict]] = []
    if a.resize_scale is not None:
        if len(a.resize_scale) != 2:
            raise ConfigError(f"data.augment.resize_scale: expected [low, high], got {a.resize_scale}")
        if a.crop is None:
            raise ConfigError("data.augment.resize_scale needs data.augment.crop: a batch needs tiles of one size")
        steps.append(RandomResize(a.resize_scale, base=a.resize_base, max_size=a.resize_max))
    if a.resize_choices is not None:
        if a.crop is None:
            raise ConfigError("data.augment.resize_choices needs data.augment.crop: a batch needs tiles of one size")
        steps.append(RandomChoiceResize(a.resize_choices, max_size=a.resize_max))
    if a.crop is not None:
        steps.append(RandomCrop(a.crop, cat_max_ratio=a.cat_max_ratio, ignore_index=ignore_index, pad=False))
    if a.hflip > 0 or a.vflip > 0:
        steps.append(RandomFlip(a.hflip, a.vflip))
    if a.photometric:
        steps.append(PhotometricDistortion(value_range=value_range))
    steps.append(normalize)
    if a.crop is not None:
        steps.append(Pad(a.crop, 0.0, ignore_index))
    return Compose(steps)


def raw_value_range(dtype: Any) -> tuple[float, float] | None:
    """The photometric clip range for a prepared dataset's image dtype: (0, 255) for uint8, otherwise none."""
    return (0.0, 255.0) if isinstance(dtype, str) and dtype == "uint8" else None


__all__ = ["Compose", "Normalize", "RandomChoiceResize", "RandomResize", "RandomCrop", "RandomFlip", "Pad", "PhotometricDistortion",
           "build_train_transforms", "raw_value_range", "resize_mask", "pad_sample"]
