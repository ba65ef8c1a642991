"""Point sampling, matching costs and Hungarian matching for Mask2Former.

Masks are compared on sampled points rather than on whole maps (Mask2Former, PointRend): a point is a normalised
(x, y) in [0, 1]² (0 = the top-left corner of the map), read with bilinear interpolation (``align_corners=False``),
so predictions at H/4 and targets at H are compared at the same places.

Ignored pixels (label ``ignore_index``) are handled with a per-point weight ``w`` ∈ [0, 1]: the bilinear read of the
validity map. Targets are read "valid-normalised" (the bilinear read of the class mask divided by the read of the
validity map, i.e. interpolation over the valid neighbours only) and every per-point term is multiplied by ``w``,
so a point on an ignored pixel counts for nothing. With no ignored pixels (w ≡ 1) every formula below reduces to
Mask2Former's own.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = [
    "point_sample",
    "sample_targets",
    "uncertain_point_coords",
    "class_cost",
    "mask_bce_cost",
    "mask_dice_cost",
    "hungarian_match",
]


def point_sample(maps: Tensor, coords: Tensor) -> Tensor:
    """Bilinear read of maps at normalised points.

    ``maps`` N×H×W with ``coords`` N×P×2 (own points per map) → N×P, or ``coords`` P×2 (the same points for all
    maps) → N×P.
    """
    if coords.dim() == 2:  # shared points: one grid_sample with the maps as channels
        grid = (2.0 * coords - 1.0).to(maps.dtype).view(1, 1, -1, 2)
        return F.grid_sample(maps.unsqueeze(0), grid, mode="bilinear", align_corners=False)[0, :, 0]
    grid = (2.0 * coords - 1.0).to(maps.dtype).unsqueeze(2)  # N × P × 1 × 2
    return F.grid_sample(maps.unsqueeze(1), grid, mode="bilinear", align_corners=False)[:, 0, :, 0]


def sample_targets(masks: Tensor, valid: Tensor | None, coords: Tensor) -> tuple[Tensor, Tensor]:
    """Target masks G×H×W and validity map H×W (None = all valid) at points → (targets G×P in [0, 1], weights).

    Weights are P (shared coords) or G×P (own coords per mask).
    """
    t = point_sample(masks, coords)
    if valid is None:
        return t, torch.ones_like(t[0] if coords.dim() == 2 else t)
    if coords.dim() == 2:
        w = point_sample(valid[None], coords)[0]
        w_b = w.unsqueeze(0)
    else:
        w = point_sample(valid[None].expand(coords.shape[0], *valid.shape), coords)
        w_b = w
    t = torch.where(w_b > 0, t / w_b.clamp_min(1e-6), torch.zeros_like(t)).clamp_(0.0, 1.0)
    return t, w


@torch.no_grad()
def uncertain_point_coords(
    mask_logits: Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    valid: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Mask2Former's point choice for the mask losses, per mask: draw ⌊ratio·P⌋ uniform points, keep the
    ⌊importance·P⌋ most uncertain (largest −|logit|), fill up with uniform points → N×P×2.

    ``mask_logits`` N×h×w. ``valid`` (H×W, optional): oversampled points on ignored pixels are never kept as
    "uncertain" (the model gets no signal there, so they would stay uncertain and crowd out useful points).
    """
    n, dev, dt = mask_logits.shape[0], mask_logits.device, mask_logits.dtype
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    coords = torch.rand(n, num_sampled, 2, device=dev, dtype=dt, generator=generator)
    uncertainty = -point_sample(mask_logits, coords).abs()
    if valid is not None:
        w = point_sample(valid[None].to(dt), coords.reshape(-1, 2))[0].view(n, num_sampled)
        uncertainty = uncertainty.masked_fill(w <= 0, float("-inf"))
    idx = uncertainty.topk(num_uncertain, dim=1).indices
    chosen = coords.gather(1, idx.unsqueeze(-1).expand(n, num_uncertain, 2))
    if num_random > 0:
        chosen = torch.cat([chosen, torch.rand(n, num_random, 2, device=dev, dtype=dt, generator=generator)], dim=1)
    return chosen


def class_cost(class_logits: Tensor, labels: Tensor) -> Tensor:
    """Q×(K+1) logits, G labels → Q×G cost −p(label)."""
    return -class_logits.softmax(-1)[:, labels]


def mask_bce_cost(point_logits: Tensor, point_targets: Tensor, weights: Tensor) -> Tensor:
    """Q×P logits, G×P targets, P weights → Q×G weighted mean binary cross-entropy over the points."""
    pos = F.softplus(-point_logits) * weights  # BCE against target 1
    neg = F.softplus(point_logits) * weights  # BCE against target 0
    cost = pos @ point_targets.T + neg @ (1.0 - point_targets).T
    return cost / weights.sum().clamp_min(1e-6)


def mask_dice_cost(point_logits: Tensor, point_targets: Tensor, weights: Tensor, eps: float = 1.0) -> Tensor:
    """Q×P logits, G×P targets, P weights → Q×G cost 1 − (2Σwpt + ε)/(Σwp + Σwt + ε)."""
    p = point_logits.sigmoid() * weights
    numerator = 2.0 * p @ point_targets.T
    denominator = p.sum(-1)[:, None] + (point_targets * weights).sum(-1)[None, :]
    return 1.0 - (numerator + eps) / (denominator + eps)


def hungarian_match(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-cost one-to-one assignment of the rows (queries) to the columns (targets) of a Q×G cost matrix.

    Returns (query indices, target indices), int64, sorted by query index; min(Q, G) pairs.
    """
    c = cost.detach().float().cpu().numpy()
    if c.size == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty.clone()
    c = np.nan_to_num(c, nan=1e8, posinf=1e8, neginf=-1e8)
    rows, cols = linear_sum_assignment(c)
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)
