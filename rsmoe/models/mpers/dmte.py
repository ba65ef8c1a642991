"""The text side of MPerS inside the model: linguistic attention and the Dynamic MixExperts Text Encoder (DMTE).

Input: ``text`` B×M×P×d_t — the frozen text encoder's embeddings of the captions of M MLLMs ("experts") under P = 3
prompts — and a mask of which captions exist.

**Linguistic attention** **[design]**: one trainable multi-head self-attention layer over an MLLM's P prompt
embeddings X ∈ R^{P×d_t}, with a residual, mean-pooled over the prompts::

    Y = X + Attn(X) W_o,   Attn = softmax(Q Kᵀ / √d_h) V per head,  Q, K, V = X W_{q,k,v} + b
    Φ_m = mean over present prompts p of Y_p                                   ∈ R^{d_t}

The residual keeps the frozen encoder's embedding as the starting point (the layer learns a correction); no
LayerNorm, so Φ_m stays on the encoder's scale. One layer is shared by all MLLMs (``shared_attention=True``,
default: the experts differ by their captions, not by how captions are read; 1 layer instead of M); ``False`` gives
each MLLM its own layer.

**DMTE** (one expert per MLLM)::

    Φ̄ = (1/M') Σ_{m present} Φ_m
    G = σ(g(Φ̄)) ∈ R^M,   g = Linear(d_t → hidden) → GELU → Linear(hidden → M)
    T_mix = Σ_{m present} W_m · G_m · Φ_m,   W_m learnable scalars (init 1/M)

Sigmoid gates need not sum to 1.

**Missing captions** **[design]**: ``text_mask`` is B×M (one flag per MLLM: its captions exist) or B×M×P (one per
prompt). A missing prompt is removed from its MLLM's attention (its key gets −∞ before the softmax) and from the
mean pooling; an MLLM with no prompt left is missing — it is left out of Φ̄ (M' counts the present ones) and out of
the sum. Missing entries may hold anything (they are zeroed first). A sample with no caption at all gets
T_mix = 0 and ``present = False``; :class:`~rsmoe.models.mpers.lqga.LQGA` then applies no guidance to it.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class LinguisticAttention(nn.Module):
    """Self-attention over one MLLM's prompt embeddings, residual, masked mean pooling: B×P×d, B×P → B×d."""

    def __init__(self, dim: int, num_heads: int = 8):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"LinguisticAttention: text dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, p, d = x.shape
        mask = mask.to(torch.bool)
        x = x.masked_fill(~mask[..., None], 0.0)
        q, k, v = self.qkv(x).reshape(b, p, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) * (d // self.num_heads) ** -0.5  # B, heads, P, P
        # finfo.min, not −inf: an MLLM with no prompt left then gets finite (unused) rows instead of NaN
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, p, d)
        y = x + self.proj(y)
        weights = mask.to(y.dtype)
        return (y * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1.0)


class DMTEOutput(NamedTuple):
    text: Tensor  # T_mix, B×d_t
    gates: Tensor  # G, B×M (σ outputs; missing experts still get a value but are not used)
    present: Tensor  # B bool: the sample had at least one caption
    expert_mask: Tensor  # B×M bool


def expand_text_mask(text: Tensor, text_mask: Tensor | None) -> Tensor:
    """B×M or B×M×P (or None = all present) → B×M×P bool."""
    b, m, p, _ = text.shape
    if text_mask is None:
        return torch.ones(b, m, p, dtype=torch.bool, device=text.device)
    text_mask = text_mask.to(device=text.device, dtype=torch.bool)
    if text_mask.shape == (b, m):
        return text_mask[..., None].expand(b, m, p)
    if text_mask.shape == (b, m, p):
        return text_mask
    raise ValueError(f"text_mask must be B×M {(b, m)} or B×M×P {(b, m, p)}, got {tuple(text_mask.shape)}")


class DMTE(nn.Module):
    """Dynamic MixExperts Text Encoder: B×M×P×d_t caption embeddings (+ mask) → :class:`DMTEOutput`."""

    def __init__(self, text_dim: int, num_experts: int, num_heads: int = 8, gate_hidden: int = 128,
                 shared_attention: bool = True):
        super().__init__()
        self.text_dim, self.num_experts = text_dim, num_experts
        self.shared_attention = shared_attention
        n_layers = 1 if shared_attention else num_experts
        self.attention = nn.ModuleList(LinguisticAttention(text_dim, num_heads) for _ in range(n_layers))
        self.gate = nn.Sequential(nn.Linear(text_dim, gate_hidden), nn.GELU(), nn.Linear(gate_hidden, num_experts))
        self.expert_weight = nn.Parameter(torch.full((num_experts,), 1.0 / num_experts))

    def forward(self, text: Tensor, text_mask: Tensor | None = None) -> DMTEOutput:
        if text.dim() != 4 or text.shape[1] != self.num_experts or text.shape[3] != self.text_dim:
            raise ValueError(f"DMTE expects text B×{self.num_experts}×P×{self.text_dim}, got {tuple(text.shape)}")
        prompt_mask = expand_text_mask(text, text_mask)
        phi = torch.stack([self.attention[0 if self.shared_attention else m](text[:, m], prompt_mask[:, m])
                           for m in range(self.num_experts)], dim=1)  # B×M×d
        expert_mask = prompt_mask.any(-1)
        e = expert_mask.to(phi.dtype)
        phi = phi * e[..., None]
        mean = phi.sum(1) / e.sum(1, keepdim=True).clamp(min=1.0)
        gates = torch.sigmoid(self.gate(mean))
        mixed = ((self.expert_weight * gates * e)[..., None] * phi).sum(1)
        return DMTEOutput(mixed, gates, expert_mask.any(-1), expert_mask)


__all__ = ["DMTE", "DMTEOutput", "LinguisticAttention", "expand_text_mask"]
