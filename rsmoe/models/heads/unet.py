"""U-Net decode head (Ronneberger et al. 2015), MPerS's default decoder (arXiv 2605.10769, supplementary Table 3).

From the deepest of the four maps up: ×2 bilinear upsampling, concatenation with the next finer skip map, two
Conv3×3-BN-ReLU; three such steps reach the finest level; a 1×1 classifier gives logits at the finest stride.
``channels``: the widths of the three up-steps, deepest first.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..layers import conv_bn_relu, upsample_to
from .base import PixelHead


class UNetHead(PixelHead):
    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: Sequence[int] = (256, 128, 64),
                 ignore_index: int = 255):
        super().__init__(ignore_index)
        c1, c2, c3, c4 = in_channels
        widths = list(channels)
        if len(widths) != 3:
            raise ValueError(f"UNetHead: expected 3 up-step widths, got {widths}")
        ins = [c4 + c3, widths[0] + c2, widths[1] + c1]
        self.up = nn.ModuleList(nn.Sequential(conv_bn_relu(cin, cout), conv_bn_relu(cout, cout))
                                for cin, cout in zip(ins, widths))
        self.classifier = nn.Conv2d(widths[-1], num_classes, 1)

    def forward(self, features: Sequence[Tensor], query_pos: Tensor | None = None) -> Tensor:  # noqa: ARG002
        x = features[3]
        for block, skip in zip(self.up, (features[2], features[1], features[0])):
            x = block(torch.cat([upsample_to(x, skip), skip], dim=1))
        return self.classifier(x)


__all__ = ["UNetHead"]
