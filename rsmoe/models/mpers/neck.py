"""DINOv3 taps → a four-level feature pyramid (docs/mpers.md §2).

The patch tokens after four blocks (default [5, 11, 17, 23] of 24, [2, 5, 8, 11] of 12 — :func:`mpers_default_taps`)
are reshaped to B×D×h×w maps on the patch grid (stride p = patch size). Each tap gets its own projection::

    Conv1×1(D → 512) + channel LayerNorm,  Conv3×3(512 → 256) + channel LayerNorm

and then its own resampling to one pyramid level:

    stage 1: ConvT2×2/2 → channel LayerNorm → GELU → ConvT2×2/2     (stride p/4)
    stage 2: ConvT2×2/2                                              (stride p/2)
    stage 3: identity                                                (stride p)
    stage 4: MaxPool 2×2                                             (stride 2p)

**[design]** docs/mpers.md §2 names the two transposed convolutions of stage 1 but not what sits between them; a
channel LayerNorm + GELU (as in ViT feature-pyramid necks) keeps them from collapsing into one linear upsampling.
The projection widths (512, 256) are ``channels``; tiny test models use smaller ones.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .dilateformer import ChannelLayerNorm


def mpers_default_taps(num_layers: int) -> list[int]:
    """[5, 11, 17, 23] for 24 blocks (the DINOv3 segmentation code's taps), [2, 5, 8, 11] for 12; otherwise the
    ends of four equal quarters of the depth."""
    if num_layers < 4:
        raise ValueError(f"MPerS needs ≥ 4 backbone blocks for its four taps, got {num_layers}")
    return [round(num_layers * q / 4) - 1 for q in (1, 2, 3, 4)]


class TapPyramidNeck(nn.Module):
    """Four B×D×h×w tap maps → four maps B×C×(h·4)×(w·4), B×C×(h·2)×(w·2), B×C×h×w, B×C×(h/2)×(w/2)."""

    def __init__(self, embed_dim: int, channels: Sequence[int] = (512, 256)):
        super().__init__()
        mid, out = (int(c) for c in channels)
        self.out_channels = out
        self.proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(embed_dim, mid, 1), ChannelLayerNorm(mid),
                          nn.Conv2d(mid, out, 3, padding=1), ChannelLayerNorm(out))
            for _ in range(4)
        )
        self.resample = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(out, out, 2, stride=2), ChannelLayerNorm(out), nn.GELU(),
                          nn.ConvTranspose2d(out, out, 2, stride=2)),
            nn.ConvTranspose2d(out, out, 2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(2),
        ])

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        if len(maps) != 4:
            raise ValueError(f"TapPyramidNeck expects 4 tap maps, got {len(maps)}")
        return [resample(proj(m)) for m, proj, resample in zip(maps, self.proj, self.resample)]


__all__ = ["TapPyramidNeck", "mpers_default_taps"]
