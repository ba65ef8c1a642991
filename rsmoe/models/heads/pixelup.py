"""Pixel-up decode head, MPerS's ``pixelup`` decoder (arXiv 2605.10769, supplementary Table 3): the deepest map
only, no skips: three [Conv3×3 → PixelShuffle(2) → BN → ReLU] steps back towards the finest stride (resized to it
if the strides differ), a 1×1 classifier. **[design]** "pixel up" is read as sub-pixel (pixel-shuffle)
upsampling. ``channels``: the widths of the three up-steps.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..layers import upsample_to
from .base import PixelHead


class PixelUpHead(PixelHead):
    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: Sequence[int] = (256, 128, 64),
                 ignore_index: int = 255):
        super().__init__(ignore_index)
        widths = list(channels)
        if len(widths) != 3:
            raise ValueError(f"PixelUpHead: expected 3 up-step widths, got {widths}")
        ins = [in_channels[3], *widths[:-1]]
        self.up = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, 4 * cout, 3, padding=1, bias=False), nn.PixelShuffle(2),
                          nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
            for cin, cout in zip(ins, widths)
        )
        self.classifier = nn.Conv2d(widths[-1], num_classes, 1)

    def forward(self, features: Sequence[Tensor], query_pos: Tensor | None = None) -> Tensor:  # noqa: ARG002
        x = features[3]
        for block in self.up:
            x = block(x)
        return self.classifier(upsample_to(x, features[0]))


__all__ = ["PixelUpHead"]
