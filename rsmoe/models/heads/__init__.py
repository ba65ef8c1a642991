"""Decode heads (the contract is in :mod:`.base`): ``fpn`` (light FPN), ``mask2former`` (SpectralMoE's head),
``unet`` / ``semantic_fpn`` / ``pixelup`` (MPerS's decoders, arXiv 2605.10769 supplementary Table 3). Any of them can
decode any rsmoe model's four-level pyramid."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ...registry import Registry

HEADS = Registry("head.type", {
    "fpn": "rsmoe.models.heads.fpn:FPNHead",
    "mask2former": "rsmoe.models.heads.mask2former:Mask2FormerHead",
    "unet": "rsmoe.models.heads.unet:UNetHead",
    "semantic_fpn": "rsmoe.models.heads.semantic_fpn:SemanticFPNHead",
    "pixelup": "rsmoe.models.heads.pixelup:PixelUpHead",
})


def build_head(kind: str, in_channels: Sequence[int], num_classes: int, channels: Any = 256,
               ignore_index: int = 255, **options: Any) -> nn.Module:
    """The head ``kind`` for four maps of ``in_channels`` and K = ``num_classes``. ``channels``: the head's width
    (an int; a list of up-step widths for unet/pixelup, whose first entry is the width of semantic_fpn)."""
    cls = HEADS.get(kind)
    if kind in ("unet", "pixelup", "semantic_fpn") and isinstance(channels, int):
        channels = (channels, max(channels // 2, 1), max(channels // 4, 1)) if kind != "semantic_fpn" else (channels,)
    return cls(list(in_channels), num_classes, channels=channels, ignore_index=ignore_index, **options)


__all__ = ["HEADS", "build_head"]
