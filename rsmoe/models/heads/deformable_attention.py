"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021) in pure PyTorch.

Every query looks at ``num_points`` locations on each of ``num_levels`` feature maps, per head. The locations are a
reference point (normalised (x, y) in [0, 1], the query's own position) plus offsets predicted from the query; the
offsets are in pixels of the level they sample, so they are divided by that level's (W, H). The values at the
locations are read with bilinear interpolation (zeros outside the map, ``align_corners=False`` — pixel centres at
(i + 0.5) / size) and averaged with weights that are a softmax over all levels × points of one head.

Shapes: B batch, Lq queries, S = Σ_l H_l·W_l value positions, M heads, L levels, P points, C channels, Dh = C / M.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ms_deform_attn_sample", "MultiScaleDeformableAttention", "level_reference_points"]


def ms_deform_attn_sample(
    value: Tensor,
    spatial_shapes: Sequence[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """The sampling core of deformable attention (no projections).

    Args:
        value: B × S × M × Dh, the levels' values flattened row-major and concatenated in ``spatial_shapes`` order.
        spatial_shapes: (H_l, W_l) of each level.
        sampling_locations: B × Lq × M × L × P × 2, normalised (x, y); (0, 0) is the top-left corner of the map.
        attention_weights: B × Lq × M × L × P (already normalised).

    Returns:
        B × Lq × (M·Dh), head-major channels (head m owns channels m·Dh … (m+1)·Dh − 1).
    """
    B, S, M, Dh = value.shape
    Lq, L, P = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    sizes = [int(h) * int(w) for h, w in spatial_shapes]
    if sum(sizes) != S or len(sizes) != L:
        raise ValueError(f"spatial_shapes {list(spatial_shapes)} do not match value length {S} / {L} levels")
    grids = 2.0 * sampling_locations - 1.0  # grid_sample wants [-1, 1]
    out = None
    for lvl, (v, (h, w)) in enumerate(zip(value.split(sizes, dim=1), spatial_shapes)):
        v = v.permute(0, 2, 3, 1).reshape(B * M, Dh, int(h), int(w))
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(B * M, Lq, P, 2)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # (BM) Dh Lq P
        a = attention_weights[:, :, :, lvl].transpose(1, 2).reshape(B * M, 1, Lq, P)
        term = (sampled * a).sum(-1)  # (BM) × Dh × Lq
        out = term if out is None else out + term
    return out.view(B, M * Dh, Lq).transpose(1, 2)


def level_reference_points(
    spatial_shapes: Sequence[tuple[int, int]], device=None, dtype=torch.float32
) -> Tensor:
    """Normalised pixel centres ((x + 0.5)/W, (y + 0.5)/H) of every level, concatenated: S × 2 (x, y)."""
    pts = []
    for h, w in spatial_shapes:
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        pts.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1))
    return torch.cat(pts, dim=0)


class MultiScaleDeformableAttention(nn.Module):
    """Deformable attention over several feature levels; returns the attended features (no residual, no norm)."""

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, num_levels: int = 3, num_points: int = 4) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.num_levels, self.num_points = embed_dim, num_heads, num_levels, num_points
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation: at start every head looks in its own direction (the M directions
        evenly spread on the circle, put on the square of radius 1), point p at distance p + 1 pixels; uniform
        attention weights."""
        M, L, P = self.num_heads, self.num_levels, self.num_points
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(M, dtype=torch.float32) * (2.0 * math.pi / M)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
        directions = directions / directions.abs().amax(dim=-1, keepdim=True)
        scale = torch.arange(1, P + 1, dtype=torch.float32).view(1, 1, P, 1)
        bias = directions.view(M, 1, 1, 2).expand(M, L, P, 2) * scale
        self.sampling_offsets.bias.copy_(bias.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value: Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
    ) -> Tensor:
        """query B×Lq×C (positional embedding already added), reference_points B×Lq×2 or B×Lq×L×2 (normalised
        (x, y)), value B×S×C (the flattened levels, no positional embedding) → B×Lq×C."""
        B, Lq, C = query.shape
        M, L, P = self.num_heads, self.num_levels, self.num_points
        if len(spatial_shapes) != L:
            raise ValueError(f"expected {L} levels, got {len(spatial_shapes)}")
        v = self.value_proj(value).view(B, value.shape[1], M, C // M)
        offsets = self.sampling_offsets(query).view(B, Lq, M, L, P, 2)
        weights = self.attention_weights(query).view(B, Lq, M, L * P).softmax(-1).view(B, Lq, M, L, P)
        # locations in at least float32: in bf16 a location on a 128-pixel map would be off by up to half a pixel
        dt = torch.promote_types(offsets.dtype, torch.float32)
        normaliser = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=dt, device=offsets.device)
        if reference_points.dim() == 3:
            reference_points = reference_points[:, :, None, :].expand(B, Lq, L, 2)
        offsets = offsets.to(dt) / normaliser[None, None, None, :, None, :]
        locations = reference_points.to(dt)[:, :, None, :, None, :] + offsets
        out = ms_deform_attn_sample(v.to(dt), spatial_shapes, locations, weights.to(dt))
        return self.output_proj(out.to(query.dtype))
