"""Masked image modelling on a DINOv3 ViT (SimMIM-style: arXiv 2111.09886, §3).

A random ``mask_ratio`` of the patch tokens is replaced by the model's own ``mask_token`` (the
``bool_masked_pos`` input of ``DINOv3ViTModel``); a small MLP decoder maps every output patch token to the
``3 × p × p`` pixels of its patch, and the loss is the mean squared error over the masked patches only. The pixels
are the standardised input itself (no per-patch normalisation: a patch's mean colour is exactly what separates
land-cover classes, so the target keeps it).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import DINOv3ViTModel

from .augment import draw_batch, photometric, random_patch_mask


def patchify(image: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) → (B, N, C·p·p) with N = (H/p)(W/p) patches in row-major order (the ViT's token order)."""
    b, c, h, w = image.shape
    x = image.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


class MaskedImageModelling(nn.Module):
    """The MIM objective around ``model``; ``images`` (N, 3, H, W) standardised corpus tiles drawn ``batch`` at a
    time (dihedral transforms and mild photometric changes)."""

    def __init__(self, model: DINOv3ViTModel, images: Tensor, batch: int = 64, mask_ratio: float = 0.5):
        super().__init__()
        cfg = model.config
        self.model = model
        self.images = images
        self.batch = int(batch)
        self.mask_ratio = float(mask_ratio)
        self.patch = int(cfg.patch_size)
        self.prefix = 1 + int(cfg.num_register_tokens)
        width = int(cfg.hidden_size)
        self.decoder = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(),
                                     nn.Linear(2 * width, cfg.num_channels * self.patch**2))

    def loss(self, step: int, g: torch.Generator) -> tuple[Tensor, dict]:
        (x,) = draw_batch([self.images], self.batch, g)
        x = photometric(x, g)
        grid = (x.shape[-2] // self.patch, x.shape[-1] // self.patch)
        mask = random_patch_mask(x.shape[0], grid, self.mask_ratio, g)
        tokens = self.model(pixel_values=x, bool_masked_pos=mask).last_hidden_state[:, self.prefix:]
        error = (self.decoder(tokens) - patchify(x, self.patch)).pow(2).mean(-1)
        return error[mask].mean(), {"visible_mse": float(error[~mask].mean().detach())}


__all__ = ["MaskedImageModelling", "patchify"]
