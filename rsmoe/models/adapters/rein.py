"""Rein (Wei et al., CVPR 2024) as a configuration of the SpectralMoE plug-in.

Rein keeps one low-rank token set per layer (E = 1), computes dot-product attention of each patch token over it,
has no routers and no depth branch, and applies the same update f ← f + α · delta(Δ + f).
"""
from __future__ import annotations

from .spectralmoe import SpectralMoE


def build_rein(num_layers: int, dim: int, num_tokens: int = 100, rank: int = 16, alpha_init: float = 1e-3,
               query_dim: int = 256) -> SpectralMoE:
    return SpectralMoE(
        num_layers=num_layers,
        dim=dim,
        num_experts=1,
        num_tokens=num_tokens,
        rank=rank,
        top_k=1,
        routing=False,
        use_depth=False,
        expert_logits="dot",
        fusion="none",
        alpha_init=alpha_init,
        query_dim=query_dim,
    )
