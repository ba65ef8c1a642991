"""The frozen depth branch: the ViT encoder of Depth Anything V2 / Prompt Depth Anything.

Only the DINOv2 backbone's embeddings and transformer blocks are kept (the DPT neck, the depth head and the final
LayerNorm are dropped). To pair its tokens one-to-one with the VFM's (docs/spectralmoe.md §2), the patch-14 kernel
is resized to the VFM's patch size (bicubic ``F.interpolate`` on the weight, as the public code does) and the
learned position embedding is interpolated (bicubic) from its pretraining grid to the VFM's token grid, so an
H×W image gives the same (H/p, W/p) grid in both models.

The encoder takes three bands of the image standing for R, G, B, chosen from the band wavelengths by
:func:`~rsmoe.models.backbones.bands.select_rgb_bands` (nearest 0.665 / 0.560 / 0.490 µm).
"""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (
    AutoBackbone,
    AutoConfig,
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    PromptDepthAnythingConfig,
    PromptDepthAnythingForDepthEstimation,
)

from .bands import select_rgb_bands
from .base import FrozenModule
from .dinov3 import check_architecture, check_patch_divisible, config_from_dict, require_dir, square_patch_size
from ...errors import CheckpointError
from ...hf_logging import no_progress_bars
from ...seeding import seeded


def resize_patch_kernel(weight: Tensor, patch_size: int) -> Tensor:
    """out×C×k×k kernel → out×C×p×p by bicubic interpolation (align_corners=False, computed in float32).

    No area compensation: the resized kernel's response to a constant patch grows by (p/k)² — this matches the
    public code's resize, whose adapters were trained against it.
    """
    resized = F.interpolate(weight.detach().float(), size=(patch_size, patch_size), mode="bicubic",
                            align_corners=False)
    return resized.to(weight.dtype)


class DepthEncoder(FrozenModule):
    """Frozen DINOv2-style encoder of a depth foundation model, returning patch tokens after every block.

    Args:
        embeddings: a transformers ``Dinov2Embeddings`` (or ``Dinov2WithRegistersEmbeddings``) module.
        layers: its transformer blocks (``backbone.encoder.layer``).
        target_patch_size: the VFM's patch size; the patch kernel is resized to it when it differs.

    Always in eval mode, no parameter requires grad, and :meth:`forward` runs under ``torch.no_grad``.
    """

    def __init__(self, embeddings: nn.Module, layers: Sequence[nn.Module], target_patch_size: int = 16):
        super().__init__()
        patch = embeddings.patch_embeddings
        conv: nn.Conv2d = patch.projection
        if conv.in_channels != 3:
            raise ValueError(f"the depth encoder expects a 3-band (RGB) patch kernel, got {conv.in_channels} bands")
        self.source_patch_size = square_patch_size(tuple(conv.kernel_size))
        self.patch_size = int(target_patch_size)
        if self.patch_size != self.source_patch_size:
            new = nn.Conv2d(3, conv.out_channels, kernel_size=self.patch_size, stride=self.patch_size,
                            bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
            with torch.no_grad():
                new.weight.copy_(resize_patch_kernel(conv.weight, self.patch_size))
                if conv.bias is not None:
                    new.bias.copy_(conv.bias)
            patch.projection = new
            # the embeddings' interpolate_pos_encoding reads the patch size from here to size the target grid
            patch.patch_size = (self.patch_size, self.patch_size)
            embeddings.patch_size = self.patch_size
        self.embeddings = embeddings
        self.layers = nn.ModuleList(layers)
        self.num_layers = len(self.layers)
        self.embed_dim = int(embeddings.cls_token.shape[-1])
        registers = getattr(embeddings, "register_tokens", None)
        self.num_prefix_tokens = 1 + (int(registers.shape[1]) if registers is not None else 0)
        self.freeze()

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_backbone(cls, backbone: nn.Module, target_patch_size: int = 16) -> "DepthEncoder":
        """From a transformers Dinov2 backbone/model (anything with ``.embeddings`` and ``.encoder.layer``)."""
        return cls(backbone.embeddings, list(backbone.encoder.layer), target_patch_size=target_patch_size)

    @staticmethod
    def backbone_config(config: Any) -> Dinov2Config | Dinov2WithRegistersConfig:
        """The DINOv2 config of the encoder from a Depth Anything / Prompt Depth Anything config, a DINOv2 config,
        or a dict (with a ``backbone_config`` entry: Depth Anything kwargs; otherwise: DINOv2 backbone kwargs, unknown
        keys refused, ``intermediate_size`` accepted as ``hidden_size × mlp_ratio``)."""
        if isinstance(config, Mapping):
            config = dict(config)
            if "backbone_config" in config:
                config = DepthAnythingConfig(**config)
            else:
                config = DepthAnythingConfig(backbone_config=config_from_dict(Dinov2Config, config))
        if isinstance(config, (DepthAnythingConfig, PromptDepthAnythingConfig)):
            config = config.backbone_config
        if not isinstance(config, (Dinov2Config, Dinov2WithRegistersConfig)):
            raise TypeError(f"the depth encoder needs a DINOv2 backbone config, got {type(config).__name__}")
        return copy.deepcopy(config)

    @classmethod
    def from_config(cls, config: Any, seed: int = 0, target_patch_size: int = 16) -> "DepthEncoder":
        """Randomly initialised encoder (for tests): deterministic given ``seed``; global RNG left untouched."""
        cfg = cls.backbone_config(config)
        with seeded(seed):
            backbone = AutoBackbone.from_config(cfg)
        return cls.from_backbone(backbone, target_patch_size=target_patch_size)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, target_patch_size: int = 16,
                        expect: Mapping[str, Any] | None = None) -> "DepthEncoder":
        """Load a local transformers checkpoint directory (never the hub) in float32.

        Accepts ``depth_anything`` (Depth Anything V1/V2), ``prompt_depth_anything`` and plain ``dinov2`` /
        ``dinov2_with_registers`` checkpoints; for the depth models only the backbone is kept. ``expect``: DINOv2
        config fields the backbone must agree with (architecture fields only).
        """
        path = require_dir(path, "depth encoder")
        model_type = AutoConfig.from_pretrained(path, local_files_only=True).model_type
        loaders = {
            "depth_anything": DepthAnythingForDepthEstimation,
            "prompt_depth_anything": PromptDepthAnythingForDepthEstimation,
            "dinov2": Dinov2Model,
            "dinov2_with_registers": Dinov2WithRegistersModel,
        }
        if model_type not in loaders:
            raise CheckpointError(f"{path}: unsupported model_type {model_type!r} for the depth encoder; "
                             f"expected one of {sorted(loaders)}")
        with no_progress_bars():
            model = loaders[model_type].from_pretrained(path, local_files_only=True, dtype=torch.float32)
        backbone = getattr(model, "backbone", model)
        check_architecture(backbone.config, expect, f"depth checkpoint {path}")
        return cls.from_backbone(backbone, target_patch_size=target_patch_size)

    # -- forward ------------------------------------------------------------------------------------------------
    def rgb_input(self, image: Tensor, wavelengths: Tensor | Sequence[float] | None) -> Tensor:
        """The B×3×H×W (R, G, B) input picked from a B×C×H×W image by the band wavelengths (µm)."""
        if image.dim() != 4:
            raise ValueError(f"expected a B×C×H×W image, got shape {tuple(image.shape)}")
        b, c = image.shape[:2]
        if wavelengths is None:
            if c != 3:
                raise ValueError(f"the depth encoder needs the band wavelengths to pick R, G, B from {c} bands")
            return image
        wl = wavelengths if isinstance(wavelengths, Tensor) else torch.tensor(list(wavelengths), dtype=torch.float64)
        if wl.shape[-1] != c or wl.dim() not in (1, 2) or (wl.dim() == 2 and wl.shape[0] != b):
            raise ValueError(f"wavelengths of shape {tuple(wl.shape)} do not match an image with {b}×{c} bands; "
                             f"expected ({c},) or ({b}, {c})")
        if wl.dim() == 1 or torch.equal(wl, wl[:1].expand_as(wl)):
            idx = select_rgb_bands(wl if wl.dim() == 1 else wl[0])
            return image[:, idx]
        rows = torch.tensor([select_rgb_bands(row) for row in wl], dtype=torch.long, device=image.device)
        return image[torch.arange(b, device=image.device)[:, None], rows]

    def forward(self, image: Tensor, wavelengths: Tensor | Sequence[float] | None,
                grid: tuple[int, int]) -> list[Tensor]:
        """Patch tokens (B×N×d, prefix tokens dropped) after each of the ``num_layers`` blocks.

        ``grid`` is the VFM's (h, w) token grid for this image; a mismatch with this encoder's grid raises.

        Frozen, so nothing is recorded for autograd (not even when the image requires grad): the blocks run under
        ``torch.inference_mode`` (no version counters or view tracking), unless a parameter was unfrozen and grad
        mode is on (then they run with autograd, so that parameter's gradient still flows). Inference tensors cannot be saved for backward, which the
        plug-in's routers downstream do, so outside inference mode each layer's tokens are returned as an ordinary
        (contiguous) copy, made as the blocks run (no second full set is held at once)."""
        rgb = self.rgb_input(image, wavelengths)
        own_grid = check_patch_divisible(rgb, self.patch_size, "DepthEncoder")
        if tuple(grid) != own_grid:
            raise ValueError(f"DepthEncoder grid {own_grid} (patch {self.patch_size}) differs from the VFM grid "
                             f"{tuple(grid)}; build it with target_patch_size equal to the VFM's patch size")
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            return self.encode(rgb, copy=False)
        copy = not torch.is_inference_mode_enabled()
        with torch.inference_mode():
            return self.encode(rgb, copy=copy)

    def encode(self, rgb: Tensor, copy: bool) -> list[Tensor]:
        """The blocks on a B×3×H×W image → per-block patch tokens; ``copy``: each as an ordinary tensor (made
        outside inference mode) rather than a view of the block's output."""
        dtype = self.embeddings.patch_embeddings.projection.weight.dtype
        tokens = self.embeddings(rgb.to(dtype))
        p = self.num_prefix_tokens
        out = []
        for layer in self.layers:
            tokens = layer(tokens)
            if copy:
                with torch.inference_mode(False):
                    out.append(tokens[:, p:].clone(memory_format=torch.contiguous_format))
            else:
                out.append(tokens[:, p:])
        return out


__all__ = ["DepthEncoder", "resize_patch_kernel"]
