"""LDPE, the lightweight detail prior encoder of MPerS: a small trainable CNN beside the frozen ViT.

**[design]** (the paper gives no layout): a stem and four stages of conv-BN-ReLU, each stage halving the
resolution, widths 32 → 256::

    stem   : log2(patch/4) × [Conv3×3(→ w1, stride 2) BN ReLU]          stride patch / 4 (two convs for patch 16)
    stage 1: Conv3×3(w1 → w1) BN ReLU, Conv3×3(w1 → w1) BN ReLU          stride patch / 4
    stage i: Conv3×3(w_{i−1} → w_i, stride 2) BN ReLU, Conv3×3(w_i → w_i) BN ReLU   (i = 2, 3, 4)

so its four outputs sit on the same grid as the DINOv3 pyramid (strides patch/4, patch/2, patch, 2·patch; 4, 8, 16,
32 for patch 16) and can be concatenated with it level by level. The input is the normalised image with all its
bands (the LDPE, unlike the frozen ViT, is trained on the sensor's own bands). ``patch_size / 4`` must be a power
of two (patch 4 gets a single stride-1 stem conv).
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..layers import conv_bn_relu


class LDPE(nn.Module):
    """Image B×C_in×H×W → four maps B×w_i×(H/s_i)×(W/s_i), s_i = patch/4 · 2^(i−1)."""

    def __init__(self, in_channels: int, widths: Sequence[int] = (32, 64, 128, 256), patch_size: int = 16):
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) != 4:
            raise ValueError(f"LDPE: expected 4 stage widths, got {widths}")
        stride = patch_size // 4
        if patch_size % 4 or stride & (stride - 1):
            raise ValueError(f"LDPE: the backbone's patch size {patch_size} is not 4 × a power of two")
        self.widths = widths
        n_stem = max(1, stride.bit_length() - 1)
        self.stem = nn.Sequential(*(conv_bn_relu(in_channels if i == 0 else widths[0], widths[0],
                                                 stride=2 if stride > 1 else 1) for i in range(n_stem)))
        stages = [nn.Sequential(conv_bn_relu(widths[0], widths[0]), conv_bn_relu(widths[0], widths[0]))]
        for cin, cout in zip(widths[:-1], widths[1:]):
            stages.append(nn.Sequential(conv_bn_relu(cin, cout, stride=2), conv_bn_relu(cout, cout)))
        self.stages = nn.ModuleList(stages)

    def forward(self, image: Tensor) -> list[Tensor]:
        x = self.stem(image)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


__all__ = ["LDPE"]
