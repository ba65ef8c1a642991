"""The DilateFormer adapter block of MPerS (supplementary §3.1, Fig. 2) and its MHSA ablation.

One block on a B×C×H×W map::

    x = x + DWConv3×3(x)                 # conditional positional term (optional, ``pos_conv``)
    x = x + Attn(LN(x))                  # pre-LayerNorm attention, residual
    x = x + MLP(LN(x))                   # pre-LayerNorm MLP (ratio 4, GELU), residual

``attention='dilate'``: :class:`~rsmoe.models.mpers.dilated_attention.DilatedAttention` with a single dilation
rate r (k = 3; r = 1 is the paper's best, 2 and 3 ablated in Table 2). ``attention='mhsa'``: plain multi-head
self-attention over all H·W positions (Table 2's MHSA row) with the same parameterisation — q, k, v from one 1×1
convolution with bias, scale d_h^−½, output ``Linear`` — so the two rows differ only in which keys a query sees.
LayerNorms normalise over channels at every position.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .dilated_attention import DilatedAttention


class MultiHeadSelfAttention(nn.Module):
    """Global multi-head self-attention on a B×C×H×W map (q, k, v = Conv1×1 with bias; output Linear)."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MultiHeadSelfAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(x).reshape(b, 3, self.num_heads, c // self.num_heads, h * w).transpose(-1, -2)
        y = F.scaled_dot_product_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2])  # B, heads, N, d_h
        y = y.transpose(1, 2).reshape(b, h, w, c)
        return self.proj(y).permute(0, 3, 1, 2)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a B×C×H×W map."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DilateBlock(nn.Module):
    """One adapter block (see the module docstring). ``attention``: 'dilate' | 'mhsa'."""

    def __init__(self, dim: int, num_heads: int = 8, kernel_size: int = 3, dilation: int = 1,
                 attention: str = "dilate", mlp_ratio: float = 4.0, pos_conv: bool = True):
        super().__init__()
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if pos_conv else None
        self.norm1 = ChannelLayerNorm(dim)
        if attention == "dilate":
            self.attn: nn.Module = DilatedAttention(dim, num_heads, kernel_size=kernel_size, dilation=dilation)
        elif attention == "mhsa":
            self.attn = MultiHeadSelfAttention(dim, num_heads)
        else:
            raise ValueError(f"DilateBlock: attention must be 'dilate' or 'mhsa', got {attention!r}")
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        if self.pos is not None:
            x = x + self.pos(x)
        x = x + self.attn(self.norm1(x))
        y = x.permute(0, 2, 3, 1)
        return (y + self.mlp(self.norm2(y))).permute(0, 3, 1, 2)


class DilateAdapter(nn.Sequential):
    """``depth`` DilateBlocks in a row on one B×C×H×W map (the unit placed on a stage by :class:`MPerS`)."""

    def __init__(self, dim: int, depth: int = 1, **block_kwargs):
        super().__init__(*(DilateBlock(dim, **block_kwargs) for _ in range(depth)))


__all__ = ["ChannelLayerNorm", "DilateAdapter", "DilateBlock", "MultiHeadSelfAttention"]
