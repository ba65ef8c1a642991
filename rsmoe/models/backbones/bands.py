"""Band handling for RGB-pretrained backbones fed with multispectral images.

Two jobs, both driven by the band centre wavelengths (µm) of the sensor:

* :func:`adapt_patch_kernel` builds a C-band patch-embedding kernel from a pretrained 3-band (R, G, B) kernel.
* :func:`select_rgb_bands` picks the three bands that stand for R, G and B (for the depth branch, which only
  takes RGB).

Nominal RGB centres: :data:`rsmoe.sensors.RGB_CENTRES_UM` (R 0.665, G 0.560, B 0.490 µm); the pretrained
kernels of DINOv2/DINOv3 and Depth Anything have their input channels in R, G, B order. Nearest-band ties follow
:func:`rsmoe.sensors.nearest_band` (picometre resolution, lower index wins).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from ...sensors import RGB_CENTRES_UM, nearest_band, rgb_band_indices


#: Bands with a centre beyond this wavelength (µm) take the red kernel in ``wavelength`` mode.
RED_EDGE_LIMIT_UM = 0.700

#: Anything above this cannot be a wavelength in µm (thermal infrared ends near 14 µm): catches nanometres.
_MAX_PLAUSIBLE_UM = 20.0

#: ``cyclic`` | ``wavelength`` | an explicit RGB channel (0 = R, 1 = G, 2 = B) per input band
BandInit = Literal["cyclic", "wavelength"] | Sequence[int]


def _as_float_list(wavelengths: Sequence[float] | Tensor) -> list[float]:
    if isinstance(wavelengths, Tensor):
        if wavelengths.dim() == 2:  # (B, C): the selection must be the same for the whole batch here
            if not torch.equal(wavelengths, wavelengths[:1].expand_as(wavelengths)):
                raise ValueError("wavelengths differ across the batch; pass one (C,) vector per call")
            wavelengths = wavelengths[0]
        if wavelengths.dim() != 1:
            raise ValueError(f"wavelengths must have shape (C,) or (B, C), got {tuple(wavelengths.shape)}")
        values = [float(v) for v in wavelengths.detach().cpu().tolist()]
    else:
        values = [float(v) for v in wavelengths]
    if not values:
        raise ValueError("wavelengths is empty")
    bad = [v for v in values if not (0.0 < v < _MAX_PLAUSIBLE_UM)]
    if bad:
        raise ValueError(f"wavelengths must be band centres in µm (0 < λ < {_MAX_PLAUSIBLE_UM}); got {bad}")
    return values


def rgb_channel_for_band(wavelength_um: float) -> int:
    """Pretrained-kernel channel (0 = R, 1 = G, 2 = B) whose nominal centre is nearest ``wavelength_um``.

    Bands beyond :data:`RED_EDGE_LIMIT_UM` (red edge, NIR, SWIR, …) take red's channel. Ties go to the channel
    listed first (R, then G, then B).
    """
    if wavelength_um > RED_EDGE_LIMIT_UM:
        return 0
    return nearest_band(RGB_CENTRES_UM, wavelength_um)


def adapt_patch_kernel(
    weight_rgb: Tensor,
    wavelengths_um: Sequence[float] | Tensor | None,
    num_bands: int,
    mode: BandInit = "cyclic",
) -> Tensor:
    """Build a C-band patch-embedding kernel (out × C × k × k) from a pretrained RGB kernel (out × 3 × k × k).

    Modes:

    * ``cyclic`` — band i takes RGB channel ``i mod 3`` (what the SpectralMoE public code does; the wavelengths
      are ignored and may be ``None``).
    * ``wavelength`` — band i takes the kernel of the RGB channel whose nominal centre (R 0.665, G 0.560,
      B 0.490 µm) is nearest the band's centre wavelength; bands beyond 0.700 µm take red's kernel. Needs
      ``wavelengths_um`` (µm, length ``num_bands``).
    * a sequence of channel indices — band i takes RGB channel ``mode[i]`` (e.g. the authors' cyclic rule applied
      in *their* band order, recorded by ``rsmoe convert spectralmoe-official`` as ``backbone.band_channels``).

    No rescaling is applied: each band gets an unscaled copy of one RGB channel's kernel. This is a deliberate
    choice: it is what the public code does (so its published checkpoints, whose adapters were trained on the
    unscaled embedding, reproduce), and a 3/C factor would assume all C bands carry the same signal, which is
    exactly what spectral data does not do (with per-band normalised inputs, NIR and visible bands are often
    anti-correlated over vegetation, so a sum over bands does not grow like C/3). The price is that the patch
    embedding's magnitude depends on the band count; the trainable adapter downstream absorbs it.

    The result is a new tensor (a copy) on the device and dtype of ``weight_rgb``.
    """
    if weight_rgb.dim() != 4 or weight_rgb.shape[1] != 3:
        raise ValueError(f"expected an out×3×k×k RGB kernel, got shape {tuple(weight_rgb.shape)}")
    if num_bands < 1:
        raise ValueError(f"num_bands must be ≥ 1, got {num_bands}")
    if mode == "cyclic":
        channels = [i % 3 for i in range(num_bands)]
    elif mode == "wavelength":
        if wavelengths_um is None:
            raise ValueError("band_init='wavelength' needs the band centre wavelengths (µm)")
        values = _as_float_list(wavelengths_um)
        if len(values) != num_bands:
            raise ValueError(f"got {len(values)} wavelengths for {num_bands} bands")
        channels = [rgb_channel_for_band(v) for v in values]
    elif not isinstance(mode, str) and len(mode) == num_bands and all(int(c) in (0, 1, 2) for c in mode):
        channels = [int(c) for c in mode]
    else:
        raise ValueError(f"unknown band_init {mode!r}; expected 'cyclic', 'wavelength' or one RGB channel (0-2) per "
                         f"band ({num_bands} bands)")
    index = torch.tensor(channels, dtype=torch.long, device=weight_rgb.device)
    return weight_rgb.detach().index_select(1, index).clone()


def select_rgb_bands(wavelengths: Sequence[float] | Tensor) -> list[int]:
    """Indices of the bands nearest 0.665, 0.560 and 0.490 µm, in R, G, B order.

    ``wavelengths`` are band centres in µm, shape (C,) (or (B, C) with identical rows). Ties go to the lower band
    index (distances are compared at picometre resolution, so e.g. 480 and 500 nm around 490 nm are a tie, not a
    floating-point coin toss). With fewer than three distinct bands an index can repeat (a panchromatic band
    stands for all three colours).
    """
    return rgb_band_indices(_as_float_list(wavelengths))


__all__ = [
    "RED_EDGE_LIMIT_UM",
    "BandInit",
    "adapt_patch_kernel",
    "rgb_channel_for_band",
    "select_rgb_bands",
]
