"""Batch augmentations for pretraining, on (B, C, H, W) tensors, every draw from an explicit ``torch.Generator``.

Remote-sensing tiles have no preferred orientation, so the geometric augmentations are the eight dihedral
transforms and random resized crops; the photometric ones are deliberately mild (colour is the main cue that
separates the land-cover classes, so an invariance to it would throw away what segmentation needs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _uniform(shape: tuple[int, ...], low: float, high: float, g: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=g)


def dihedral(tensors: list[Tensor], g: torch.Generator) -> list[Tensor]:
    """The same random rotation by a multiple of 90° and optional horizontal flip per sample, applied to every
    tensor of ``tensors`` (each (B, …, H, W) with H = W; e.g. an image, its heights and its labels)."""
    b = tensors[0].shape[0]
    turns = torch.randint(0, 4, (b,), generator=g)
    flips = torch.rand(b, generator=g) < 0.5
    out = []
    for t in tensors:
        rows = []
        for i in range(b):
            x = torch.rot90(t[i], int(turns[i]), dims=(-2, -1))
            rows.append(torch.flip(x, dims=(-1,)) if bool(flips[i]) else x)
        out.append(torch.stack(rows))
    return out


def resized_crop(image: Tensor, g: torch.Generator, scale: tuple[float, float], size: int) -> Tensor:
    """Per sample, a random square crop covering ``scale`` (a range of area fractions) of the tile, at a random
    position, resampled bilinearly to ``size``×``size``."""
    b = image.shape[0]
    side = torch.sqrt(_uniform((b,), scale[0], scale[1], g))  # crop side as a fraction of the tile side
    cx = (1.0 - side) * _uniform((b,), -1.0, 1.0, g)
    cy = (1.0 - side) * _uniform((b,), -1.0, 1.0, g)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = side, side
    theta[:, 0, 2], theta[:, 1, 2] = cx, cy
    grid = F.affine_grid(theta, [b, image.shape[1], size, size], align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def photometric(image: Tensor, g: torch.Generator, strength: float = 1.0) -> Tensor:
    """Mild radiometric changes of standardised images: a per-sample gain (±15 %) and offset (±0.15), a per-band
    gain (±5 %) and Gaussian noise (std up to 0.1), all scaled by ``strength``."""
    b, c = image.shape[:2]
    gain = 1.0 + strength * _uniform((b, 1, 1, 1), -0.15, 0.15, g)
    band = 1.0 + strength * _uniform((b, c, 1, 1), -0.05, 0.05, g)
    offset = strength * _uniform((b, 1, 1, 1), -0.15, 0.15, g)
    noise = strength * _uniform((b, 1, 1, 1), 0.0, 0.1, g) * torch.randn(image.shape, generator=g)
    return image * gain * band + offset + noise


def random_patch_mask(batch: int, grid: tuple[int, int], ratio: float, g: torch.Generator) -> Tensor:
    """(B, h·w) bool mask with exactly ``round(ratio · h·w)`` masked patches per sample, chosen uniformly."""
    n = grid[0] * grid[1]
    k = int(round(ratio * n))
    order = torch.rand(batch, n, generator=g).argsort(dim=1)
    mask = torch.zeros(batch, n, dtype=torch.bool)
    mask.scatter_(1, order[:, :k], True)
    return mask


def draw_batch(tensors: list[Tensor], batch: int, g: torch.Generator) -> list[Tensor]:
    """``batch`` random samples (with replacement) of the aligned ``tensors`` (same first dimension), each with the
    same random dihedral transform applied to all of them."""
    index = torch.randint(0, tensors[0].shape[0], (batch,), generator=g)
    return dihedral([t[index] for t in tensors], g)


__all__ = ["dihedral", "draw_batch", "photometric", "random_patch_mask", "resized_crop"]
