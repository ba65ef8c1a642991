"""How the depth refinement steers the visual one (docs/spectralmoe.md §6).

Inputs are the visual and depth refinements Δf^v, Δf^d ∈ R^{B×N×d}; the output δ ∈ R^{B×N×d}.
With S = softmax_rows(Δf^d (Δf^v)ᵀ / √d) (depth as query, visual as key):

- ``official``: δ_n = S[n, n] · Δf^v_n — the public code's einsum takes the diagonal of S, a per-token scalar gate.
  Computed from the diagonal logit and the row log-sum-exp; beyond a few million row logits, in row chunks under
  activation checkpointing, so neither pass holds an N×N tensor then (memory O(chunk·N)).
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
#: row logits (B·rows·N elements) held at once by the official gate; up to this many for the whole B×N×N, they are
#: kept for the backward pass (2^22 float32 = 16 MiB per layer: batch 4 at N = 1024); beyond, the rows are split in
#: chunks of about this size, each recomputed in the backward pass (activation checkpointing), so that memory stays
#: O(chunk·N) at any N
GATE_ELEMENTS = 2**22


def _diag_gate_rows(query_rows: Tensor, key: Tensor, start: int, scale: float) -> Tensor:
    """S[n, n] for rows n = start … start + c − 1: exp(l_nn − logsumexp_m l_nm), l = q kᵀ·scale; query_rows B×c×d,
    key B×N×d → B×c. The diagonal is read from the same row logits the log-sum-exp sees (consistent rounding under
    bfloat16 autocast); the log-sum-exp runs in float32 at least."""
    logits = torch.baddbmm(query_rows.new_zeros(()).expand(1, 1, 1), query_rows, key.transpose(1, 2), beta=0.0,
                           alpha=scale)  # B×c×N
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    diag = logits[:, :, start : start + query_rows.shape[1]].diagonal(dim1=1, dim2=2)
    return torch.exp(diag - torch.logsumexp(logits, dim=-1))


def diagonal_attention_gate(query: Tensor, key: Tensor, chunk: int | None = None) -> Tensor:
    """Diagonal of softmax_rows(query keyᵀ / √d) for B×N×d inputs → B×N (float32 at least), never more than
    ``GATE_ELEMENTS`` row logits at once (or ``chunk`` rows per piece, if given)."""
    b, n, d = query.shape
    scale = 1.0 / math.sqrt(d)
    if chunk is None:
        chunk = n if b * n * n <= GATE_ELEMENTS else max(1, GATE_ELEMENTS // (b * n))
    if chunk >= n:
        return _diag_gate_rows(query, key, 0, scale)
    recompute = torch.is_grad_enabled() and (query.requires_grad or key.requires_grad)
    pieces = []
    for start in range(0, n, chunk):
        args = (query[:, start : start + chunk], key, start, scale)
        pieces.append(checkpoint(_diag_gate_rows, *args, use_reentrant=False) if recompute
                      else _diag_gate_rows(*args))
    return torch.cat(pieces, dim=1)


def fuse(delta_v: Tensor, delta_d: Tensor | None, mode: str, residual: Tensor | None = None) -> Tensor:
    """δ from the visual (B×N×d) and depth (B×N×d or None) refinements; with ``residual`` (B×N×d), δ + residual
    (for ``official`` in one pass: ``addcmul(residual, gate, Δf^v)``, no separate δ tensor)."""
    if mode not in FUSIONS:
        raise ValueError(f"unknown fusion {mode!r}; expected one of {FUSIONS}")
    if mode != "none" and delta_d is None:
        raise ValueError(f"fusion {mode!r} needs the depth refinement; use fusion: none without a depth branch")
    if mode == "official":
        gate = diagonal_attention_gate(delta_d, delta_v).unsqueeze(-1)
        return gate * delta_v if residual is None else torch.addcmul(residual, gate, delta_v)
    if mode == "cross_attention":
        fused = F.scaled_dot_product_attention(delta_d, delta_v, delta_v)
    else:
        fused = delta_v if mode == "none" else delta_v + delta_d
    return fused if residual is None else fused + residual
