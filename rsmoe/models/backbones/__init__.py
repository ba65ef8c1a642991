"""Frozen backbones (run block by block) and the frozen depth encoder, with factories for configs.

.. code-block:: python

    vfm = build_backbone("dinov3", pretrained="/models/dinov3-vitl16", config=None,
                         num_bands=4, band_init="cyclic", wavelengths=[0.49, 0.56, 0.665, 0.83], seed=0)
    dfm = build_depth_encoder(pretrained="/models/prompt-depth-anything-vitl", config=None,
                              target_patch_size=vfm.patch_size, seed=0)
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

import importlib
from typing import TYPE_CHECKING

from .bands import adapt_patch_kernel, rgb_channel_for_band, select_rgb_bands
from ...errors import ConfigError
from ...registry import Registry
from ...shipped import resolve_weights
from .base import BlockContext, FrozenBackbone, tokens_to_map

if TYPE_CHECKING:  # the transformers-backed modules load lazily: importing `base` alone stays cheap
    from .depth import DepthEncoder, resize_patch_kernel
    from .dinov2 import DINOv2Backbone
    from .dinov3 import (DINOV3_PRESETS, DINOv3Backbone, convert_dinov3_original_state_dict,
                         load_dinov3_original_state_dict)

_LAZY = {
    "DepthEncoder": "depth",
    "resize_patch_kernel": "depth",
    "DINOv2Backbone": "dinov2",
    "DINOv3Backbone": "dinov3",
    "DINOV3_PRESETS": "dinov3",
    "convert_dinov3_original_state_dict": "dinov3",
    "load_dinov3_original_state_dict": "dinov3",
}

#: ``backbone.kind`` → the frozen backbone class
BACKBONES = Registry("backbone.kind", {
    "dinov3": "rsmoe.models.backbones.dinov3:DINOv3Backbone",
    "dinov2": "rsmoe.models.backbones.dinov2:DINOv2Backbone",
    "dofa": "rsmoe.models.backbones.dofa:DOFABackbone",
})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_ORIGINAL_SUFFIXES = (".pth", ".pt")


def _given(config: Any) -> bool:
    """A config counts as given unless it is None or empty (configs default ``backbone.config`` to ``{}``)."""
    return config is not None and not (isinstance(config, Mapping) and not config)


def build_backbone(
    kind: str,
    *,
    pretrained: str | os.PathLike | None = None,
    config: Mapping[str, Any] | Any | None = None,
    num_bands: int = 3,
    band_init: str = "cyclic",
    wavelengths: Sequence[float] | Tensor | None = None,
    seed: int = 0,
) -> FrozenBackbone:
    """Build a frozen backbone (``kind``: 'dinov3', 'dinov2' or 'dofa').

    * ``pretrained`` = a local transformers checkpoint directory → loaded from it. A non-empty ``config`` next to
      it is checked against the checkpoint on the architecture fields (``hidden_size``, ``num_hidden_layers``,
      ``num_attention_heads``, ``intermediate_size``, ``patch_size``, ``num_register_tokens``, …; a mismatch
      raises) and otherwise ignored — the checkpoint's own config rules.
    * ``pretrained`` = an original Meta DINOv3 ``.pth``/``.pt`` file (``kind='dinov3'``) → ``config`` gives the
      architecture: a dict / ``DINOv3ViTConfig`` or a preset name from ``DINOV3_PRESETS`` (e.g. ``'vitl16'``).
    * ``pretrained`` None → random weights from ``config`` (a dict of transformers config fields — unknown keys
      raise —, a config object, or for DINOv3 a preset name), deterministic given ``seed``. An empty dict means
      the transformers defaults.
    * ``kind='dofa'`` delegates to :class:`~rsmoe.models.backbones.dofa.DOFABackbone` (``from_checkpoint`` /
      ``from_config``); DOFA builds its patch kernel from the wavelengths at run time, so ``num_bands``,
      ``band_init`` and ``wavelengths`` do not apply to it.
    """
    cls = BACKBONES.get(kind)
    pretrained = resolve_weights(pretrained)
    if kind == "dofa":
        if pretrained is not None:
            return cls.from_checkpoint(pretrained, size=config if _given(config) else None)
        return cls.from_config(config if _given(config) else "base", seed=seed)
    common = dict(num_bands=num_bands, band_init=band_init, wavelengths=wavelengths)
    if pretrained is not None:
        path = os.fspath(pretrained)
        if path.endswith(_ORIGINAL_SUFFIXES):
            if kind != "dinov3":
                raise ConfigError(f"original .pth checkpoints are supported for dinov3 only, not {kind!r}")
            if not _given(config):
                raise ConfigError("an original DINOv3 .pth needs `config` (a dict or a preset such as 'vitl16')")
            return cls.from_original_checkpoint(path, config, **common)
        if _given(config) and not isinstance(config, Mapping):
            raise ConfigError("with a checkpoint directory, `config` can only be a dict of fields to check")
        return cls.from_pretrained(path, expect=config if _given(config) else None, **common)
    if config is None:
        raise ValueError(f"build_backbone({kind!r}) needs `pretrained` or `config`")
    return cls.from_config(config, seed=seed, **common)


def build_depth_encoder(
    pretrained: str | os.PathLike | None = None,
    config: Mapping[str, Any] | Any | None = None,
    target_patch_size: int = 16,
    seed: int = 0,
) -> "DepthEncoder":
    """Build the frozen depth encoder from a local checkpoint directory or (random weights) a config.

    ``config``: Depth Anything / Prompt Depth Anything / DINOv2 config object, or a dict of DINOv2 backbone
    kwargs (e.g. ``{"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": 56}``).
    With ``pretrained``, a non-empty dict ``config`` is only checked against the checkpoint's architecture.
    """
    encoder_cls = __getattr__("DepthEncoder")
    pretrained = resolve_weights(pretrained)
    if pretrained is not None:
        if _given(config) and not isinstance(config, Mapping):
            raise ConfigError("with a checkpoint directory, `config` can only be a dict of fields to check")
        return encoder_cls.from_pretrained(pretrained, target_patch_size=target_patch_size,
                                           expect=config if _given(config) else None)
    if config is None:
        raise ValueError("build_depth_encoder needs `pretrained` or `config`")
    return encoder_cls.from_config(config, seed=seed, target_patch_size=target_patch_size)


__all__ = [
    "BACKBONES",
    "DINOV3_PRESETS",
    "BlockContext",
    "DINOv2Backbone",
    "DINOv3Backbone",
    "DepthEncoder",
    "FrozenBackbone",
    "adapt_patch_kernel",
    "build_backbone",
    "build_depth_encoder",
    "convert_dinov3_original_state_dict",
    "load_dinov3_original_state_dict",
    "resize_patch_kernel",
    "rgb_channel_for_band",
    "select_rgb_bands",
    "tokens_to_map",
]
