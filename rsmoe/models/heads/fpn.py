"""A light FPN decode head: four feature maps (strides 4, 8, 16, 32) → per-pixel class logits.

Every level is projected by a 1×1 convolution to ``channels``, merged top-down (upsample + add), smoothed by a
3×3 conv + GroupNorm + ReLU, upsampled to stride 4 and summed; a 1×1 convolution gives K class logits at stride 4.
The loss is pixel-wise cross-entropy at full resolution with the ignore index.

Every head in rsmoe has the same three calls: ``out = head(features, query_pos=None)``,
``head.loss(out, mask) -> {"loss": …}`` and ``head.predict(out, size) -> B×K×H×W scores``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class FPNHead(nn.Module):
    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 256, ignore_index: int = 255):
        super().__init__()
        self.ignore_index = ignore_index
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                nn.GroupNorm(_groups(channels), channels),
                nn.ReLU(inplace=True),
            )
            for _ in in_channels
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[Tensor], query_pos: Tensor | None = None) -> Tensor:  # noqa: ARG002
        """features: B×C_i×H_i×W_i from fine to coarse → B×K×H_0×W_0 logits at the finest level's stride."""
        lat = [conv(f) for conv, f in zip(self.lateral, features)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="bilinear",
                                                    align_corners=False)
        size = lat[0].shape[-2:]
        fused = sum(
            F.interpolate(s(x), size=size, mode="bilinear", align_corners=False) if i else s(x)
            for i, (s, x) in enumerate(zip(self.smooth, lat))
        )
        return self.classifier(fused)

    def predict(self, out: Tensor, size: tuple[int, int]) -> Tensor:
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)

    def loss(self, out: Tensor, mask: Tensor) -> dict[str, Tensor]:
        logits = self.predict(out, mask.shape[-2:])
        ce = F.cross_entropy(logits, mask, ignore_index=self.ignore_index)
        if not (mask != self.ignore_index).any():
            ce = logits.sum() * 0.0
        return {"loss": ce, "loss_ce": ce.detach()}
