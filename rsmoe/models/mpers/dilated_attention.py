"""Sliding-window dilated attention (DilateFormer, Jiao et al. 2023) with a single dilation rate.

Per head, the query at (i, j) attends to the k×k keys/values at (i + r·a, j + r·b), a, b ∈ −(k−1)/2 … (k−1)/2
(k odd, r the dilation). Outside the map the keys and values are zero vectors that still take part in the softmax,
as in the original DilateFormer, which gathers neighbourhoods with ``unfold`` and zero padding: a query on the
border therefore always sees k² scores, the padded ones equal to 0.

.. math:: y_{ij} = \\mathrm{softmax}_{ab}\\big(d_h^{-1/2}\\, q_{ij} \\cdot k_{i+ra,\\,j+rb}\\big)\\, v_{i+ra,\\,j+rb}

Two equivalent functional forms, both on B×C×H×W tensors whose C = heads · d_h channels are head-major (head h owns
channels h·d_h … (h+1)·d_h − 1):

* :func:`dilated_attention` — the implementation: one shifted view of the zero-padded keys/values per window offset
  (k² views, no copies); scores are a product-sum over each head's channels, so what is stored is k² score maps
  (k²×B×heads×H×W, d_h times smaller than the gathered keys), never a k²-times copy of the keys or values. The
  backward pass is written out (:class:`_DilatedAttentionFn`): gradients of keys and values are accumulated in place
  into one padded buffer instead of autograd's one zero-filled buffer per slice.
* :func:`dilated_attention_unfold` — the reference: the original ``unfold`` gather (channel-major, k² positions per
  channel) and batched matrix products. It materialises k²× the key and value tensors.

``benchmarks/bench_dilated_attention.py`` times both (forward + backward) at stage-4 sizes; the faster one is the
implementation (see its results). :class:`DilatedAttention` is the module: q, k, v from one 1×1 convolution with
bias, the attention above, an output ``Linear``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check(q: Tensor, k: Tensor, v: Tensor, num_heads: int, kernel_size: int, dilation: int) -> tuple[int, ...]:
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"q, k, v must be B×C×H×W of one shape, got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    b, c, h, w = q.shape
    if c % num_heads:
        raise ValueError(f"{c} channels do not split into {num_heads} heads")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and ≥ 1, got {kernel_size}")
    if dilation < 1:
        raise ValueError(f"dilation must be ≥ 1, got {dilation}")
    return b, c, h, w


def _offsets(kernel_size: int, dilation: int) -> list[tuple[int, int]]:
    """(row, col) start of each window position in the padded map, in unfold's row-major order."""
    return [(a * dilation, b * dilation) for a in range(kernel_size) for b in range(kernel_size)]


class _DilatedAttentionFn(torch.autograd.Function):
    """Shifted-view dilated attention with a hand-written backward (q pre-scaled, heads split off)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, num_heads: int, kernel_size: int, dilation: int) -> Tensor:
        b, c, h, w = q.shape
        d = c // num_heads
        pad = dilation * (kernel_size - 1) // 2
        kp = F.pad(k, (pad, pad, pad, pad)).view(b, num_heads, d, h + 2 * pad, w + 2 * pad)
        vp = F.pad(v, (pad, pad, pad, pad)).view(b, num_heads, d, h + 2 * pad, w + 2 * pad)
        qh = q.view(b, num_heads, d, h, w)
        offsets = _offsets(kernel_size, dilation)
        scores = q.new_empty(len(offsets), b, num_heads, h, w)  # window position first: scores[n] is contiguous
        for n, (r0, c0) in enumerate(offsets):
            torch.sum(qh * kp[..., r0:r0 + h, c0:c0 + w], dim=2, out=scores[n])
        attn = scores.softmax(dim=0)
        out = torch.zeros_like(qh)
        for n, (r0, c0) in enumerate(offsets):
            out.addcmul_(attn[n].unsqueeze(2), vp[..., r0:r0 + h, c0:c0 + w])
        ctx.save_for_backward(qh, kp, vp, attn)
        ctx.geometry = (num_heads, kernel_size, dilation, pad)
        return out.view(b, c, h, w)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        qh, kp, vp, attn = ctx.saved_tensors
        num_heads, kernel_size, dilation, pad = ctx.geometry
        b, _, d, h, w = qh.shape
        g = grad_out.reshape(b, num_heads, d, h, w)
        offsets = _offsets(kernel_size, dilation)
        # d(out)/d(attn_n) = g · v_n ; softmax backward: ds = attn ⊙ (da − Σ_n attn ⊙ da)
        dattn = torch.empty_like(attn)
        gvp = torch.zeros_like(vp)
        for n, (r0, c0) in enumerate(offsets):
            torch.sum(g * vp[..., r0:r0 + h, c0:c0 + w], dim=2, out=dattn[n])
            gvp[..., r0:r0 + h, c0:c0 + w].addcmul_(attn[n].unsqueeze(2), g)
        ds = attn * (dattn - (attn * dattn).sum(dim=0, keepdim=True))
        gq = torch.zeros_like(qh)
        gkp = torch.zeros_like(kp)
        for n, (r0, c0) in enumerate(offsets):
            s = ds[n].unsqueeze(2)
            gq.addcmul_(s, kp[..., r0:r0 + h, c0:c0 + w])
            gkp[..., r0:r0 + h, c0:c0 + w].addcmul_(s, qh)
        crop = (slice(None),) * 3 + (slice(pad, pad + h), slice(pad, pad + w))
        c = num_heads * d
        return (gq.view(b, c, h, w), gkp[crop].reshape(b, c, h, w), gvp[crop].reshape(b, c, h, w),
                None, None, None)


def dilated_attention(q: Tensor, k: Tensor, v: Tensor, num_heads: int, kernel_size: int = 3,
                      dilation: int = 1) -> Tensor:
    """Sliding-window dilated attention on B×C×H×W queries, keys and values → B×C×H×W (scale d_h^−½ inside)."""
    _check(q, k, v, num_heads, kernel_size, dilation)
    scale = (q.shape[1] // num_heads) ** -0.5
    return _DilatedAttentionFn.apply((q * scale).contiguous(), k.contiguous(), v.contiguous(), num_heads,
                                     kernel_size, dilation)


def dilated_attention_unfold(q: Tensor, k: Tensor, v: Tensor, num_heads: int, kernel_size: int = 3,
                             dilation: int = 1) -> Tensor:
    """Reference: the original DilateFormer ``unfold`` gather (k²× keys and values materialised), same result."""
    b, c, h, w = _check(q, k, v, num_heads, kernel_size, dilation)
    d, kk, n = c // num_heads, kernel_size * kernel_size, h * w
    pad = dilation * (kernel_size - 1) // 2
    qh = (q * d ** -0.5).reshape(b, num_heads, d, 1, n).permute(0, 1, 4, 3, 2)  # B, heads, N, 1, d
    # unfold: B × (C·k²) × N, channel-major (each channel's k² window positions are adjacent)
    ku = F.unfold(k, kernel_size, dilation=dilation, padding=pad).reshape(b, num_heads, d, kk, n)
    ku = ku.permute(0, 1, 4, 2, 3)  # B, heads, N, d, k²
    attn = (qh @ ku).softmax(dim=-1)  # B, heads, N, 1, k²
    vu = F.unfold(v, kernel_size, dilation=dilation, padding=pad).reshape(b, num_heads, d, kk, n)
    vu = vu.permute(0, 1, 4, 3, 2)  # B, heads, N, k², d
    out = (attn @ vu).squeeze(3)  # B, heads, N, d
    return out.permute(0, 1, 3, 2).reshape(b, c, h, w)


class DilatedAttention(nn.Module):
    """Dilated attention layer on B×C×H×W maps: q, k, v = Conv1×1(x) (bias ``qkv_bias``), attention, output
    ``Linear``.

    ``dilation``: one rate for all heads, or one rate per equal group of heads as in DilateFormer's multi-scale
    dilated attention (its stages 1–2 split the heads over the rates [1, 2, 3]: group g takes heads
    g·h/n … (g+1)·h/n − 1, i.e. channels g·C/n … (g+1)·C/n − 1 of q, k and v). ``impl`` picks the functional form
    ('shift' = :func:`dilated_attention`, 'unfold' = the reference); both give the same numbers.
    """

    def __init__(self, dim: int, num_heads: int = 8, kernel_size: int = 3, dilation: int | Sequence[int] = 1,
                 qkv_bias: bool = True, impl: str = "shift"):
        super().__init__()
        rates = (dilation,) if isinstance(dilation, int) else tuple(int(r) for r in dilation)
        if dim % num_heads:
            raise ValueError(f"DilatedAttention: dim {dim} is not divisible by num_heads {num_heads}")
        if not rates or num_heads % len(rates):
            raise ValueError(f"DilatedAttention: {num_heads} heads do not split into {len(rates)} dilation groups")
        if impl not in ("shift", "unfold"):
            raise ValueError(f"DilatedAttention: impl must be 'shift' or 'unfold', got {impl!r}")
        self.num_heads, self.kernel_size, self.dilations, self.impl = num_heads, kernel_size, rates, impl
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    @property
    def dilation(self) -> int | tuple[int, ...]:
        """The single rate, or the per-group rates."""
        return self.dilations[0] if len(self.dilations) == 1 else self.dilations

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=1)
        fn = dilated_attention if self.impl == "shift" else dilated_attention_unfold
        groups = len(self.dilations)
        heads = self.num_heads // groups
        parts = [fn(qg, kg, vg, heads, self.kernel_size, rate)
                 for qg, kg, vg, rate in zip(q.chunk(groups, 1), k.chunk(groups, 1), v.chunk(groups, 1),
                                             self.dilations)]
        y = parts[0] if groups == 1 else torch.cat(parts, dim=1)
        return self.proj(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, kernel_size={self.kernel_size}, dilation={self.dilation}, impl={self.impl}"


__all__ = ["DilatedAttention", "dilated_attention", "dilated_attention_unfold"]
