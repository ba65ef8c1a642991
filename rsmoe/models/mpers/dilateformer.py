"""The DilateFormer adapter block of MPerS (supplementary §3.1, Fig. 2) and its MHSA ablation.

One block on a B×C×H×W map::

    x = x + DWConv3×3(x)                 # conditional positional term (optional, ``pos_conv``)
    x = x + Attn(LN(x))                  # pre-LayerNorm attention, residual
    x = x + MLP(LN(x))                   # pre-LayerNorm MLP (ratio 4, GELU), residual

``attention='dilate'``: :class:`~rsmoe.models.mpers.dilated_attention.DilatedAttention` with a single dilation
rate r (k = 3; r = 1 is the paper's best, 2 and 3 ablated in Table 2) or one rate per group of heads.
``attention='mhsa'``: plain multi-head self-attention over all H·W positions (Table 2's MHSA row) with the same
parameterisation — q, k, v from one 1×1 convolution (bias ``qkv_bias``), scale d_h^−½, output ``Linear`` — so the
two rows differ only in which keys a query sees. LayerNorms normalise over channels at every position, with
``norm_eps``: 1e-5 by default (torch's default, what rsmoe always used); the full DilateFormer
(github.com/JIAOJIAYUASD/dilateformer, ``models/dilateformer.py``) builds its blocks with eps 1e-6 and qkv bias on.

The block's parameter names follow DilateFormer's ``DilateBlock`` except ``pos`` (theirs: ``pos_embed``) and
``mlp.0`` / ``mlp.2`` (theirs: ``mlp.fc1`` / ``mlp.fc2``); ``rsmoe convert dilateformer`` renames a stage of a
DilateFormer checkpoint into this naming, and :func:`load_pretrained_adapter` (``mpers.adapter_pretrained``) starts
an adapter from such a file.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import CheckpointError, ConfigError
from ...io.torch_files import check_keys, read_safetensors
from .dilated_attention import DilatedAttention

#: safetensors metadata tag of a file written by ``rsmoe convert dilateformer``
PRETRAINED_FORMAT = "rsmoe-dilateformer-blocks-v1"


class MultiHeadSelfAttention(nn.Module):
    """Global multi-head self-attention on a B×C×H×W map (q, k, v = Conv1×1; output Linear)."""

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
    """One adapter block (see the module docstring). ``attention``: 'dilate' | 'mhsa'; ``dilation``: one rate or
    one per group of heads; ``norm_eps``: eps of both LayerNorms; ``qkv_bias``: bias of the q, k, v projection."""

    def __init__(self, dim: int, num_heads: int = 8, kernel_size: int = 3, dilation: int | Sequence[int] = 1,
                 attention: str = "dilate", mlp_ratio: float = 4.0, pos_conv: bool = True, norm_eps: float = 1e-5,
                 qkv_bias: bool = True):
        super().__init__()
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if pos_conv else None
        self.norm1 = ChannelLayerNorm(dim, eps=norm_eps)
        if attention == "dilate":
            self.attn: nn.Module = DilatedAttention(dim, num_heads, kernel_size=kernel_size, dilation=dilation,
                                                    qkv_bias=qkv_bias)
        elif attention == "mhsa":
            self.attn = MultiHeadSelfAttention(dim, num_heads, qkv_bias=qkv_bias)
        else:
            raise ValueError(f"DilateBlock: attention must be 'dilate' or 'mhsa', got {attention!r}")
        self.attention = attention
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
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


# ------------------------------------------------------------------------------------- pretrained DilateFormer
def load_pretrained_adapter(adapter: DilateAdapter, path: str | os.PathLike, where: str = "adapter") -> None:
    """Copy the blocks of a ``rsmoe convert dilateformer`` file into ``adapter`` (in place).

    The file must hold as many blocks as the adapter, with the same attention kind ('dilate' for DilateFormer's
    dilated stages, 'mhsa' for its global ones), heads and parameter shapes — otherwise a one-line
    :class:`CheckpointError`. A LayerNorm eps or dilation rates other than the ones the blocks were trained with
    only warn (set ``mpers.adapter_norm_eps`` / ``mpers.adapter_dilations`` to match)."""
    tensors, meta = read_safetensors(path, "pretrained adapter (rsmoe convert dilateformer)", PRETRAINED_FORMAT)
    first = adapter[0]
    attn = first.attn
    blocks = int(meta.get("blocks", -1))
    if blocks != len(adapter):
        raise CheckpointError(f"{path}: holds {blocks} block(s) but the {where} adapter has {len(adapter)} "
                              "(mpers.adapter_blocks, or --blocks when converting)")
    if meta.get("attention") != first.attention:
        raise CheckpointError(f"{path}: {meta.get('attention')!r} blocks cannot start the {where} adapter's "
                              f"{first.attention!r} attention (mpers.adapter_attention)")
    if int(meta.get("heads", -1)) != attn.num_heads:
        raise CheckpointError(f"{path}: blocks trained with {meta.get('heads')} heads, the {where} adapter has "
                              f"{attn.num_heads} (mpers.adapter_heads)")
    check_keys(path, tensors, {k: tuple(v.shape) for k, v in adapter.state_dict().items()})
    adapter.load_state_dict(tensors, strict=True)
    eps = float(meta.get("norm_eps", first.norm1.eps))
    if eps != first.norm1.eps:
        warnings.warn(f"{path}: blocks trained with LayerNorm eps {eps:g}, the {where} adapter uses "
                      f"{first.norm1.eps:g} (mpers.adapter_norm_eps)", UserWarning, stacklevel=2)
    rates = meta.get("dilations", "")
    mine = ",".join(str(r) for r in getattr(attn, "dilations", ()))
    if first.attention == "dilate" and rates and rates != mine:
        warnings.warn(f"{path}: dilated blocks trained with rates [{rates}] over their head groups, the {where} "
                      f"adapter uses [{mine}] (mpers.adapter_dilations)", UserWarning, stacklevel=2)


def load_pretrained_adapters(adapters: Mapping[str, DilateAdapter], files: Mapping[str, str]) -> None:
    """``mpers.adapter_pretrained``: adapter key ('dino4', 'ldpe4', …) → converted file; every key must name a
    built adapter."""
    unknown = sorted(set(files) - set(adapters))
    if unknown:
        raise ConfigError(f"mpers.adapter_pretrained names {unknown}, but the adapters are {sorted(adapters)} "
                          "(branch + stage, from mpers.adapter_branches / adapter_stages)")
    for key, path in files.items():
        load_pretrained_adapter(adapters[key], path, where=key)


__all__ = ["PRETRAINED_FORMAT", "ChannelLayerNorm", "DilateAdapter", "DilateBlock", "MultiHeadSelfAttention",
           "load_pretrained_adapter", "load_pretrained_adapters"]
