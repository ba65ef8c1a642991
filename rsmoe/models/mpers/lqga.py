"""Language-query guided attention (LQGA): the mixed text vector re-weights the channels of a visual stage map.

With F_v ∈ R^{B×C×H×W} the stage's visual map (the fused DINOv3 + LDPE map of that pyramid level, after its
adapter if any) and T_mix ∈ R^{B×d_t} from :class:`~rsmoe.models.mpers.dmte.DMTE`::

    Q_t = W_q T_mix + b_q                     ∈ R^{C}     (T_mix projected to the visual width: the one query)
    K_v = F_v W_k + b_k,  V_v = F_v W_v + b_v ∈ R^{N×C}   (per position, N = H·W)
    u   = softmax_N(Q_t K_vᵀ / √C) V_v        ∈ R^{C}     (single head, d = C)
    w   = ξ(u) = u / (mean_c |u_c| + ε)                   (ε = 1e-6)
    F_v′ = w ⊙ F_v + F_v                                  (channel re-weighting with a residual)
    Z   = Conv1×1(concat(F_v′, f^v))          ∈ R^{B×C×H×W}

**[design] ξ.** "Divide by the mean over channels" breaks down when that mean is near zero (u is a convex
combination of projected values and has either sign), so ξ divides by the mean of |u| (+ ε): w then has mean
absolute value 1 whatever the scale of u, and ξ(0) = 0 (no re-weighting) instead of a blow-up.

**[design] f^v.** The paper's f^v is read as the stage's *pre-guidance* visual map, i.e. F_v itself before the
re-weighting: the 1×1 convolution sees the guided and the unguided features side by side and learns how much
guidance to keep (with w = 0 it still sees F_v twice, so a model trained with text also runs without it).

**No text.** ``text=None`` or ``present[b] = False`` sets w = 0 for that sample: F_v′ = F_v and Z = Conv1×1(concat(F_v,
F_v)) — the stage runs with the same parameters, unguided.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def mean_abs_normalise(u: Tensor, eps: float = 1e-6) -> Tensor:
    """ξ: u / (mean over the last dim of |u| + eps)."""
    return u / (u.abs().mean(dim=-1, keepdim=True) + eps)


class LQGA(nn.Module):
    """B×C×H×W visual map + B×d_t text vector → B×C×H×W guided map (see the module docstring)."""

    def __init__(self, text_dim: int, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.query = nn.Linear(text_dim, channels)
        self.key = nn.Linear(channels, channels)
        self.value = nn.Linear(channels, channels)
        self.fuse = nn.Conv2d(2 * channels, channels, 1)

    def channel_weights(self, visual: Tensor, text: Tensor) -> Tensor:
        """w = ξ(softmax(Q_t K_vᵀ/√C) V_v): B×C."""
        x = visual.flatten(2).transpose(1, 2)  # B×N×C
        q = self.query(text)  # B×C
        scores = (self.key(x) @ q[..., None]).squeeze(-1) * x.shape[-1] ** -0.5  # B×N
        u = (scores.softmax(dim=1)[..., None] * self.value(x)).sum(1)
        return mean_abs_normalise(u, self.eps)

    def forward(self, visual: Tensor, text: Tensor | None = None, present: Tensor | None = None) -> Tensor:
        guided = visual
        if text is not None:
            w = self.channel_weights(visual, text)
            if present is not None:
                w = w * present.to(device=w.device, dtype=w.dtype)[:, None]
            guided = w[..., None, None] * visual + visual
        return self.fuse(torch.cat([guided, visual], dim=1))


__all__ = ["LQGA", "mean_abs_normalise"]
