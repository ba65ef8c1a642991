"""Backbone + plug-in + decode head: the one model class behind every SpectralMoE-family config.

``adapter.type`` selects the family member:

- ``none``: frozen backbone + head (only the head trains);
- ``rein``: one low-rank token set per layer, dot logits, no routers, no depth (:func:`build_rein`);
- ``spectralmoe``: E token experts with dual routers, steered by the frozen depth model's tokens.

Forward (image B×C×H×W normalised, wavelengths (C,) or (B, C) in µm):

1. the depth model (if any) runs once, frozen, on the three bands nearest 665/560/490 nm → per-block tokens B×N×d;
2. the vision model runs block by block; after block ℓ its patch tokens (prefix tokens split off and re-attached
   unchanged) go through the plug-in with the depth tokens of block ℓ;
3. the patch tokens after the tap blocks become B×d×h×w maps resized by ×4, ×2, ×1, ×0.5 (strides 4–32 for patch 16);
4. the head decodes them (Mask2Former additionally takes the plug-in's query embeddings).

Only the plug-in and the head train; :meth:`Segmentor.trainable_state_dict` is exactly what a checkpoint holds. The
class implements :class:`rsmoe.models.protocol.SegModel` (``loss(batch)``, ``predict(batch)``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config, default_taps
from ..errors import ConfigError
from .adapters.rein import build_rein
from .adapters.spectralmoe import SpectralMoE
from .backbones.base import FrozenBackbone, tokens_to_map
from .heads import build_head
from .trainable import TrainablePartsMixin

FROZEN_PREFIXES = ("backbone.", "depth.")
PYRAMID_SCALES = (4.0, 2.0, 1.0, 0.5)


@dataclass
class SegmentorOutput:
    head_out: object  # whatever the head returns (logits for FPN, a dict for Mask2Former)
    moe_loss: Tensor


class Segmentor(TrainablePartsMixin, nn.Module):
    """Frozen backbone (+ frozen depth model) → plug-in after every block → taps → head (see the module doc).

    ``router_loss_weight``: weight of the plug-in's router (load-balancing) loss in :meth:`loss`.
    ``activation_checkpointing``: recompute each frozen block with its plug-in call in the backward pass instead of
    keeping their activations (``train.activation_checkpointing``; same gradients, less memory, one more forward)."""

    frozen_prefixes = FROZEN_PREFIXES
    count_children = ("adapter",)

    def __init__(
        self,
        backbone: FrozenBackbone,
        head: nn.Module,
        adapter: SpectralMoE | None = None,
        depth: nn.Module | None = None,
        taps: list[int] | None = None,
        router_loss_weight: float = 1.0,
        activation_checkpointing: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.adapter = adapter
        self.depth = depth
        self.head = head
        self.router_loss_weight = float(router_loss_weight)
        self.activation_checkpointing = bool(activation_checkpointing)
        self.taps = list(taps) if taps is not None else default_taps(backbone.num_layers)
        self._check_parts()

    def _check_parts(self) -> None:
        backbone, adapter, depth = self.backbone, self.adapter, self.depth
        if len(self.taps) != len(PYRAMID_SCALES):
            raise ConfigError(f"backbone.taps must name {len(PYRAMID_SCALES)} blocks (one per pyramid level at "
                              f"×4, ×2, ×1, ×0.5), got {self.taps}")
        if any(t < 0 or t >= backbone.num_layers for t in self.taps) or self.taps != sorted(self.taps):
            raise ConfigError(f"backbone.taps {self.taps} must be ascending blocks of the backbone's "
                              f"{backbone.num_layers}")
        if adapter is not None and adapter.num_layers != backbone.num_layers:
            raise ConfigError(f"adapter has {adapter.num_layers} layers, backbone {backbone.num_layers} blocks")
        if adapter is not None and adapter.use_depth:
            if depth is None:
                raise ConfigError("SpectralMoE with use_depth needs a depth model (depth.enabled: true)")
            if depth.num_layers != backbone.num_layers or depth.embed_dim != backbone.embed_dim:
                raise ConfigError(
                    f"depth model ({depth.num_layers} blocks × {depth.embed_dim}) must match the vision model "
                    f"({backbone.num_layers} blocks × {backbone.embed_dim})"
                )

    @property
    def input_multiple(self) -> int:
        return int(self.backbone.patch_size)

    # ---------------------------------------------------------------------------------------------------- forward
    def features(self, image: Tensor, wavelengths: Tensor) -> tuple[list[Tensor], Tensor]:
        """Multi-level maps (strides ×4, ×2, ×1, ×0.5 of the patch grid) and the mean router loss over layers."""
        patch = self.backbone.patch_size
        grid = (image.shape[-2] // patch, image.shape[-1] // patch)
        depth_tokens = None
        if self.adapter is not None and self.adapter.use_depth:
            depth_tokens = self.depth(image, wavelengths, grid)  # frozen: never differentiated
        losses: dict[int, Tensor] = {}  # by block: activation checkpointing calls refine again in the backward pass

        def refine(i: int, patches: Tensor) -> Tensor:
            out = self.adapter(i, patches, None if depth_tokens is None else depth_tokens[i])
            losses[i] = out.loss
            return out.tokens

        taps, ctx = self.backbone.patch_tokens(image, wavelengths, self.taps,
                                               refine if self.adapter is not None else None,
                                               checkpoint_blocks=self.activation_checkpointing)
        pyramid = [tokens_to_map(t, ctx.grid) for t in taps]
        pyramid = [m if s == 1.0 else F.interpolate(m, scale_factor=s, mode="bilinear", align_corners=False)
                   for m, s in zip(pyramid, PYRAMID_SCALES, strict=True)]
        moe_loss = torch.stack(list(losses.values())).mean() if losses else image.new_zeros(())
        return pyramid, moe_loss

    def run(self, image: Tensor, wavelengths: Tensor) -> SegmentorOutput:
        feats, moe_loss = self.features(image, wavelengths)
        query_pos = self.adapter.query_embeddings() if self.adapter is not None else None
        return SegmentorOutput(self.head(feats, query_pos=query_pos), moe_loss)

    def forward(self, image: Tensor, wavelengths: Tensor) -> Tensor:
        """Class scores B×K×H×W at the input resolution."""
        out = self.run(image, wavelengths)
        return self.head.predict(out.head_out, image.shape[-2:])

    def predict(self, batch: Mapping[str, Any]) -> Tensor:
        """Evaluation-time class scores B×K×H×W of ``batch["image"]`` (the same as :meth:`forward`)."""
        return self.forward(batch["image"], batch["wavelengths"])

    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """``loss`` = head loss + ``router_loss_weight`` · router loss; ``loss_task`` and ``loss_router`` (and the
        head's own terms) detached, for logging."""
        out = self.run(batch["image"], batch["wavelengths"])
        head_terms = self.head.loss(out.head_out, batch["mask"])
        task = head_terms.pop("loss")
        terms = {k: v.detach() for k, v in head_terms.items()}
        terms["loss_task"] = task.detach()
        terms["loss_router"] = out.moe_loss.detach()
        terms["loss"] = task + self.router_loss_weight * out.moe_loss
        return terms

    # ----------------------------------------------------------------------------------------------- parameters
    def train(self, mode: bool = True) -> "Segmentor":
        super().train(mode)
        self.backbone.train(False)
        if self.depth is not None:
            self.depth.train(False)
        return self

    def no_weight_decay_names(self) -> set[str]:
        """Full names of parameters that AdamW must not decay (the public configs): norms, head query/level
        embeddings, expert A/B, routers, α."""
        names = self.norm_parameter_names()
        if self.adapter is not None:
            names |= {f"adapter.{n}" for n in self.adapter.no_weight_decay_names()}
        head_keys = getattr(self.head, "no_weight_decay_keys", ())
        names |= {f"head.{n}" for n, _ in self.head.named_parameters() if any(k in n for k in head_keys)}
        return names


ADAPTERS = ("none", "rein", "spectralmoe")


def build_adapter(cfg: Config, num_layers: int, dim: int) -> SpectralMoE | None:
    """The ``adapter`` section's plug-in for ``num_layers`` blocks of width ``dim`` (None for ``none``)."""
    a = cfg.adapter
    # the link exists only where a head consumes it: unused parameters would never train (and break DDP)
    query_dim = cfg.head.channels if (a.query_link and cfg.head.type == "mask2former") else 0
    if a.type == "none":
        return None
    if a.type == "rein":
        return build_rein(num_layers, dim, num_tokens=a.num_tokens, rank=a.rank, alpha_init=a.alpha_init,
                          query_dim=query_dim)
    if a.type == "spectralmoe":
        return SpectralMoE(
            num_layers=num_layers, dim=dim, num_experts=a.num_experts, num_tokens=a.num_tokens, rank=a.rank,
            top_k=a.top_k, gating=a.gating, distance_p=a.distance_p, noisy=a.noisy, routing=True,
            use_depth=cfg.depth.enabled, expert_logits=a.expert_logits,
            fusion=a.fusion if cfg.depth.enabled else "none", combine=a.combine, alpha_init=a.alpha_init,
            query_dim=query_dim,
        )
    raise ConfigError(f"adapter.type: got {a.type!r}, expected one of {list(ADAPTERS)}")


def segmentor_head(cfg: Config, in_channels: list[int], num_classes: int, ignore_index: int) -> nn.Module:
    """The ``head`` section's decode head; with SpectralMoE's query link, Mask2Former gets m queries."""
    h = cfg.head
    options = dict(h.options)
    if h.type == "mask2former" and cfg.adapter.type != "none" and cfg.adapter.query_link:
        # the query link turns the m expert tokens into the m query positional embeddings
        options.setdefault("num_queries", cfg.adapter.num_tokens)
        if options["num_queries"] != cfg.adapter.num_tokens:
            raise ConfigError(f"head.options.num_queries {options['num_queries']} must equal adapter.num_tokens "
                              f"{cfg.adapter.num_tokens} when adapter.query_link is on")
    return build_head(h.type, in_channels, num_classes, channels=h.channels, ignore_index=ignore_index, **options)


def build_segmentor(cfg: Config, num_classes: int, wavelengths: list[float], class_names=None,  # noqa: ARG001
                    ignore_index: int = 255, **unused) -> Segmentor:
    """The model of a config for images with the given band wavelengths (µm) (``class_names`` and MPerS's
    text-encoder options are not used by this family)."""
    from .backbones import build_backbone, build_depth_encoder

    b = cfg.backbone
    backbone = build_backbone(
        b.kind, pretrained=b.pretrained, config=b.config, num_bands=len(wavelengths),
        band_init=b.band_channels or b.band_init, wavelengths=list(wavelengths), seed=b.seed,
    )
    depth = None
    if cfg.depth.enabled and cfg.adapter.type == "spectralmoe":
        depth = build_depth_encoder(
            pretrained=cfg.depth.pretrained, config=cfg.depth.config, target_patch_size=backbone.patch_size,
            seed=cfg.depth.seed,
        )
    adapter = build_adapter(cfg, backbone.num_layers, backbone.embed_dim)
    taps = b.taps if b.taps is not None else default_taps(backbone.num_layers)
    head = segmentor_head(cfg, [backbone.embed_dim] * len(taps), num_classes, ignore_index)
    return Segmentor(backbone, head, adapter=adapter, depth=depth, taps=taps,
                     router_loss_weight=cfg.adapter.loss_weight,
                     activation_checkpointing=cfg.train.activation_checkpointing)
