"""Mask2Former decode head (Cheng et al. 2022) for semantic segmentation, in pure PyTorch.

Configured as the SpectralMoE public code does (docs/spectralmoe.md §9): 256 channels, 100 queries, a 6-layer
multi-scale deformable-attention pixel decoder over the strides-8/16/32 maps (8 heads, 3 levels, 4 points, FFN 1024,
GroupNorm(32)), the stride-4 map as mask features, a 9-layer masked-attention transformer decoder (FFN 2048, 8 heads,
round-robin over the 3 levels, lowest resolution first) with a prediction after every layer, and Mask2Former's
set-prediction loss (Hungarian matching; class CE 2.0 with no-object 0.1, mask BCE 5.0, dice 5.0 on 12,544 points).

Usage (the Segmentor's contract)::

    head = Mask2FormerHead(in_channels=[d] * 4, num_classes=K)
    out = head(features, query_pos=None)   # features: strides 4, 8, 16, 32
    losses = head.loss(out, mask)          # dict of terms, losses["loss"] is the total to back-propagate
    logits = head.predict(out, size=(H, W))  # B × K × H × W

``out`` holds ``pred_logits`` B×Q×(K+1) and ``pred_masks`` B×Q×H/4×W/4 of the last decoder layer and ``aux``, the
list of the earlier predictions (the one made from the bare queries before the first layer, then after layers
1 … n−1), so 1 + n predictions in all; all of them are supervised (deep supervision).

Decisions:

* Norm placement: post-norm everywhere, as in Mask2Former — encoder layer x = LN(x + MSDA(x)); x = LN(x + FFN(x));
  decoder layer q = LN(q + CrossAttn(q)); q = LN(q + SelfAttn(q)); q = LN(q + FFN(q)); one shared LayerNorm before
  the class and mask predictors. Dropout 0 throughout (the public config's values).
* Positions: the deformable encoder adds (sine encoding + learned level embedding) to the query only, never to the
  value; the decoder adds the query positional embedding to queries and the sine encoding of the level to keys, and
  adds its own learned level embedding to the memory (keys and values).
* Ignored pixels: see :mod:`rsmoe.models.heads.matching` — ``ignore_mode="negative"`` (default) treats them as
  background for every class, which is what the public mmsegmentation code does (its per-class masks are simply
  ``label == c``), so the published recipe reproduces; ``ignore_mode="exclude"`` gives points on
  ignored pixels zero weight in the matching costs and the mask losses (and never keeps them as "uncertain"
  points). The two agree when nothing is ignored.
* Inference follows mmsegmentation: the last layer's mask logits are upsampled (bilinear) to the output size first,
  then sigmoid, then Σ_q softmax(class)[..., :K] · sigmoid(mask).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import gn_groups
from .deformable_attention import MultiScaleDeformableAttention, level_reference_points
from .matching import (
    class_cost,
    hungarian_match,
    mask_bce_cost,
    mask_dice_cost,
    point_sample,
    sample_targets,
    uncertain_point_coords,
)

__all__ = [
    "Mask2FormerHead",
    "MSDeformAttnPixelDecoder",
    "MaskedAttentionDecoderLayer",
    "sine_positional_encoding",
    "attention_mask_from_logits",
    "semantic_inference",
]


def sine_positional_encoding(
    height: int,
    width: int,
    num_feats: int,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
    eps: float = 1e-6,
    device=None,
    dtype=torch.float32,
) -> Tensor:
    """DETR's normalised sine encoding of an unpadded H×W grid → (2·num_feats)×H×W.

    Row/column indices 1…H / 1…W are scaled to (0, 2π]; feature j divides them by
    temperature^(2⌊j/2⌋/num_feats) and takes sin for even j, cos for odd j; the y half comes first, then the x half.
    """
    y = torch.arange(1, height + 1, device=device, dtype=torch.float32) / (height + eps) * scale
    x = torch.arange(1, width + 1, device=device, dtype=torch.float32) / (width + eps) * scale
    j = torch.arange(num_feats, device=device, dtype=torch.float32)
    freq = temperature ** (2 * torch.div(j, 2, rounding_mode="floor") / num_feats)

    def encode(v: Tensor) -> Tensor:  # n → n × num_feats, interleaved sin/cos
        a = v[:, None] / freq
        return torch.stack([a[:, 0::2].sin(), a[:, 1::2].cos()], dim=-1).flatten(1)

    ey, ex = encode(y), encode(x)
    shape = (height, width, num_feats)
    pos = torch.cat([ey[:, None, :].expand(shape), ex[None, :, :].expand(shape)], dim=-1)
    return pos.permute(2, 0, 1).to(dtype)


def _conv_gn(in_ch: int, out_ch: int, kernel: int, relu: bool, bias: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias),
        nn.GroupNorm(gn_groups(out_ch), out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _ffn(channels: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))


class DeformableEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention over all levels, then an FFN."""

    def __init__(self, channels: int, num_heads: int, num_levels: int, num_points: int, ffn_channels: int) -> None:
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(channels, num_heads, num_levels, num_points)
        self.norm1 = nn.LayerNorm(channels)
        self.ffn = _ffn(channels, ffn_channels)
        self.norm2 = nn.LayerNorm(channels)

    def forward(self, x: Tensor, pos: Tensor, reference_points: Tensor, spatial_shapes) -> Tensor:
        x = self.norm1(x + self.self_attn(x + pos, reference_points, x, spatial_shapes))
        return self.norm2(x + self.ffn(x))


class MSDeformAttnPixelDecoder(nn.Module):
    """Mask2Former's pixel decoder.

    Input: 4 maps at strides 4, 8, 16, 32. The strides-8/16/32 maps are projected (1×1 conv + GroupNorm) to
    ``channels`` and refined jointly by the deformable encoder (levels ordered lowest resolution first: stride 32 is
    level 0). The stride-8 output, upsampled ×2 (bilinear), is added to a lateral projection of the stride-4 map
    (1×1 conv + GN) and smoothed (3×3 conv + GN + ReLU); a 1×1 conv gives the mask features.

    Returns (mask features B×C×H/4×W/4, [encoder maps at strides 32, 16, 8]).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int = 256,
        num_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        ffn_channels: int = 1024,
    ) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError("the pixel decoder takes 4 maps (strides 4, 8, 16, 32)")
        if channels % 2:
            raise ValueError("channels must be even (sine encoding uses channels/2 features per axis)")
        self.channels = channels
        self.num_levels = 3
        # input_projs[l] projects encoder level l: l = 0 ↔ stride 32, 1 ↔ 16, 2 ↔ 8
        self.input_projs = nn.ModuleList(
            [_conv_gn(in_channels[3 - lvl], channels, 1, relu=False, bias=True) for lvl in range(self.num_levels)]
        )
        self.level_embed = nn.Embedding(self.num_levels, channels)
        self.layers = nn.ModuleList(
            [
                DeformableEncoderLayer(channels, num_heads, self.num_levels, num_points, ffn_channels)
                for _ in range(num_layers)
            ]
        )
        self.lateral_conv = _conv_gn(in_channels[0], channels, 1, relu=False, bias=False)
        self.output_conv = _conv_gn(channels, channels, 3, relu=True, bias=False)
        self.mask_feature = nn.Conv2d(channels, channels, 1)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for seq in list(self.input_projs):
            nn.init.xavier_uniform_(seq[0].weight)
            nn.init.zeros_(seq[0].bias)
        for layer in self.layers:
            for p in layer.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
            layer.self_attn.reset_parameters()
        nn.init.normal_(self.level_embed.weight)
        for conv in (self.lateral_conv[0], self.output_conv[0], self.mask_feature):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        B = features[0].shape[0]
        maps, pos, shapes = [], [], []
        for lvl in range(self.num_levels):
            x = self.input_projs[lvl](features[3 - lvl])
            h, w = x.shape[-2:]
            shapes.append((h, w))
            maps.append(x.flatten(2).transpose(1, 2))
            pe = sine_positional_encoding(h, w, self.channels // 2, device=x.device, dtype=x.dtype)
            pos.append(pe.flatten(1).T + self.level_embed.weight[lvl].to(x.dtype))
        x = torch.cat(maps, dim=1)
        pos = torch.cat(pos, dim=0).unsqueeze(0)
        ref = level_reference_points(shapes, device=x.device).unsqueeze(0).expand(B, -1, -1)  # float32
        for layer in self.layers:
            x = layer(x, pos, ref, shapes)
        outs = [
            y.transpose(1, 2).reshape(B, self.channels, h, w)
            for y, (h, w) in zip(x.split([h * w for h, w in shapes], dim=1), shapes)
        ]
        fine = features[0]
        up = F.interpolate(outs[-1], size=fine.shape[-2:], mode="bilinear", align_corners=False)
        y = self.lateral_conv(fine) + up
        y = self.output_conv(y)
        return self.mask_feature(y), outs


class MaskedAttentionDecoderLayer(nn.Module):
    """Post-norm decoder layer: masked cross-attention to one level → self-attention → FFN."""

    def __init__(self, channels: int, num_heads: int, ffn_channels: int) -> None:
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(channels, num_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(channels)
        self.self_attn = nn.MultiheadAttention(channels, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(channels)
        self.ffn = _ffn(channels, ffn_channels)
        self.norm3 = nn.LayerNorm(channels)

    def forward(
        self, query: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor, attn_mask: Tensor | None
    ) -> Tensor:
        """query B×Q×C, query_pos B×Q×C, memory B×S×C, memory_pos B×S×C or 1×S×C,
        attn_mask (B·heads)×Q×S bool (True = may not attend) or None."""
        a = self.cross_attn(query + query_pos, memory + memory_pos, memory, attn_mask=attn_mask, need_weights=False)[0]
        query = self.norm1(query + a)
        q = query + query_pos
        query = self.norm2(query + self.self_attn(q, q, query, need_weights=False)[0])
        return self.norm3(query + self.ffn(query))


def attention_mask_from_logits(mask_logits: Tensor, size: tuple[int, int], num_heads: int) -> Tensor:
    """Mask logits B×Q×h×w → bool (B·heads)×Q×(H·W) at ``size``: True (masked) where sigmoid < 0.5 after
    bilinear resizing; a query whose mask would block every position is left unmasked. Detached."""
    with torch.no_grad():
        m = F.interpolate(mask_logits.detach().float(), size=size, mode="bilinear", align_corners=False)
        masked = m.flatten(2).sigmoid() < 0.5  # B × Q × S
        masked &= ~masked.all(dim=-1, keepdim=True)
        return masked.repeat_interleave(num_heads, dim=0)  # batch-major, as nn.MultiheadAttention expects


def semantic_inference(class_logits: Tensor, mask_logits: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """Σ_q softmax(class)[..., :K] · sigmoid(mask): B×Q×(K+1), B×Q×h×w → B×K×H×W (masks resized to ``size``
    bilinearly before the sigmoid)."""
    if size is not None and tuple(mask_logits.shape[-2:]) != tuple(size):
        mask_logits = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
    probs = class_logits.softmax(-1)[..., :-1]
    return torch.einsum("bqk,bqhw->bkhw", probs, mask_logits.sigmoid())


class Mask2FormerHead(nn.Module):
    """Mask2Former decode head; see the module docstring for the behaviour and the decisions.

    Args:
        in_channels: channels of the 4 input maps (strides 4, 8, 16, 32).
        num_classes: K; the class predictor has K + 1 outputs (the last is "no object").
        channels: width of the pixel decoder, mask features and transformer decoder.
        num_queries: Q.
        pixel_decoder_layers / decoder_layers: depth of the deformable encoder / masked-attention decoder.
        num_heads: heads of every attention; num_points: points per head and level of the deformable attention.
        ffn_pixel / ffn_decoder: FFN hidden widths of the encoder / decoder layers.
        num_points_loss, oversample_ratio, importance_sample_ratio: point sampling of the matching and mask losses.
        class_weight, mask_weight, dice_weight: loss and matching-cost weights; no_object_weight: CE weight of the
            no-object class.
        ignore_index: label of ignored pixels; ignore_mode: "negative" (default; the public mmsegmentation
            behaviour: background for every class) or "exclude" (zero weight).
    """

    #: parameters AdamW must not decay (the public configs' ``custom_keys``: the query positional embedding —
    #: ``query_embed`` in mmdet — and the level embeddings; the query content ``query_feat`` is decayed)
    no_weight_decay_keys = ("query_pos", "level_embed")

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 256,
        num_queries: int = 100,
        pixel_decoder_layers: int = 6,
        decoder_layers: int = 9,
        num_heads: int = 8,
        num_points: int = 4,
        ffn_pixel: int = 1024,
        ffn_decoder: int = 2048,
        num_points_loss: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        ignore_index: int = 255,
        ignore_mode: str = "negative",
    ) -> None:
        super().__init__()
        if ignore_mode not in ("exclude", "negative"):
            raise ValueError(f"ignore_mode must be 'exclude' or 'negative', not {ignore_mode!r}")
        self.num_classes, self.num_queries = num_classes, num_queries
        self.channels, self.num_heads = channels, num_heads
        self.num_levels = 3
        self.num_points_loss = num_points_loss
        self.oversample_ratio, self.importance_sample_ratio = oversample_ratio, importance_sample_ratio
        self.class_weight, self.mask_weight, self.dice_weight = class_weight, mask_weight, dice_weight
        self.ignore_index, self.ignore_mode = ignore_index, ignore_mode

        self.pixel_decoder = MSDeformAttnPixelDecoder(
            in_channels, channels, pixel_decoder_layers, num_heads, num_points, ffn_pixel
        )
        self.query_feat = nn.Embedding(num_queries, channels)  # query content
        self.query_pos = nn.Embedding(num_queries, channels)  # query positional embedding
        self.level_embed = nn.Embedding(self.num_levels, channels)  # decoder's own level embedding
        self.layers = nn.ModuleList(
            [MaskedAttentionDecoderLayer(channels, num_heads, ffn_decoder) for _ in range(decoder_layers)]
        )
        self.decoder_norm = nn.LayerNorm(channels)
        self.class_embed = nn.Linear(channels, num_classes + 1)
        self.mask_embed = nn.Sequential(
            nn.Linear(channels, channels), nn.ReLU(inplace=True),
            nn.Linear(channels, channels), nn.ReLU(inplace=True),
            nn.Linear(channels, channels),
        )
        ce_weight = torch.ones(num_classes + 1)
        ce_weight[-1] = no_object_weight
        self.register_buffer("ce_class_weight", ce_weight, persistent=False)
        for layer in self.layers:
            for p in layer.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    # ------------------------------------------------------------------ forward
    def _predict(self, query: Tensor, mask_features: Tensor) -> tuple[Tensor, Tensor]:
        q = self.decoder_norm(query)
        return self.class_embed(q), torch.einsum("bqc,bchw->bqhw", self.mask_embed(q), mask_features)

    def forward(self, features: Sequence[Tensor], query_pos: Tensor | None = None) -> dict:
        """features: 4 maps B×d_i×H_i×W_i at strides 4, 8, 16, 32. query_pos: optional Q×C (or B×Q×C) positional
        embeddings replacing the head's learned ones (the content queries stay the head's own)."""
        if len(features) != 4:
            raise ValueError(f"expected 4 feature maps (strides 4, 8, 16, 32), got {len(features)}")
        mask_features, levels = self.pixel_decoder(features)
        B, C = mask_features.shape[:2]
        dt = mask_features.dtype
        memory, memory_pos, sizes = [], [], []
        for lvl, m in enumerate(levels):
            h, w = m.shape[-2:]
            sizes.append((h, w))
            memory.append(m.flatten(2).transpose(1, 2) + self.level_embed.weight[lvl].to(dt))
            pe = sine_positional_encoding(h, w, C // 2, device=m.device, dtype=dt)
            memory_pos.append(pe.flatten(1).T.unsqueeze(0))

        if query_pos is None:
            qpos = self.query_pos.weight.unsqueeze(0).expand(B, -1, -1)
        else:
            if query_pos.shape[-2:] != (self.num_queries, C):
                raise ValueError(f"query_pos must be {self.num_queries}×{C} (or B×…), got {tuple(query_pos.shape)}")
            qpos = query_pos.expand(B, -1, -1) if query_pos.dim() == 3 else query_pos.unsqueeze(0).expand(B, -1, -1)
        qpos = qpos.to(dt)
        query = self.query_feat.weight.unsqueeze(0).expand(B, -1, -1).to(dt)

        preds = []
        cls, masks = self._predict(query, mask_features)
        preds.append({"pred_logits": cls, "pred_masks": masks})
        attn_mask = attention_mask_from_logits(masks, sizes[0], self.num_heads)
        for i, layer in enumerate(self.layers):
            lvl = i % self.num_levels
            query = layer(query, qpos, memory[lvl], memory_pos[lvl], attn_mask)
            cls, masks = self._predict(query, mask_features)
            preds.append({"pred_logits": cls, "pred_masks": masks})
            if i + 1 < len(self.layers):
                attn_mask = attention_mask_from_logits(masks, sizes[(i + 1) % self.num_levels], self.num_heads)
        out = dict(preds[-1])
        out["aux"] = preds[:-1]
        return out

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, out: dict, size: tuple[int, int] | None = None) -> Tensor:
        """Semantic scores B×K×H×W from the last prediction (see :func:`semantic_inference`)."""
        return semantic_inference(out["pred_logits"].float(), out["pred_masks"].float(), size)

    # ------------------------------------------------------------------ targets and matching
    def prepare_targets(self, mask: Tensor) -> list[dict]:
        """Semantic mask B×H×W → per image {labels G, masks G×H×W float, valid H×W float or None}: one binary
        mask per class present (ignore excluded), classes in increasing order. ``valid`` is None when nothing is
        ignored or ``ignore_mode="negative"``. A label outside [0, K) other than ``ignore_index`` is an error."""
        targets = []
        for m in mask:
            labels = torch.unique(m)
            labels = labels[labels != self.ignore_index]
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ValueError(f"mask labels must be in [0, {self.num_classes}) or {self.ignore_index}, "
                                 f"got {labels.tolist()}")
            masks = (m.unsqueeze(0) == labels.view(-1, 1, 1)).float()
            valid = None
            if self.ignore_mode == "exclude":
                v = m != self.ignore_index
                valid = None if bool(v.all()) else v.float()
            targets.append({"labels": labels, "masks": masks, "valid": valid})
        return targets

    @torch.no_grad()
    def match_cost(self, class_logits: Tensor, mask_logits: Tensor, target: dict, coords: Tensor) -> Tensor:
        """Q×G matching cost of one image: class·(−p) + mask·BCE + dice·dice on the shared points ``coords``
        P×2."""
        labels = target["labels"]
        pl = point_sample(mask_logits.float(), coords)
        pt, w = sample_targets(target["masks"], target["valid"], coords)
        return (
            self.class_weight * class_cost(class_logits.float(), labels)
            + self.mask_weight * mask_bce_cost(pl, pt, w)
            + self.dice_weight * mask_dice_cost(pl, pt, w)
        )

    @torch.no_grad()
    def match(
        self, pred: dict, targets: list[dict], coords: Tensor | None = None, generator: torch.Generator | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """Hungarian matching per image → [(query indices, target indices)]. Points: ``num_points_loss`` uniform
        points per image (the same for predictions and targets) unless ``coords`` (P×2) is given."""
        indices = []
        for b, tgt in enumerate(targets):
            if tgt["labels"].numel() == 0:
                empty = torch.zeros(0, dtype=torch.long)
                indices.append((empty, empty.clone()))
                continue
            dev = pred["pred_masks"].device
            c = coords if coords is not None else torch.rand(self.num_points_loss, 2, device=dev, generator=generator)
            cost = self.match_cost(pred["pred_logits"][b], pred["pred_masks"][b], tgt, c.to(dev))
            indices.append(hungarian_match(cost))
        return indices

    # ------------------------------------------------------------------ losses
    def loss_single(
        self,
        pred: dict,
        targets: list[dict],
        match_coords: Tensor | None = None,
        loss_coords: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Losses of one prediction (one decoder layer): {loss_cls, loss_mask, loss_dice}, already weighted.

        ``match_coords`` (P×2) / ``loss_coords`` (P×2, the same points for every matched mask) replace the random /
        uncertainty-sampled points (for tests).
        """
        cls_logits, mask_logits = pred["pred_logits"].float(), pred["pred_masks"].float()
        B, Q = cls_logits.shape[:2]
        indices = self.match({"pred_logits": cls_logits, "pred_masks": mask_logits}, targets, match_coords, generator)

        labels = torch.full((B, Q), self.num_classes, dtype=torch.long, device=cls_logits.device)
        for b, (qi, ti) in enumerate(indices):
            labels[b, qi.to(labels.device)] = targets[b]["labels"][ti.to(labels.device)]
        loss_cls = F.cross_entropy(cls_logits.flatten(0, 1), labels.flatten(), weight=self.ce_class_weight)

        num_masks = max(sum(len(qi) for qi, _ in indices), 1)
        bce_terms, dice_terms = [], []
        for b, (qi, ti) in enumerate(indices):
            if len(qi) == 0:
                continue
            tgt = targets[b]
            src = mask_logits[b, qi.to(mask_logits.device)]  # G × h × w
            tmasks = tgt["masks"][ti.to(tgt["masks"].device)]
            if loss_coords is not None:
                coords = loss_coords.to(src.device).unsqueeze(0).expand(len(qi), -1, -1)
            else:
                coords = uncertain_point_coords(
                    src.detach(), self.num_points_loss, self.oversample_ratio, self.importance_sample_ratio,
                    tgt["valid"], generator,
                )
            x = point_sample(src, coords)  # G × P
            t, w = sample_targets(tmasks, tgt["valid"], coords)
            bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
            bce_terms.append((bce * w).sum(-1) / w.sum(-1).clamp_min(1e-6))
            p = x.sigmoid()
            dice = 1.0 - (2.0 * (w * p * t).sum(-1) + 1.0) / ((w * p).sum(-1) + (w * t).sum(-1) + 1.0)
            dice_terms.append(dice)
        if bce_terms:
            loss_mask = torch.cat(bce_terms).sum() / num_masks
            loss_dice = torch.cat(dice_terms).sum() / num_masks
        else:  # nothing to match: keep the graph connected, value 0
            loss_mask = loss_dice = mask_logits.sum() * 0.0
        return {
            "loss_cls": self.class_weight * loss_cls,
            "loss_mask": self.mask_weight * loss_mask,
            "loss_dice": self.dice_weight * loss_dice,
        }

    def loss(
        self,
        out: dict,
        mask: Tensor,
        match_coords: Tensor | None = None,
        loss_coords: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Deep-supervised Mask2Former loss from the semantic mask B×H×W (int64, ``ignore_index`` = ignore).

        Returns a dict: ``loss_cls``, ``loss_mask``, ``loss_dice`` of the last prediction, ``aux{i}.loss_*`` of the
        earlier ones (i = 0 is the prediction before the first decoder layer), and ``loss``, the sum of all terms
        (every prediction weighted equally) — the value to back-propagate.
        """
        targets = self.prepare_targets(mask.to(out["pred_masks"].device))
        terms: dict[str, Tensor] = {}
        for i, pred in enumerate(out.get("aux", [])):
            for k, v in self.loss_single(pred, targets, match_coords, loss_coords, generator).items():
                terms[f"aux{i}.{k}"] = v
        terms.update(self.loss_single(out, targets, match_coords, loss_coords, generator))
        terms["loss"] = sum(terms.values())
        return terms
