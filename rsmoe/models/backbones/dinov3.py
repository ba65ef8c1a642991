"""DINOv3 ViT (``transformers.DINOv3ViTModel``) as a frozen, block-by-block backbone.

Token layout: ``[CLS, register_1 … register_R, patch_1 … patch_N]``, so ``num_prefix_tokens = 1 + R`` (R = 4 for
the released checkpoints; the original code calls registers "storage tokens"). Positions enter through 2-D RoPE on
the patch tokens inside every attention layer: :meth:`DINOv3Backbone.embed` computes the cos/sin tables once per
forward and keeps them in ``ctx.extras["rope"]``.

The model must stay in eval mode: in training mode the RoPE module jitters/rescales the patch coordinates
(``pos_embed_rescale = 2`` in the released configs). :class:`~rsmoe.models.backbones.base.FrozenBackbone` pins it.

Also here: :func:`read_dinov3_original` and :func:`load_dinov3_original_state_dict`, which read an original Meta
DINOv3 ``.pth`` (release file or training checkpoint) and rename it to the transformers naming, so the checkpoints
the public SpectralMoE code uses load without a hub download.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from .bands import BandInit, adapt_patch_kernel
from ...errors import CheckpointError, ConfigError, MissingFileError
from ...hf_logging import no_progress_bars
from ...io.torch_files import check_keys, read_state_dict
from ...seeding import seeded
from .base import BlockContext, FrozenBackbone

#: transformers configs of the released DINOv3 ViTs (LVD-1689M and SAT-493M share the architecture).
DINOV3_PRESETS: dict[str, dict[str, Any]] = {
    "vits16": dict(patch_size=16, hidden_size=384, intermediate_size=1536, num_hidden_layers=12,
                   num_attention_heads=6, num_register_tokens=4, use_gated_mlp=False, hidden_act="gelu"),
    "vitb16": dict(patch_size=16, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, num_register_tokens=4, use_gated_mlp=False, hidden_act="gelu"),
    "vitl16": dict(patch_size=16, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                   num_attention_heads=16, num_register_tokens=4, use_gated_mlp=False, hidden_act="gelu"),
}


# ----------------------------------------------------------------------------------------------------------------
# helpers shared with dinov2.py / depth.py
# ----------------------------------------------------------------------------------------------------------------
def square_patch_size(patch_size: int | Sequence[int]) -> int:
    if isinstance(patch_size, int):
        return patch_size
    sizes = list(patch_size)
    if len(sizes) != 2 or sizes[0] != sizes[1]:
        raise ValueError(f"only square patches are supported, got patch_size={patch_size}")
    return int(sizes[0])


def check_patch_divisible(image: Tensor, patch_size: int, name: str) -> tuple[int, int]:
    if image.dim() != 4:
        raise ValueError(f"{name}: expected a B×C×H×W image, got shape {tuple(image.shape)}")
    h, w = image.shape[-2:]
    if h % patch_size or w % patch_size:
        raise ValueError(
            f"{name}: image size {h}×{w} is not divisible by the patch size {patch_size}; pad or crop to a multiple"
        )
    return h // patch_size, w // patch_size


def require_dir(path: str | os.PathLike, what: str) -> str:
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise MissingFileError(f"{what} checkpoint directory not found: {path}")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise MissingFileError(f"{what} checkpoint directory {path} has no config.json; expected a transformers model "
                               "folder (save_pretrained / rsmoe convert)")
    return path


#: config fields that fix the architecture (checked against a loaded checkpoint when a config is also given)
ARCHITECTURE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "mlp_ratio",
                     "patch_size", "num_register_tokens", "use_gated_mlp", "use_swiglu_ffn", "hidden_act")
_CONFIG_EXTRAS = {"out_indices", "out_features"}


def config_from_dict(config_cls: type, kwargs: Mapping[str, Any]) -> Any:
    """``config_cls(**kwargs)`` refusing unknown keys (transformers' configs silently keep them, so a typo would
    otherwise go unnoticed). For DINOv2 configs, ``intermediate_size`` is accepted and turned into ``mlp_ratio``."""
    kwargs = dict(kwargs)
    known = {f.name for f in dataclasses.fields(config_cls)} | _CONFIG_EXTRAS
    if "intermediate_size" in kwargs and "intermediate_size" not in known and "mlp_ratio" in known:
        hidden = int(kwargs["hidden_size"]) if "hidden_size" in kwargs else int(config_cls().hidden_size)
        inter = int(kwargs.pop("intermediate_size"))
        if inter % hidden:
            raise ConfigError(f"{config_cls.__name__}: intermediate_size {inter} is not a multiple of hidden_size "
                             f"{hidden} (DINOv2 sizes its MLP by an integer mlp_ratio)")
        if "mlp_ratio" in kwargs and int(kwargs["mlp_ratio"]) != inter // hidden:
            raise ConfigError(f"{config_cls.__name__}: intermediate_size {inter} contradicts mlp_ratio "
                             f"{kwargs['mlp_ratio']}")
        kwargs["mlp_ratio"] = inter // hidden
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(f"{config_cls.__name__}: unknown config keys {unknown}")
    return config_cls(**kwargs)


def _arch_value(cfg: Any, key: str) -> Any:
    if key == "intermediate_size" and not hasattr(cfg, "intermediate_size") and hasattr(cfg, "mlp_ratio"):
        return int(cfg.hidden_size * cfg.mlp_ratio)
    if key == "num_register_tokens":
        return int(getattr(cfg, key, 0) or 0)
    value = getattr(cfg, key, None)
    if key == "patch_size" and value is not None:
        return square_patch_size(value)
    return value


def check_architecture(loaded: Any, requested: Mapping[str, Any] | None, what: str) -> None:
    """Raise if a config given next to a checkpoint disagrees with it on an architecture field (other fields,
    e.g. ``image_size`` or ``layerscale_value``, are ignored: the checkpoint's own values rule)."""
    if not requested:
        return
    unknown = sorted(k for k in requested if k not in _CONFIG_EXTRAS and not hasattr(loaded, k)
                     and not (k == "intermediate_size" and hasattr(loaded, "mlp_ratio")))
    if unknown:
        raise ConfigError(f"{what}: unknown config keys {unknown}")
    diffs = []
    for key in ARCHITECTURE_KEYS:
        if key in requested:
            want = square_patch_size(requested[key]) if key == "patch_size" else requested[key]
            have = _arch_value(loaded, key)
            if have is not None and want != have:
                diffs.append(f"{key}: config {want!r} vs checkpoint {have!r}")
    if diffs:
        raise ConfigError(f"{what}: the config does not match the checkpoint ({'; '.join(diffs)})")


def replace_patch_conv(conv: nn.Conv2d, num_bands: int, band_init: BandInit,
                       wavelengths: Sequence[float] | Tensor | None) -> nn.Conv2d:
    """A copy of a 3-band patch conv with ``num_bands`` input channels (kernel from :func:`adapt_patch_kernel`)."""
    new = nn.Conv2d(num_bands, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, bias=conv.bias is not None,
                    device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(adapt_patch_kernel(conv.weight, wavelengths, num_bands, band_init))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def needs_new_kernel(conv: nn.Conv2d, num_bands: int, band_init: BandInit, wavelengths: Any) -> bool:
    """Whether the patch conv must be rebuilt for ``num_bands`` bands.

    A 3-band (pretrained RGB) conv is rebuilt for ``num_bands != 3``, and for ``wavelength`` mode with known
    wavelengths (which may reorder it). A conv that already has ``num_bands != 3`` input channels (a model saved
    after adaptation) is used as is; any other channel count is an error.
    """
    explicit = not isinstance(band_init, str)
    if not explicit and band_init not in ("cyclic", "wavelength"):
        raise ValueError(f"unknown band_init {band_init!r}; expected 'cyclic' or 'wavelength'")
    if num_bands < 1:
        raise ValueError(f"num_bands must be ≥ 1, got {num_bands}")
    if conv.in_channels != 3:
        if conv.in_channels == num_bands:
            return False
        raise ValueError(f"the model's patch conv takes {conv.in_channels} bands; cannot adapt it to {num_bands} "
                         "(band adaptation starts from a 3-band RGB kernel)")
    return num_bands != 3 or explicit or (band_init == "wavelength" and wavelengths is not None)


# ----------------------------------------------------------------------------------------------------------------
class DINOv3Backbone(FrozenBackbone):
    """Frozen DINOv3 ViT, run block by block.

    ``num_bands != 3`` replaces the patch-embedding conv by a ``num_bands``-channel conv whose kernel comes from
    :func:`~rsmoe.models.backbones.bands.adapt_patch_kernel` (``band_init`` 'cyclic' or 'wavelength'; bias
    copied). With 3 bands the pretrained kernel is kept as is, unless ``band_init='wavelength'`` and the
    wavelengths are given (then the channels follow the wavelengths, e.g. a B,G,R sensor gets the kernel reversed;
    R,G,B wavelengths reproduce the pretrained kernel). A model whose patch conv already takes ``num_bands``
    bands (saved after adaptation) is used as is.

    ``embed`` ignores its ``wavelengths`` argument: the band → kernel mapping is fixed at construction.
    """

    def __init__(self, model: DINOv3ViTModel, num_bands: int = 3, band_init: BandInit = "cyclic",
                 wavelengths: Sequence[float] | Tensor | None = None):
        super().__init__()
        if not isinstance(model, DINOv3ViTModel):
            raise TypeError(f"expected a transformers DINOv3ViTModel, got {type(model).__name__}")
        config = model.config
        self.model = model
        self.embed_dim = int(config.hidden_size)
        self.num_layers = int(config.num_hidden_layers)
        self.num_prefix_tokens = 1 + int(config.num_register_tokens)
        self.patch_size = square_patch_size(config.patch_size)
        self.num_bands = int(num_bands)
        self.band_init = band_init
        conv = model.embeddings.patch_embeddings
        if needs_new_kernel(conv, self.num_bands, band_init, wavelengths):
            model.embeddings.patch_embeddings = replace_patch_conv(conv, self.num_bands, band_init, wavelengths)
            config.num_channels = self.num_bands
        self.freeze()

    # -- construction -------------------------------------------------------------------------------------------
    @staticmethod
    def make_config(config: DINOv3ViTConfig | Mapping[str, Any] | str) -> DINOv3ViTConfig:
        """A private copy of ``config`` (the backbone may change ``num_channels`` on it): a config object, a dict of
        config fields (unknown keys raise), or a :data:`DINOV3_PRESETS` name such as ``'vitl16'``."""
        if isinstance(config, DINOv3ViTConfig):
            return copy.deepcopy(config)
        if isinstance(config, str):
            if config not in DINOV3_PRESETS:
                raise ConfigError(f"unknown DINOv3 preset {config!r}; known: {sorted(DINOV3_PRESETS)}")
            config = DINOV3_PRESETS[config]
        return config_from_dict(DINOv3ViTConfig, config)

    @classmethod
    def from_config(cls, config: DINOv3ViTConfig | Mapping[str, Any] | str, num_bands: int = 3,
                    band_init: BandInit = "cyclic", wavelengths: Sequence[float] | Tensor | None = None,
                    seed: int = 0) -> "DINOv3Backbone":
        """Randomly initialised model (deterministic given ``seed``; the global RNG state is left untouched)."""
        cfg = cls.make_config(config)
        with seeded(seed):
            model = DINOv3ViTModel(cfg)
        return cls(model, num_bands=num_bands, band_init=band_init, wavelengths=wavelengths)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, num_bands: int = 3, band_init: BandInit = "cyclic",
                        wavelengths: Sequence[float] | Tensor | None = None,
                        expect: Mapping[str, Any] | None = None) -> "DINOv3Backbone":
        """Load a transformers-format checkpoint directory (``config.json`` + safetensors), never the hub.

        Weights are loaded in float32; cast the backbone afterwards for half-precision inference. ``expect``: config
        fields the checkpoint must agree with (architecture fields only, see :func:`check_architecture`).
        """
        path = require_dir(path, "DINOv3")
        with no_progress_bars():
            model = DINOv3ViTModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        check_architecture(model.config, expect, f"DINOv3 checkpoint {path}")
        return cls(model, num_bands=num_bands, band_init=band_init, wavelengths=wavelengths)

    @classmethod
    def from_original_checkpoint(cls, path: str | os.PathLike, config: DINOv3ViTConfig | Mapping[str, Any] | str,
                                 num_bands: int = 3, band_init: BandInit = "cyclic",
                                 wavelengths: Sequence[float] | Tensor | None = None) -> "DINOv3Backbone":
        """Build from an original Meta DINOv3 ``.pth``; ``config`` gives the architecture (a dict, a config, or
        a :data:`DINOV3_PRESETS` name such as ``'vitl16'``)."""
        cfg = cls.make_config(config)
        try:
            state = load_dinov3_original_state_dict(path)
        except KeyError as exc:
            raise CheckpointError(f"{path}: {exc.args[0] if exc.args else exc}") from None
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in DINOv3ViTModel(cfg).state_dict().items()}
        check_keys(path, state, expected)  # one line naming the keys and shapes, before any weight is drawn
        with seeded(0):
            model = DINOv3ViTModel(cfg)
        model.load_state_dict(state, strict=True)
        return cls(model, num_bands=num_bands, band_init=band_init, wavelengths=wavelengths)

    # -- forward ------------------------------------------------------------------------------------------------
    def embed(self, image: Tensor, wavelengths: Tensor | None = None) -> tuple[Tensor, BlockContext]:
        grid = check_patch_divisible(image, self.patch_size, "DINOv3Backbone")
        if image.shape[1] != self.num_bands:
            raise ValueError(f"DINOv3Backbone was built for {self.num_bands} bands, got an image with "
                             f"{image.shape[1]}")
        pixel_values = image.to(self.model.embeddings.patch_embeddings.weight.dtype)
        tokens = self.model.embeddings(pixel_values)
        cos_sin = self.model.rope_embeddings(pixel_values)
        return tokens, BlockContext(grid=grid, extras={"rope": cos_sin})

    def block(self, index: int, tokens: Tensor, ctx: BlockContext) -> Tensor:
        return self.model.model.layer[index](tokens, position_embeddings=ctx.extras["rope"])

    def final_norm(self, tokens: Tensor) -> Tensor:
        """The model's last LayerNorm (not applied by :meth:`block`)."""
        return self.model.norm(tokens)


# ----------------------------------------------------------------------------------------------------------------
# original Meta checkpoint → transformers naming
# ----------------------------------------------------------------------------------------------------------------
# (pattern on the original key, replacement in transformers naming); applied in order, first match wins.
_ORIGINAL_RENAMES: list[tuple[str, str]] = [
    (r"^cls_token$", "embeddings.cls_token"),
    (r"^mask_token$", "embeddings.mask_token"),
    (r"^storage_tokens$", "embeddings.register_tokens"),
    (r"^patch_embed\.proj\.(weight|bias)$", r"embeddings.patch_embeddings.\1"),
    (r"^norm\.(weight|bias)$", r"norm.\1"),
    (r"^blocks\.(\d+)\.norm([12])\.(weight|bias)$", r"model.layer.\1.norm\2.\3"),
    (r"^blocks\.(\d+)\.attn\.proj\.(weight|bias)$", r"model.layer.\1.attention.o_proj.\2"),
    (r"^blocks\.(\d+)\.ls([12])\.gamma$", r"model.layer.\1.layer_scale\2.lambda1"),
    (r"^blocks\.(\d+)\.mlp\.fc1\.(weight|bias)$", r"model.layer.\1.mlp.up_proj.\2"),
    (r"^blocks\.(\d+)\.mlp\.fc2\.(weight|bias)$", r"model.layer.\1.mlp.down_proj.\2"),
    # SwiGLU variants (ViT-S+/H+/7B): out = w3(silu(w1 x) * w2 x)
    (r"^blocks\.(\d+)\.mlp\.w1\.(weight|bias)$", r"model.layer.\1.mlp.gate_proj.\2"),
    (r"^blocks\.(\d+)\.mlp\.w2\.(weight|bias)$", r"model.layer.\1.mlp.up_proj.\2"),
    (r"^blocks\.(\d+)\.mlp\.w3\.(weight|bias)$", r"model.layer.\1.mlp.down_proj.\2"),
]
_QKV = re.compile(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")
# Keys with no transformers counterpart: RoPE periods (recomputed from rope_theta), the k-bias mask (the k bias
# is masked to zero in the original, so transformers has no k bias), the extra CLS norm of some variants, heads.
_ORIGINAL_DROPPED = re.compile(
    r"^(rope_embed\.periods|blocks\.\d+\.attn\.qkv\.bias_mask|local_cls_norm\..*|projectors\..*|head\..*)$")


def convert_dinov3_original_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an original DINOv3 state dict (already in memory) to ``DINOv3ViTModel`` keys.

    The fused ``attn.qkv`` projection is split in thirds (q, k, v) along the output axis; the k bias is dropped
    (it is masked to zero in the original model); ``mask_token`` (1×D) becomes 1×1×D. Unknown keys raise.
    """
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if _ORIGINAL_DROPPED.match(key):
            continue
        m = _QKV.match(key)
        if m:
            layer, kind = m.groups()
            q, k, v = torch.chunk(value, 3, dim=0)
            base = f"model.layer.{layer}.attention"
            out[f"{base}.q_proj.{kind}"] = q.clone()
            if kind == "weight":
                out[f"{base}.k_proj.weight"] = k.clone()
            out[f"{base}.v_proj.{kind}"] = v.clone()
            continue
        for pattern, repl in _ORIGINAL_RENAMES:
            new_key, n = re.subn(pattern, repl, key)
            if n:
                if key == "mask_token" and value.dim() == 2:
                    value = value.unsqueeze(1)
                out[new_key] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"unrecognised keys in the DINOv3 checkpoint: {unknown[:8]}{' …' if len(unknown) > 8 else ''}")
    return out


def read_dinov3_original(path: str | os.PathLike) -> dict[str, Tensor]:
    """The original-naming state dict of a Meta DINOv3 ``.pth``: a release file (bare), a training checkpoint
    (``teacher`` → ``backbone.*``) or any wrapper :func:`rsmoe.io.torch_files.extract_state_dict` opens. Read
    with ``weights_only=True``; one-line :class:`~rsmoe.errors.CheckpointError` on failure. ``rsmoe convert
    dinov3-original`` and ``backbone.pretrained`` both read through here, so they accept the same files."""
    return read_state_dict(path, "DINOv3 original checkpoint", prefix="backbone.")


def load_dinov3_original_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """:func:`read_dinov3_original` renamed to the transformers naming (see
    :func:`convert_dinov3_original_state_dict`; unknown keys raise ``KeyError``). Returns a state dict for
    ``DINOv3ViTModel.load_state_dict(..., strict=True)``."""
    return convert_dinov3_original_state_dict(read_dinov3_original(path))


__all__ = [
    "DINOV3_PRESETS",
    "DINOv3Backbone",
    "convert_dinov3_original_state_dict",
    "load_dinov3_original_state_dict",
    "read_dinov3_original",
]
