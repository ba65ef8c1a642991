"""Semantic-FPN decode head (Kirillov et al. 2019, panoptic FPN's semantic branch), MPerS's ``fpn`` decoder
(arXiv 2605.10769, supplementary Table 3).

1×1 laterals to ``channels[0]``, the FPN top-down pathway (×2 upsample + add), 3×3 output convolutions; each level
is then brought to the finest stride by [Conv3×3-GN-ReLU, ×2 bilinear] steps (one Conv3×3-GN-ReLU without
upsampling for the finest) at half the width; the four are summed; a 1×1 classifier.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import conv_gn_relu, top_down_merge, upsample_to
from .base import PixelHead


class ScaleBranch(nn.Module):
    """``steps`` × [Conv3×3-GN-ReLU, ×2 upsample] (one conv and no upsampling if steps = 0), then resized to the
    reference map if odd sizes left it off by a pixel."""

    def __init__(self, cin: int, cout: int, steps: int):
        super().__init__()
        self.steps = steps
        self.convs = nn.ModuleList(conv_gn_relu(cin if i == 0 else cout, cout) for i in range(max(1, steps)))

    def forward(self, x: Tensor, ref: Tensor) -> Tensor:
        for conv in self.convs:
            x = conv(x)
            if self.steps:
                x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return upsample_to(x, ref)


class SemanticFPNHead(PixelHead):
    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: Sequence[int] = (256,),
                 ignore_index: int = 255):
        super().__init__(ignore_index)
        width = int(channels[0])
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in in_channels)
        self.branches = nn.ModuleList(ScaleBranch(width, width // 2, steps) for steps in range(len(in_channels)))
        self.classifier = nn.Conv2d(width // 2, num_classes, 1)

    def forward(self, features: Sequence[Tensor], query_pos: Tensor | None = None) -> Tensor:  # noqa: ARG002
        merged = top_down_merge([conv(f) for conv, f in zip(self.lateral, features)])
        pyramid = [conv(x) for conv, x in zip(self.output, merged)]
        return self.classifier(sum(branch(x, features[0]) for branch, x in zip(self.branches, pyramid)))


__all__ = ["ScaleBranch", "SemanticFPNHead"]
