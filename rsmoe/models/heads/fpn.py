"""A light FPN decode head: four feature maps (strides 4, 8, 16, 32) → per-pixel class logits.

Every level is projected by a 1×1 convolution to ``channels``, merged top-down (upsample + add), smoothed by a
3×3 conv + GroupNorm + ReLU, upsampled to stride 4 and summed; a 1×1 convolution gives K class logits at stride 4.
The loss is pixel-wise cross-entropy at full resolution with the ignore index (:class:`~.base.PixelHead`).
"""
from __future__ import annotations

from torch import Tensor, nn

from ..layers import conv_gn_relu, top_down_merge, upsample_to
from .base import PixelHead


class FPNHead(PixelHead):
    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 256, ignore_index: int = 255):
        super().__init__(ignore_index)
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(conv_gn_relu(channels, channels) for _ in in_channels)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[Tensor], query_pos: Tensor | None = None) -> Tensor:  # noqa: ARG002
        """features: B×C_i×H_i×W_i from fine to coarse → B×K×H_0×W_0 logits at the finest level's stride."""
        merged = top_down_merge([conv(f) for conv, f in zip(self.lateral, features)])
        fused = sum(upsample_to(smooth(x), merged[0]) for smooth, x in zip(self.smooth, merged))
        return self.classifier(fused)


__all__ = ["FPNHead"]
