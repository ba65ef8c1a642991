"""MPerS decoders (supplementary Table 3): four fused maps (strides p/4, p/2, p, 2p) → class logits at stride p/4.

* ``unet`` (default, Ronneberger et al.): from the deepest map up: ×2 bilinear upsampling, concatenation with the
  next finer skip map, two Conv3×3-BN-ReLU; three such steps reach the finest level; a 1×1 classifier.
* ``fpn`` (Lin et al.; semantic-FPN merge of Kirillov et al.'s panoptic FPN): 1×1 laterals to ``channels``, top-down
  pathway (×2 upsample + add), 3×3 output convolutions; each level is then brought to the finest stride by
  [Conv3×3-GN-ReLU, ×2 bilinear] steps (one Conv3×3-GN-ReLU without upsampling for the finest) at ``channels / 2``,
  the four are summed, a 1×1 classifier.
* ``pixelup``: the deepest map only, no skips: three [Conv3×3 → PixelShuffle(2) → BN → ReLU] steps back to the finest
  stride, a 1×1 classifier. **[design]** "pixel up" is read as sub-pixel (pixel-shuffle) upsampling.

``channels``: the widths of the three up-steps for ``unet``/``pixelup`` (deepest first), the FPN width (first
entry) for ``fpn``. Every decoder returns logits at the finest map's resolution; :class:`MPerS` upsamples them
bilinearly to the image size (×4 for patch 16).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ldpe import conv_bn_relu

DECODERS = ("unet", "fpn", "pixelup")


def _up_to(x: Tensor, ref: Tensor) -> Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class UNetDecoder(nn.Module):
    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: Sequence[int] = (256, 128, 64)):
        super().__init__()
        c1, c2, c3, c4 = in_channels
        widths = list(channels)
        if len(widths) != 3:
            raise ValueError(f"UNetDecoder: expected 3 up-step widths, got {widths}")
        ins = [c4 + c3, widths[0] + c2, widths[1] + c1]
        self.up = nn.ModuleList(nn.Sequential(conv_bn_relu(cin, cout), conv_bn_relu(cout, cout))
                                for cin, cout in zip(ins, widths))
        self.classifier = nn.Conv2d(widths[-1], num_classes, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        x = feats[3]
        for block, skip in zip(self.up, (feats[2], feats[1], feats[0])):
            x = block(torch.cat([_up_to(x, skip), skip], dim=1))
        return self.classifier(x)


def _groups(channels: int) -> int:
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


def _conv_gn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(_groups(cout), cout),
                         nn.ReLU(inplace=True))


class _ScaleBranch(nn.Module):
    """Semantic-FPN branch: ``steps`` × [Conv3×3-GN-ReLU, ×2 upsample] (one conv and no upsampling if steps = 0)."""

    def __init__(self, cin: int, cout: int, steps: int):
        super().__init__()
        self.steps = steps
        self.convs = nn.ModuleList(_conv_gn_relu(cin if i == 0 else cout, cout) for i in range(max(1, steps)))

    def forward(self, x: Tensor, ref: Tensor) -> Tensor:
        for conv in self.convs:
            x = conv(x)
            if self.steps:
                x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return x if x.shape[-2:] == ref.shape[-2:] else _up_to(x, ref)


class FPNDecoder(nn.Module):
    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: Sequence[int] = (256,)):
        super().__init__()
        width = int(channels[0])
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in in_channels)
        self.branches = nn.ModuleList(_ScaleBranch(width, width // 2, steps) for steps in range(len(in_channels)))
        self.classifier = nn.Conv2d(width // 2, num_classes, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        lat = [conv(f) for conv, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + _up_to(lat[i], lat[i - 1])
        pyramid = [conv(x) for conv, x in zip(self.output, lat)]
        merged = sum(branch(x, feats[0]) for branch, x in zip(self.branches, pyramid))
        return self.classifier(merged)


class PixelUpDecoder(nn.Module):
    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: Sequence[int] = (256, 128, 64)):
        super().__init__()
        widths = list(channels)
        if len(widths) != 3:
            raise ValueError(f"PixelUpDecoder: expected 3 up-step widths, got {widths}")
        ins = [in_channels[3], *widths[:-1]]
        self.up = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, 4 * cout, 3, padding=1, bias=False), nn.PixelShuffle(2),
                          nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
            for cin, cout in zip(ins, widths)
        )
        self.classifier = nn.Conv2d(widths[-1], num_classes, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        x = feats[3]
        for block in self.up:
            x = block(x)
        if x.shape[-2:] != feats[0].shape[-2:]:
            x = _up_to(x, feats[0])
        return self.classifier(x)


def build_decoder(kind: str, in_channels: Sequence[int], num_classes: int,
                  channels: Sequence[int] = (256, 128, 64)) -> nn.Module:
    if kind == "unet":
        return UNetDecoder(in_channels, num_classes, channels)
    if kind == "fpn":
        return FPNDecoder(in_channels, num_classes, channels)
    if kind == "pixelup":
        return PixelUpDecoder(in_channels, num_classes, channels)
    raise ValueError(f"MPerS decoder: got {kind!r}, expected one of {list(DECODERS)}")


__all__ = ["DECODERS", "FPNDecoder", "PixelUpDecoder", "UNetDecoder", "build_decoder"]
