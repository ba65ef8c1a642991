"""Small building blocks shared by the decode heads, the MPerS neck and its LDPE (each written once)."""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def gn_groups(channels: int, max_groups: int = 32) -> int:
    """Largest group count ≤ ``max_groups`` that divides ``channels`` (32 for 256, 16 for 16, 24 for 48)."""
    return max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)


def conv_bn_relu(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """Conv(k×k, no bias) → BatchNorm → ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def conv_gn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    """Conv(k×k, no bias) → GroupNorm(:func:`gn_groups`) → ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
                         nn.GroupNorm(gn_groups(cout), cout), nn.ReLU(inplace=True))


def upsample_to(x: Tensor, ref: Tensor | Sequence[int]) -> Tensor:
    """Bilinear resize (align_corners=False) of B×C×h×w ``x`` to the spatial size of ``ref`` (a tensor or (H, W))."""
    size = tuple(ref.shape[-2:]) if isinstance(ref, Tensor) else tuple(ref)
    return x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def top_down_merge(laterals: list[Tensor]) -> list[Tensor]:
    """The FPN top-down pathway (Lin et al. 2017): from the coarsest level down, each level adds the bilinearly
    upsampled level above it. ``laterals`` fine → coarse, equal channels; returns a new list."""
    out = list(laterals)
    for i in range(len(out) - 1, 0, -1):
        out[i - 1] = out[i - 1] + upsample_to(out[i], out[i - 1])
    return out


__all__ = ["conv_bn_relu", "conv_gn_relu", "gn_groups", "top_down_merge", "upsample_to"]
