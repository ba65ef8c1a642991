"""DOFA (Dynamic One-For-All, Xiong et al. 2024) as a frozen, block-by-block backbone.

DOFA is a plain ViT whose patch embedding is *generated* from the band wavelengths, so one set of weights takes
any number of bands:

1. each band's centre wavelength (µm) is multiplied by 1000 (→ nm) and encoded with a 1-D sin-cos code of 128
   dims (first half sines, second half cosines, frequencies ``10000 ** (-2k / 128)``);
2. a residual two-layer MLP (``fclayer``: ``x + relu(w2(relu(w1(x))))``) refines the code;
3. a one-layer post-norm transformer encoder (width 128, 4 heads, feed-forward 2048, GELU, no dropout) runs over
   the sequence ``[128 learned weight tokens; one token per band; one bias token]``;
4. ``fc_weight`` maps each band's output token *plus its refined code* (the encoder input, added back) to a
   ``patch × patch × width`` kernel slice, ``fc_bias`` maps the bias token's output to the width-sized bias;
   both are multiplied by ``scaler = 0.01``;
5. a convolution with stride = patch and padding 1 produces the patch tokens.

Then a CLS token and fixed 2-D sin-cos position embeddings (MAE convention) are added and the timm-style ViT
blocks run (pre-norm, qkv bias, MLP ratio 4, LayerNorm eps 1e-6).

Facts taken from the public code (zhu-xlab/DOFA ``wave_dynamic_layer.py`` / ``dofa_v1.py`` and TorchGeo
``torchgeo/models/dofa.py``), which this file re-implements (timm/torchgeo cannot be installed here):

- **Kernel layout.** The generated ``C × (p·p·D)`` matrix is read as ``C × p × p × D`` and permuted to the
  ``D × C × p × p`` conv weight (``band_major``, the default, right for every release since 2024-09-01); files
  released before the fix need ``legacy`` (the matrix viewed directly as ``D × C × p × p``). Which file needs
  which, and how the layout is stored in a converted file, is in :mod:`rsmoe.models.backbones.dofa_weights`.
- **Conv padding and grid.** The public conv uses ``padding=1``, giving ``floor((H + 2 - p) / p) + 1`` rows:
  ``H / p`` when p divides H (224 → 14), but one extra row when ``H mod p >= p - 2``. Patch ``j`` covers input
  rows ``j·p - 1 … j·p + p - 2`` (one zero-padded row at the top/left; the last image row/column is never
  seen). The public forward adds ``pos_embed[:, 1:]`` of the 14 × 14 pre-training grid directly, so it only
  runs on 224-pixel inputs (or sizes that give a 14 × 14 conv output). Here the padding is kept (it is what the
  weights were trained with) and the conv output is cropped to exactly ``(H // p, W // p)``.
- **Position embeddings** are a fixed 2-D sin-cos table (MAE ``get_2d_sincos_pos_embed``: first half of the
  channels encodes the column, second half the row; row-major tokens) of shape ``1 × (1 + g²) × D`` stored in
  the checkpoint as ``pos_embed`` (an ``nn.Parameter`` with ``requires_grad=False`` in the public code; a
  persistent buffer here, same key). Row 0 belongs to CLS (zeros in MAE), and CLS gets it by
  ``cls_token + pos_embed[:, :1]``. For another grid the patch rows are resized bicubically
  (``align_corners=False``), the CLS row is kept.
- **Key naming.** The public files use the module's keys (``patch_embed.weight_generator.*``,
  ``patch_embed.fclayer.*``, ``cls_token``, ``pos_embed``, ``blocks.N.*``); TorchGeo's ``DOFAEmbedding`` has the
  same ``weight_generator``/``fclayer`` children. The pre-training / classification extras are dropped (see
  :mod:`~rsmoe.models.backbones.dofa_weights`); anything else unexpected is an error when ``strict``. DOFA v2
  (``dofav2_*.pth``: timm ``VisionTransformer`` under ``model.*`` with LayerScale) is a different architecture
  and is refused with a clear message.

Wavelengths may be given per batch row, shape (B, C): samples that share a wavelength row share one generated
kernel (one convolution per distinct row), so mixed-sensor batches work.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsmoe.errors import CheckpointError, ConfigError
from rsmoe.io.torch_files import KeyReport, compare_keys
from rsmoe.models.backbones.base import BlockContext, FrozenBackbone
from rsmoe.models.backbones.dofa_weights import KERNEL_LAYOUTS, read_dofa_weights, resolve_kernel_layout
from rsmoe.seeding import seeded

__all__ = [
    "DOFA_SIZES",
    "dofa_config_for",
    "DOFABackbone",
    "DOFAConfig",
    "DynamicPatchEmbed",
    "resample_pos_embed",
    "sincos_pos_embed_2d",
    "wavelength_encoding",
]

MAX_WAVELENGTH_UM = 100.0  # above this the values are almost surely nm (DOFA's SAR code 5.405 is < 100)


@dataclass(frozen=True)
class DOFAConfig:
    """Architecture of a DOFA backbone; the generator fields are fixed by the public checkpoints."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    patch_size: int = 16
    mlp_ratio: float = 4.0
    pretrain_grid: int = 14  # side of the position-embedding grid stored in the checkpoint (224 // patch)
    wave_dim: int = 128
    num_weight_tokens: int = 128
    generator_heads: int = 4
    generator_ff: int = 2048
    kernel_layout: str = "band_major"  # "legacy" for files released before the fix of 2024-09-01 (dofa_weights)

    def __post_init__(self) -> None:
        if self.kernel_layout not in KERNEL_LAYOUTS:
            raise ConfigError(f"kernel_layout must be one of {list(KERNEL_LAYOUTS)}, got {self.kernel_layout!r}")
        if self.embed_dim % self.num_heads or self.embed_dim % 4:
            raise ConfigError(
                f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads} and by 4"
            )

    @classmethod
    def of(cls, size: str | DOFAConfig | Mapping[str, Any], **overrides: Any) -> DOFAConfig:
        """A named size ('small', 'base', 'large', 'huge'), a config, or a mapping of fields.

        A mapping may name a size under ``"size"`` and override fields of it: ``{"size": "base", "depth": 4}``.
        """
        if isinstance(size, DOFAConfig):
            base = size
        elif isinstance(size, Mapping):
            fields = dict(size)
            named = fields.pop("size", None)
            unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
            if unknown:
                raise ConfigError(f"unknown DOFA config fields {unknown}; known: {sorted(cls.__dataclass_fields__)}")
            base = replace(cls.of(named), **fields) if named is not None else cls(**fields)
        elif isinstance(size, str):
            if size not in DOFA_SIZES:
                raise ConfigError(f"unknown DOFA size {size!r}; expected one of {sorted(DOFA_SIZES)}")
            base = DOFA_SIZES[size]
        else:
            raise TypeError(f"DOFA size must be a name, DOFAConfig or mapping, got {type(size).__name__}")
        return replace(base, **overrides) if overrides else base


DOFA_SIZES: dict[str, DOFAConfig] = {
    "small": DOFAConfig(embed_dim=384, depth=12, num_heads=6, patch_size=16, pretrain_grid=14),
    "base": DOFAConfig(embed_dim=768, depth=12, num_heads=12, patch_size=16, pretrain_grid=14),
    "large": DOFAConfig(embed_dim=1024, depth=24, num_heads=16, patch_size=16, pretrain_grid=14),
    "huge": DOFAConfig(embed_dim=1280, depth=32, num_heads=16, patch_size=14, pretrain_grid=16),
}


# ----------------------------------------------------------------------------------------------------------------
# Fixed encodings


def _sincos_1d(dim: int, positions: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """(M,) positions → M × dim: sines of all frequencies, then cosines; frequency k = 10000 ** (-2k / dim).

    ``dtype`` is the precision of the arithmetic: DOFA's wavelength code is computed in float32 (as the public
    code does; angles reach ~2500 rad, so float64 would differ by ~1e-4), MAE's position table in float64.
    """
    if dim % 2:
        raise ValueError(f"sin-cos encoding width must be even, got {dim}")
    freqs = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=dtype, device=positions.device) / (dim / 2))
    angles = positions.reshape(-1, 1).to(dtype) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def wavelength_encoding(wavelengths_um: Tensor, dim: int = 128) -> Tensor:
    """Band wavelengths (C,) in µm → C × dim sin-cos code of the wavelength in nm (DOFA's ``wvs * 1000``)."""
    return _sincos_1d(dim, wavelengths_um.float() * 1000, torch.float32)


def sincos_pos_embed_2d(dim: int, grid: tuple[int, int], cls_token: bool = True) -> Tensor:
    """MAE's fixed 2-D position table for an (h, w) grid → 1 × (cls + h·w) × dim (CLS row = zeros).

    The first dim/2 channels encode the column index, the last dim/2 the row index; tokens are row-major.
    """
    h, w = grid
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    emb = torch.cat([_sincos_1d(dim // 2, cols, torch.float64), _sincos_1d(dim // 2, rows, torch.float64)], dim=1)
    if cls_token:
        emb = torch.cat([emb.new_zeros(1, dim), emb], dim=0)
    return emb.unsqueeze(0)


def resample_pos_embed(pos_embed: Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int]) -> Tensor:
    """1 × (1 + src_h·src_w) × D → 1 × (1 + dst_h·dst_w) × D: patch rows resized bicubically, CLS row kept."""
    d = pos_embed.shape[-1]
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    if patches.shape[1] != src_grid[0] * src_grid[1]:
        raise ValueError(f"pos_embed has {patches.shape[1]} patch rows, expected {src_grid[0]}×{src_grid[1]}")
    grid = patches.reshape(1, src_grid[0], src_grid[1], d).permute(0, 3, 1, 2)
    dtype = grid.dtype
    grid = F.interpolate(grid.float(), size=dst_grid, mode="bicubic", align_corners=False).to(dtype)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, -1, d)], dim=1)


# ----------------------------------------------------------------------------------------------------------------
# Wavelength-conditioned patch embedding (public key names: patch_embed.fclayer.*, patch_embed.weight_generator.*)


class FCResLayer(nn.Module):
    """x + relu(w2(relu(w1(x)))): refines the wavelength code."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, dim)
        self.w2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + F.relu(self.w2(F.relu(self.w1(x))))


class WeightGenerator(nn.Module):
    """Transformer over [weight tokens; band codes; bias token] → per-band kernel slices and the bias."""

    def __init__(self, cfg: DOFAConfig) -> None:
        super().__init__()
        self.num_weight_tokens = cfg.num_weight_tokens
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.wave_dim,
            nhead=cfg.generator_heads,
            dim_feedforward=cfg.generator_ff,
            dropout=0.0,
            activation="gelu",
            norm_first=False,
            batch_first=False,
        )
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.fc_weight = nn.Linear(cfg.wave_dim, cfg.patch_size * cfg.patch_size * cfg.embed_dim)
        self.fc_bias = nn.Linear(cfg.wave_dim, cfg.embed_dim)
        self.weight_tokens = nn.Parameter(torch.zeros(cfg.num_weight_tokens, cfg.wave_dim))
        self.bias_token = nn.Parameter(torch.zeros(1, cfg.wave_dim))

    def forward(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """C × wave_dim band codes → (C × p·p·D raw kernel rows, D raw bias)."""
        seq = torch.cat([self.weight_tokens, codes, self.bias_token], dim=0)  # unbatched: S × wave_dim
        out = self.transformer_encoder(seq)
        weight = self.fc_weight(out[self.num_weight_tokens : -1] + codes)
        bias = self.fc_bias(out[-1])
        return weight, bias


class DynamicPatchEmbed(nn.Module):
    """DOFA's patch embedding: a stride-p conv whose kernel is generated from the band wavelengths."""

    scaler = 0.01

    def __init__(self, cfg: DOFAConfig) -> None:
        super().__init__()
        self.wave_dim = cfg.wave_dim
        self.patch_size = cfg.patch_size
        self.embed_dim = cfg.embed_dim
        self.kernel_layout = cfg.kernel_layout
        self.fclayer = FCResLayer(cfg.wave_dim)
        self.weight_generator = WeightGenerator(cfg)

    def kernel(self, wavelengths_um: Tensor) -> tuple[Tensor, Tensor]:
        """Wavelengths (C,) in µm → conv weight D × C × p × p and bias (D,), both already × 0.01."""
        dtype = self.fclayer.w1.weight.dtype
        codes = self.fclayer(wavelength_encoding(wavelengths_um, self.wave_dim).to(dtype))
        raw, bias = self.weight_generator(codes)
        c, p, d = codes.shape[0], self.patch_size, self.embed_dim
        if self.kernel_layout == "band_major":
            weight = raw.reshape(c, p, p, d).permute(3, 0, 1, 2)
        else:  # the public code before the fix viewed the C × p·p·D matrix directly as D × C × p × p
            weight = raw.reshape(d, c, p, p)
        return weight * self.scaler, bias * self.scaler

    def forward(self, image: Tensor, wavelengths_um: Tensor) -> Tensor:
        """B × C × H × W, wavelengths (C,) → B × D × (H // p) × (W // p)."""
        weight, bias = self.kernel(wavelengths_um)
        p = self.patch_size
        out = F.conv2d(image, weight.to(image.dtype), bias.to(image.dtype), stride=p, padding=1)
        # padding=1 as in the public code; it yields one extra row/column when H mod p >= p - 2: drop it.
        return out[:, :, : image.shape[-2] // p, : image.shape[-1] // p]


# ----------------------------------------------------------------------------------------------------------------
# ViT blocks (timm naming: norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


# ----------------------------------------------------------------------------------------------------------------
# The backbone


class DOFABackbone(FrozenBackbone):
    """Frozen DOFA ViT, run block by block; takes any number of bands with their wavelengths in µm.

    ``state_dict()`` keys are the public DOFA keys (minus the head / pre-training extras).
    """

    num_prefix_tokens = 1

    def __init__(self, config: DOFAConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = config.embed_dim
        self.num_layers = config.depth
        self.patch_size = config.patch_size
        self.pretrain_grid = (config.pretrain_grid, config.pretrain_grid)
        self.patch_embed = DynamicPatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        self.register_buffer("pos_embed", sincos_pos_embed_2d(config.embed_dim, self.pretrain_grid))
        self.blocks = nn.ModuleList(
            Block(config.embed_dim, config.num_heads, config.mlp_ratio) for _ in range(config.depth)
        )
        self.load_report: dict[str, Any] | None = None
        self._init_weights()
        self.freeze()

    def _init_weights(self) -> None:
        """The public initialisation: xavier-uniform linears (bias 0.01 in the generator, 0 in the ViT)."""
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.patch_embed.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.constant_(module.bias, 0.01)
        gen = self.patch_embed.weight_generator
        nn.init.normal_(gen.weight_tokens, std=0.02)
        nn.init.normal_(gen.bias_token, std=0.02)
        nn.init.normal_(self.cls_token, std=0.02)

    # -- construction -------------------------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, size: str | DOFAConfig | Mapping[str, Any] = "base", seed: int = 0, **overrides: Any
    ) -> DOFABackbone:
        """Random weights, deterministic in ``seed`` (the global RNG state is left untouched)."""
        config = DOFAConfig.of(size, **overrides)
        with seeded(seed):
            return cls(config)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        size: str | DOFAConfig | Mapping[str, Any] | None = None,
        strict: bool = True,
        kernel_layout: str | None = None,
    ) -> DOFABackbone:
        """Load DOFA v1 weights: a public file (authors' or TorchGeo's ``.pth``, bare or wrapped) or the
        ``.safetensors`` that ``rsmoe convert dofa-*`` writes.

        ``size``: a name ('small', 'base', 'large', 'huge'), a config, a mapping of fields (``{size: base, …}``
        or a full ``{embed_dim: …, depth: …}``), or None / a mapping naming neither ``size`` nor ``embed_dim``
        (e.g. ``{kernel_layout: legacy}``, as ``backbone.config`` gives it) to infer the architecture from the
        shapes and override the given fields. ``kernel_layout`` (or the mapping's ``kernel_layout``) overrides the
        layout stored in a converted file or known from the file's hash
        (:func:`~rsmoe.models.backbones.dofa_weights.resolve_kernel_layout`). The pre-training / classification extras are ignored. Missing or unexpected keys
        raise (``strict``) or warn; shape mismatches always raise. Errors are one line naming the file.
        """
        path = Path(path)
        weights = read_dofa_weights(path)
        if kernel_layout is None and isinstance(size, Mapping):
            kernel_layout = size.get("kernel_layout")
        layout = resolve_kernel_layout(path, kernel_layout, weights.kernel_layout, weights.source_sha256)
        config = dofa_config_for(weights.state, size, path, kernel_layout=layout)
        model = cls.from_state_dict(weights.state, config, where=path, strict=strict, name=size)
        model.load_report["ignored"] = weights.ignored
        return model

    @classmethod
    def check_state_dict(cls, state: Mapping[str, Tensor], config: DOFAConfig, where: str | Path = "checkpoint",
                         strict: bool = True, name: Any = None) -> KeyReport:
        """Compare backbone tensors with the model ``config`` builds (on the meta device): shape mismatches always
        raise, missing / unexpected keys raise when ``strict`` and warn otherwise. Returns the differences."""
        with torch.device("meta"):  # shapes only: no time or memory spent on a random init
            expected = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
        report = compare_keys(state, expected)
        label = f"for DOFA-{name if isinstance(name, str) else _size_name(config)}"
        if report.mismatched or (strict and report):
            raise CheckpointError(f"{where}: {report.message(label)}")
        if report:
            warnings.warn(f"{where}: {report.message(label)}", stacklevel=3)
        return report

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor], config: DOFAConfig, where: str | Path = "checkpoint",
                        strict: bool = True, name: Any = None) -> DOFABackbone:
        """A frozen backbone with the given tensors (checked by :meth:`check_state_dict`); with ``strict=False``
        the keys the tensors lack keep a seed-0 random init."""
        report = cls.check_state_dict(state, config, where, strict, name)
        weights = {k: v.float() for k, v in state.items() if k not in set(report.unexpected)}
        if report.missing:
            model = cls.from_config(config)
            model.load_state_dict(weights, strict=False)
        else:
            with torch.device("meta"):
                model = cls(config)
            model.load_state_dict(weights, strict=True, assign=True)
        model.freeze()
        model.load_report = {"path": str(where), "ignored": [], "missing": report.missing,
                             "unexpected": report.unexpected, "kernel_layout": config.kernel_layout}
        return model

    # -- forward ------------------------------------------------------------------------------------------------

    def position_embedding(self, grid: tuple[int, int]) -> Tensor:
        """1 × (1 + h·w) × D position table for an (h, w) patch grid (bicubic resize of the stored one)."""
        return resample_pos_embed(self.pos_embed, self.pretrain_grid, grid)

    def patch_kernel(self, wavelengths: Tensor | Sequence[float]) -> tuple[Tensor, Tensor]:
        """The generated conv weight D × C × p × p and bias (D,) for wavelengths (C,) in µm."""
        return self.patch_embed.kernel(torch.as_tensor(wavelengths, dtype=torch.float32).to(self.cls_token.device))

    def embed(self, image: Tensor, wavelengths: Tensor | Sequence[float]) -> tuple[Tensor, BlockContext]:
        if image.dim() != 4:
            raise ValueError(f"DOFA expects an image B×C×H×W, got shape {tuple(image.shape)}")
        b, c, height, width = image.shape
        p = self.patch_size
        grid = (height // p, width // p)
        if min(grid) == 0:
            raise ValueError(f"image {height}×{width} is smaller than one {p}×{p} patch")
        wl = _check_wavelengths(wavelengths, b, c, image.device)

        if wl.dim() == 1:
            x = self.patch_embed(image, wl)
        else:
            rows, which = torch.unique(wl, dim=0, return_inverse=True)
            if rows.shape[0] == 1:
                x = self.patch_embed(image, rows[0])
            else:  # one generated kernel per distinct wavelength row
                x = image.new_empty(b, self.embed_dim, *grid)
                for k in range(rows.shape[0]):
                    idx = (which == k).nonzero().squeeze(1)
                    x[idx] = self.patch_embed(image[idx], rows[k])

        tokens = x.flatten(2).transpose(1, 2)
        pos = self.position_embedding(grid).to(tokens.dtype)
        tokens = tokens + pos[:, 1:]
        cls = (self.cls_token + pos[:, :1]).to(tokens.dtype).expand(b, -1, -1)
        return torch.cat([cls, tokens], dim=1), BlockContext(grid=grid)

    def block(self, index: int, tokens: Tensor, ctx: BlockContext) -> Tensor:  # noqa: ARG002 - no extras
        return self.blocks[index](tokens)

    def forward(self, image: Tensor, wavelengths: Tensor | Sequence[float]) -> Tensor:
        """All tokens (CLS first) after the last block, B × (1 + N) × D; no final norm."""
        tokens, _ = self.embed(image, wavelengths)
        for blk in self.blocks:
            tokens = blk(tokens)
        return tokens


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def _check_wavelengths(wavelengths: Tensor | Sequence[float], batch: int, bands: int, device: torch.device) -> Tensor:
    wl = torch.as_tensor(wavelengths, dtype=torch.float32).to(device)
    if wl.dim() == 2 and wl.shape[0] == 1:
        wl = wl[0]
    if wl.dim() == 1:
        if wl.shape[0] != bands:
            raise ValueError(f"got {wl.shape[0]} wavelengths for an image with {bands} bands")
    elif wl.dim() == 2:
        if tuple(wl.shape) != (batch, bands):
            raise ValueError(f"wavelengths of shape {tuple(wl.shape)} do not match image batch×bands {batch}×{bands}")
    else:
        raise ValueError(f"wavelengths must be (C,) or (B, C), got shape {tuple(wl.shape)}")
    if not torch.isfinite(wl).all() or (wl <= 0).any():
        raise ValueError(f"wavelengths must be positive and finite (µm), got {wl.tolist()}")
    if (wl > MAX_WAVELENGTH_UM).any():
        raise ValueError(
            f"wavelengths must be in µm (≤ {MAX_WAVELENGTH_UM:g}), got max {wl.max().item():g}: nm given?"
        )
    return wl


def dofa_config_for(state: Mapping[str, Tensor], size: str | DOFAConfig | Mapping[str, Any] | None,
                    where: str | Path, kernel_layout: str | None = None) -> DOFAConfig:
    """The config for DOFA tensors: ``size`` as in :meth:`DOFABackbone.from_checkpoint` (None, or a mapping that
    names neither ``size`` nor ``embed_dim``: inferred from the shapes, then the mapping's fields applied), the
    position grid of the stored ``pos_embed``, and ``kernel_layout`` if given."""
    if size is None or (isinstance(size, Mapping) and not {"size", "embed_dim"} & set(size)):
        config = DOFAConfig.of({**asdict(_infer_config(state, where)), **dict(size or {})})
    else:
        config = DOFAConfig.of(size)
    grid = _square_grid(state.get("pos_embed"))
    if grid is not None:
        config = replace(config, pretrain_grid=grid)
    return replace(config, kernel_layout=kernel_layout) if kernel_layout is not None else config


def _infer_config(state: Mapping[str, Tensor], path: str | Path) -> DOFAConfig:
    if "cls_token" not in state:
        raise CheckpointError(f"{path}: no 'cls_token' key, cannot infer the DOFA size; pass size=")
    dim = state["cls_token"].shape[-1]
    depth = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1)
    for cfg in DOFA_SIZES.values():
        if (cfg.embed_dim, cfg.depth) == (dim, depth):
            return cfg
    known = ", ".join(f"{n} {c.embed_dim}/{c.depth}" for n, c in DOFA_SIZES.items())
    raise CheckpointError(f"{path}: width {dim} / depth {depth} match no DOFA size ({known}); pass size=")


def _square_grid(pos_embed: Tensor | None) -> int | None:
    if pos_embed is None or pos_embed.dim() != 3:
        return None
    n = pos_embed.shape[1] - 1
    g = math.isqrt(max(n, 0))
    return g if g > 0 and g * g == n else None


def _size_name(config: DOFAConfig) -> str:
    for name, cfg in DOFA_SIZES.items():
        if (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size) == (
            config.embed_dim, config.depth, config.num_heads, config.patch_size
        ):
            return name
    c = asdict(config)
    return f"custom(d={c['embed_dim']}, depth={c['depth']}, heads={c['num_heads']}, patch={c['patch_size']})"
