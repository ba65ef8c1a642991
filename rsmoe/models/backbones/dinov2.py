"""DINOv2 ViT (``transformers.Dinov2Model`` or ``Dinov2WithRegistersModel``) as a frozen, block-by-block backbone.

Token layout: ``[CLS, register_1 … register_R, patch_1 … patch_N]`` with R = 0 for ``Dinov2Model`` and
``config.num_register_tokens`` for ``Dinov2WithRegistersModel``. Learned absolute position embeddings are added in
:meth:`DINOv2Backbone.embed` by the model's own ``interpolate_pos_encoding`` (bicubic resize from the pretraining
grid to the input's grid); the blocks themselves carry no position information.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import AutoConfig, Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from .bands import BandInit
from .base import BlockContext, FrozenBackbone
from .dinov3 import (
    check_architecture,
    check_patch_divisible,
    config_from_dict,
    needs_new_kernel,
    replace_patch_conv,
    require_dir,
    square_patch_size,
)
from ...errors import CheckpointError
from ...hf_logging import no_progress_bars
from ...seeding import seeded

Dinov2Like = Dinov2Model | Dinov2WithRegistersModel
Dinov2LikeConfig = Dinov2Config | Dinov2WithRegistersConfig


class DINOv2Backbone(FrozenBackbone):
    """Frozen DINOv2 (optionally with registers), run block by block.

    Band handling as for :class:`~rsmoe.models.backbones.dinov3.DINOv3Backbone`: ``num_bands != 3`` (or
    ``band_init='wavelength'`` with known wavelengths) replaces the patch conv by an adapted copy.
    """

    def __init__(self, model: Dinov2Like, num_bands: int = 3, band_init: BandInit = "cyclic",
                 wavelengths: Sequence[float] | Tensor | None = None):
        super().__init__()
        if not isinstance(model, (Dinov2Model, Dinov2WithRegistersModel)):
            raise TypeError(f"expected a transformers Dinov2Model or Dinov2WithRegistersModel, "
                            f"got {type(model).__name__}")
        config = model.config
        self.model = model
        self.embed_dim = int(config.hidden_size)
        self.num_layers = int(config.num_hidden_layers)
        registers = getattr(model.embeddings, "register_tokens", None)
        self.num_prefix_tokens = 1 + (int(registers.shape[1]) if registers is not None else 0)
        self.patch_size = square_patch_size(config.patch_size)
        self.num_bands = int(num_bands)
        self.band_init = band_init
        patch = model.embeddings.patch_embeddings
        if needs_new_kernel(patch.projection, self.num_bands, band_init, wavelengths):
            patch.projection = replace_patch_conv(patch.projection, self.num_bands, band_init, wavelengths)
            patch.num_channels = self.num_bands
            config.num_channels = self.num_bands
        self.freeze()

    # -- construction -------------------------------------------------------------------------------------------
    @staticmethod
    def make_config(config: Dinov2LikeConfig | Mapping[str, Any]) -> Dinov2LikeConfig:
        """A private copy of ``config``; a dict with ``num_register_tokens > 0`` gives a with-registers config.
        Unknown dict keys raise; ``intermediate_size`` is turned into DINOv2's ``mlp_ratio``."""
        if isinstance(config, (Dinov2Config, Dinov2WithRegistersConfig)):
            return copy.deepcopy(config)
        kwargs = dict(config)
        if int(kwargs.get("num_register_tokens", 0) or 0) > 0:
            return config_from_dict(Dinov2WithRegistersConfig, kwargs)
        kwargs.pop("num_register_tokens", None)
        return config_from_dict(Dinov2Config, kwargs)

    @staticmethod
    def model_for_config(config: Dinov2LikeConfig) -> Dinov2Like:
        if isinstance(config, Dinov2WithRegistersConfig):
            return Dinov2WithRegistersModel(config)
        return Dinov2Model(config)

    @classmethod
    def from_config(cls, config: Dinov2LikeConfig | Mapping[str, Any], num_bands: int = 3,
                    band_init: BandInit = "cyclic", wavelengths: Sequence[float] | Tensor | None = None,
                    seed: int = 0) -> "DINOv2Backbone":
        """Randomly initialised model (deterministic given ``seed``; the global RNG state is left untouched)."""
        cfg = cls.make_config(config)
        with seeded(seed):
            model = cls.model_for_config(cfg)
        return cls(model, num_bands=num_bands, band_init=band_init, wavelengths=wavelengths)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, num_bands: int = 3, band_init: BandInit = "cyclic",
                        wavelengths: Sequence[float] | Tensor | None = None,
                        expect: Mapping[str, Any] | None = None) -> "DINOv2Backbone":
        """Load a transformers-format ``dinov2`` or ``dinov2_with_registers`` directory (float32), never the hub.
        ``expect``: config fields the checkpoint must agree with (architecture fields only)."""
        path = require_dir(path, "DINOv2")
        cfg = AutoConfig.from_pretrained(path, local_files_only=True)
        if cfg.model_type == "dinov2_with_registers":
            model_cls = Dinov2WithRegistersModel
        elif cfg.model_type == "dinov2":
            model_cls = Dinov2Model
        else:
            raise CheckpointError(f"{path}: expected a dinov2 checkpoint, found model_type={cfg.model_type!r}")
        with no_progress_bars():
            model = model_cls.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        check_architecture(model.config, expect, f"DINOv2 checkpoint {path}")
        return cls(model, num_bands=num_bands, band_init=band_init, wavelengths=wavelengths)

    # -- forward ------------------------------------------------------------------------------------------------
    def embed(self, image: Tensor, wavelengths: Tensor | None = None) -> tuple[Tensor, BlockContext]:
        grid = check_patch_divisible(image, self.patch_size, "DINOv2Backbone")
        if image.shape[1] != self.num_bands:
            raise ValueError(f"DINOv2Backbone was built for {self.num_bands} bands, got an image with "
                             f"{image.shape[1]}")
        # the embeddings add CLS (+ registers) and the position encoding interpolated to this grid
        tokens = self.model.embeddings(image)
        return tokens, BlockContext(grid=grid)

    def block(self, index: int, tokens: Tensor, ctx: BlockContext) -> Tensor:
        return self.model.encoder.layer[index](tokens)

    def final_norm(self, tokens: Tensor) -> Tensor:
        """The model's last LayerNorm (not applied by :meth:`block`)."""
        return self.model.layernorm(tokens)


__all__ = ["DINOv2Backbone"]
