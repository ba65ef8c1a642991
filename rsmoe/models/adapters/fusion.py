"""How the depth refinement steers the visual one (docs/spectralmoe.md §6).

Inputs are the visual and depth refinements Δf^v, Δf^d ∈ R^{B×N×d}; the output δ ∈ R^{B×N×d}.
With S = softmax_rows(Δf^d (Δf^v)ᵀ / √d) (depth as query, visual as key):

- ``official``: δ_n = S[n, n] · Δf^v_n — the public code's einsum takes the diagonal of S, a per-token scalar gate.
  Computed from the diagonal logit and the row log-sum-exp in row chunks under activation checkpointing, so neither
  the forward nor the backward pass ever holds an N×N tensor (memory O(chunk·N)).
- ``cross_attention``: δ = S · Δf^v (the paper's text), by ``scaled_dot_product_attention``.
- ``add``: δ = Δf^v + Δf^d (the paper's ablation).
- ``none``: δ = Δf^v (Rein: no depth branch).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

FUSIONS = ("official", "cross_attention", "add", "none")
DIAG_CHUNK = 128


def _diag_gate_chunk(q_chunk: Tensor, k_chunk: Tensor, keys: Tensor, scale: float) -> Tensor:
    """S[n, n] for the rows of one chunk: exp(q_n·k_n·s − logsumexp_m(q_n·k_m·s)); q_chunk, k_chunk B×c×d."""
    row_logits = torch.einsum("bcd,bmd->bcm", q_chunk, keys) * scale
    diag = (q_chunk * k_chunk).sum(-1) * scale
    return torch.exp(diag - torch.logsumexp(row_logits, dim=-1))


def diagonal_attention_gate(query: Tensor, key: Tensor, chunk: int = DIAG_CHUNK) -> Tensor:
    """Diagonal of softmax_rows(query keyᵀ / √d) for B×N×d inputs → B×N, without an N×N tensor."""
    scale = 1.0 / math.sqrt(query.shape[-1])
    n = query.shape[1]
    pieces = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        args = (query[:, start:stop], key[:, start:stop], key, scale)
        if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad):
            pieces.append(checkpoint(_diag_gate_chunk, *args, use_reentrant=False))
        else:
            pieces.append(_diag_gate_chunk(*args))
    return torch.cat(pieces, dim=1)


def fuse(delta_v: Tensor, delta_d: Tensor | None, mode: str) -> Tensor:
    """δ from the visual (B×N×d) and depth (B×N×d or None) refinements."""
    if mode == "none":
        return delta_v
    if mode not in FUSIONS:
        raise ValueError(f"unknown fusion {mode!r}; expected one of {FUSIONS}")
    if delta_d is None:
        raise ValueError(f"fusion {mode!r} needs the depth refinement; use fusion: none without a depth branch")
    if mode == "official":
        return diagonal_attention_gate(delta_d, delta_v).unsqueeze(-1) * delta_v
    if mode == "cross_attention":
        return F.scaled_dot_product_attention(delta_d, delta_v, delta_v)
    return delta_v + delta_d
