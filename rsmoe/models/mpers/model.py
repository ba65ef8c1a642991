"""MPerS: frozen DINOv3 + LDPE detail encoder + DilateFormer adapters + caption guidance (DMTE, LQGA) + decoder.

Forward (image B×C×H×W normalised, wavelengths (C,) or (B, C) in µm, optional captions)::

    DINOv3 (frozen, no grad) ─ taps t1..t4 ─▶ TapPyramidNeck ─▶ D1..D4 (strides p/4, p/2, p, 2p; p = patch size)
    image ─▶ LDPE ─▶ L1..L4 (same strides)
    adapters: DilateAdapter on D_s and/or L_s for s in adapter_stages (default: both branches at stage 4)
    fusion:   F_s = ReLU(BN(Conv1×1(concat(D_s, L_s))))                                  (width = neck width)
    text:     T_mix = DMTE(text, text_mask)                    (text: B×M×P×d_t caption embeddings, M MLLMs)
    guidance: F_s ← LQGA_s(F_s, T_mix) for s in lqga_stages (default [4])
    head:     unet | fpn (semantic FPN) | pixelup (F_1..F_4) → logits at stride p/4 → bilinear to H×W

**[design] decisions** (the paper's main text is not available; each is a constructor argument / config value):

* Taps: [5, 11, 17, 23] of 24 blocks, [2, 5, 8, 11] of 12 (:func:`~rsmoe.models.mpers.neck.mpers_default_taps`);
  the backbone stops after the last tap. It runs under ``torch.no_grad``: nothing before it trains.
* Adapter placement: one DilateFormer block (``adapter_blocks``) on the stage-4 DINOv3 map and one on the LDPE's
  deepest map, before their fusion (``adapter_stages=[4]``, ``adapter_branches=['dino', 'ldpe']``);
  ``adapter_attention``: 'dilate' (single rate ``dilation``, kernel ``kernel_size``), 'mhsa' (Table 2's
  ablation) or 'none'.
* Fusion: concatenation + Conv1×1-BN-ReLU to the neck width; an LDPE map whose size differs from its DINOv3 level
  (odd grids) is resized bilinearly first.
* No text (``text=None``, or every caption of a sample masked): DMTE is skipped / gives T_mix = 0 and LQGA applies
  w = 0 (F′ = F), i.e. the same network unguided — see :mod:`~rsmoe.models.mpers.lqga`.
* Logits are upsampled to the image size (×4 for patch 16) rather than by a fixed ×4.
* ``lqga_stages=[]`` (Table 1's row without a text encoder) builds no DMTE/LQGA at all; text is then ignored.
* The frozen text encoder (:class:`rsmoe.text.encoders.TextEncoder`, needed only to embed statistics captions) is
  a plain attribute, not a submodule: it is never in the state dict or a checkpoint (rebuilt from the config) and
  stays on its own device (its CPU vectors are moved to the image's device).
* Loss: pixel-wise cross-entropy with the ignore index at the image resolution (the head's loss).
* The decoders are ordinary decode heads (:mod:`rsmoe.models.heads`: ``unet``, ``semantic_fpn``, ``pixelup``); the
  ``mpers.decoder`` value ``fpn`` names the semantic FPN.

Captions at evaluation (``eval_captions``, used by :meth:`MPerS.predict`) must never come from ground truth:
'statistics-self' = two passes — pass 1 without statistics captions (with only the image-derived captions the
batch carries, if any), its arg-max label map → :func:`rsmoe.text.fields.statistics_slot` → pass 2 with that text
in the 'statistics' captioner's slot (other slots keep what the batch gives, e.g. MLLM captions of the image from a
store); 'store' = only the batch's text, the 'statistics' slot masked out; 'none' = no text. Training batches carry
ground-truth statistics captions or store captions (:class:`rsmoe.text.fields.CaptionFields`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...text.fields import STATISTICS, CachedTextEncoder, statistics_slot
from ..backbones.base import FrozenBackbone, tokens_to_map
from ..heads import build_head
from ..layers import conv_bn_relu, upsample_to
from ..trainable import TrainablePartsMixin
from .dilateformer import DilateAdapter, load_pretrained_adapters
from .dmte import DMTE
from .ldpe import LDPE
from .lqga import LQGA
from .neck import TapPyramidNeck, mpers_default_taps

FROZEN_PREFIXES = ("backbone.",)
EVAL_CAPTIONS = ("statistics-self", "store", "none")
#: ``mpers.decoder`` value → decode head (:mod:`rsmoe.models.heads`)
DECODER_HEADS = {"unet": "unet", "fpn": "semantic_fpn", "pixelup": "pixelup"}


class MPerS(TrainablePartsMixin, nn.Module):
    """See the module docstring. ``captioners``: the names of the M caption sources, in the order of ``text``'s
    second axis ('statistics' = the label-map captioner)."""

    frozen_prefixes = FROZEN_PREFIXES
    count_children = ("adapters", "lqga")

    def __init__(
        self,
        backbone: FrozenBackbone,
        num_classes: int,
        *,
        taps: Sequence[int] | None = None,
        neck_channels: Sequence[int] = (512, 256),
        ldpe_widths: Sequence[int] = (32, 64, 128, 256),
        adapter_attention: str = "dilate",
        kernel_size: int = 3,
        dilation: int | Sequence[int] = 1,
        adapter_heads: int = 8,
        adapter_blocks: int = 1,
        adapter_stages: Sequence[int] = (4,),
        adapter_branches: Sequence[str] = ("dino", "ldpe"),
        adapter_norm_eps: float = 1e-5,
        adapter_qkv_bias: bool = True,
        text_dim: int = 512,
        captioners: Sequence[str] = (STATISTICS,),
        num_prompts: int = 3,
        linguistic_heads: int = 8,
        gate_hidden: int = 128,
        shared_attention: bool = True,
        lqga_stages: Sequence[int] = (4,),
        decoder: str = "unet",
        decoder_channels: Sequence[int] = (256, 128, 64),
        eval_captions: str = "statistics-self",
        class_names: Sequence[str] | None = None,
        text_encoder: Any = None,
        ignore_index: int = 255,
    ):
        super().__init__()
        check_mpers_options(backbone, taps, adapter_stages, lqga_stages, adapter_branches, eval_captions,
                            captioners)
        self.backbone = backbone
        self.num_classes = num_classes
        self.taps = list(taps) if taps is not None else mpers_default_taps(backbone.num_layers)
        self.captioners = list(captioners)
        self.num_prompts = num_prompts
        self.text_dim = text_dim
        self.eval_captions = eval_captions
        self.class_names = list(class_names) if class_names is not None else [f"class {i}" for i in range(num_classes)]
        self.ignore_index = ignore_index
        self.lqga_stages = sorted(set(lqga_stages))

        self.neck = TapPyramidNeck(backbone.embed_dim, neck_channels)
        width = self.neck.out_channels
        self.ldpe = LDPE(getattr(backbone, "num_bands", 3), ldpe_widths, backbone.patch_size)
        self.adapters = nn.ModuleDict()
        if adapter_attention != "none":
            for s in sorted(set(adapter_stages)):
                for branch in adapter_branches:
                    dim = width if branch == "dino" else self.ldpe.widths[s - 1]
                    self.adapters[f"{branch}{s}"] = DilateAdapter(
                        dim, depth=adapter_blocks, num_heads=adapter_heads, kernel_size=kernel_size,
                        dilation=dilation, attention=adapter_attention, norm_eps=adapter_norm_eps,
                        qkv_bias=adapter_qkv_bias)
        self.fuse = nn.ModuleList(conv_bn_relu(width + w, width, kernel=1) for w in self.ldpe.widths)
        # no guided stage (Table 1's row without a text encoder): no text path at all
        self.dmte = (DMTE(text_dim, len(self.captioners), num_heads=linguistic_heads, gate_hidden=gate_hidden,
                          shared_attention=shared_attention) if self.lqga_stages else None)
        self.lqga = nn.ModuleDict({str(s): LQGA(text_dim, width) for s in self.lqga_stages})
        self.head = build_head(DECODER_HEADS.get(decoder, decoder), [width] * 4, num_classes,
                               channels=list(decoder_channels), ignore_index=ignore_index)
        # frozen, referenced by config and never saved: a plain attribute, not a submodule
        self.text_encoder = (text_encoder if text_encoder is None or isinstance(text_encoder, CachedTextEncoder)
                             else CachedTextEncoder(text_encoder))

    @property
    def input_multiple(self) -> int:
        return int(self.backbone.patch_size)

    # ---------------------------------------------------------------------------------------------------- forward
    def visual_features(self, image: Tensor, wavelengths: Tensor) -> list[Tensor]:
        """The four fused maps F_1..F_4 before guidance."""
        with torch.no_grad():
            taps, ctx = self.backbone.patch_tokens(image, wavelengths, self.taps)
        dino = self.neck([tokens_to_map(t, ctx.grid).to(image.dtype) for t in taps])
        detail = self.ldpe(image)
        for key, adapter in self.adapters.items():
            branch, s = key[:-1], int(key[-1]) - 1
            if branch == "dino":
                dino[s] = adapter(dino[s])
            else:
                detail[s] = adapter(detail[s])
        return [fuse(torch.cat([d, upsample_to(l, d)], dim=1)) for fuse, d, l in zip(self.fuse, dino, detail)]

    def forward(self, image: Tensor, wavelengths: Tensor, text: Tensor | None = None,
                text_mask: Tensor | None = None) -> Tensor:
        """Class scores B×K×H×W at the input resolution. ``text``: B×M×P×d_t caption embeddings (M =
        ``len(captioners)``), ``text_mask``: B×M or B×M×P bool (None = all present); no text = no guidance."""
        return self.head.predict(self.head_output(image, wavelengths, text, text_mask), image.shape[-2:])

    def head_output(self, image: Tensor, wavelengths: Tensor, text: Tensor | None,
                    text_mask: Tensor | None) -> Tensor:
        """The head's logits (stride p/4) after guidance by ``text``."""
        feats = self.visual_features(image, wavelengths)
        mixed = present = None
        if text is not None and self.dmte is not None:
            out = self.dmte(text.to(device=image.device, dtype=feats[0].dtype), text_mask)
            mixed, present = out.text, out.present
        for s in self.lqga_stages:
            feats[s - 1] = self.lqga[str(s)](feats[s - 1], mixed, present)
        return self.head(feats)

    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Pixel-wise cross-entropy (ignore index) of the batch, guided by its ``text`` fields (training captions:
        :class:`rsmoe.text.fields.CaptionFields`). ``loss_task`` is the same value, detached, for logging."""
        out = self.head_output(batch["image"], batch["wavelengths"], batch.get("text"), batch.get("text_mask"))
        terms = self.head.loss(out, batch["mask"])
        terms = {"loss": terms["loss"], **{k: v.detach() for k, v in terms.items() if k != "loss"}}
        terms["loss_task"] = terms["loss"].detach()
        return terms

    # ------------------------------------------------------------------------------------------------- captions
    def statistics_index(self) -> int | None:
        """The slot of the ``statistics`` captioner, or None."""
        return self.captioners.index(STATISTICS) if STATISTICS in self.captioners else None

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any]) -> Tensor:
        """Scores B×K×H×W for evaluation and inference, with captions per ``eval_captions`` (module docstring):
        never from ground truth. ``batch["text"]``/``["text_mask"]``: captions of the image from elsewhere (an
        MLLM store); a ``statistics`` caption in them is ignored (it could come from labels)."""
        image, wavelengths = batch["image"], batch["wavelengths"]
        text, text_mask = batch.get("text"), batch.get("text_mask")
        slot = self.statistics_index()
        if text is not None and slot is not None:
            text_mask = present_mask(text, text_mask).clone()
            text_mask[:, slot] = False
        if self.eval_captions == "none" or self.dmte is None:
            return self(image, wavelengths)
        if self.eval_captions == "statistics-self" and slot is not None:
            if self.text_encoder is None:
                raise ConfigError("eval_captions 'statistics-self' needs a text encoder (mpers.text_encoder)")
            first = self(image, wavelengths, text, text_mask)
            text, text_mask = self.with_statistics(first.argmax(1), text, text_mask)
        return self(image, wavelengths, text, text_mask)

    def with_statistics(self, labels: Tensor, text: Tensor | None, text_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """``text``/``text_mask`` (zeros/absent if None) with the statistics slot filled from B×H×W ``labels``."""
        b, m, p, d = labels.shape[0], len(self.captioners), self.num_prompts, self.text_dim
        device = labels.device
        text = torch.zeros(b, m, p, d, device=device) if text is None else text.to(device).clone()
        mask = (torch.zeros(b, m, p, dtype=torch.bool, device=device) if text_mask is None
                else present_mask(text, text_mask).to(device).clone())
        slot = self.statistics_index()
        emb = statistics_slot(labels, self.class_names, self.ignore_index, self.text_encoder, p)
        if emb.shape[-1] != d:
            raise ConfigError(f"text encoder {self.text_encoder.name} gives vectors of dim {emb.shape[-1]}, the "
                              f"model expects d_t = {d}")
        text[:, slot] = emb.to(device=device, dtype=text.dtype)
        mask[:, slot] = True
        return text, mask

    # ----------------------------------------------------------------------------------------------- parameters
    def train(self, mode: bool = True) -> "MPerS":
        super().train(mode)
        self.backbone.train(False)
        return self

    def no_weight_decay_names(self) -> set[str]:
        """Norm parameters (LayerNorm, BatchNorm, GroupNorm) and the DMTE expert weights W_m."""
        return self.norm_parameter_names() | ({"dmte.expert_weight"} if self.dmte is not None else set())


def present_mask(text: Tensor, text_mask: Tensor | None) -> Tensor:
    """A B×M×P bool presence mask for B×M×P×d ``text`` from a B×M or B×M×P mask (None = all present)."""
    if text_mask is None:
        return torch.ones(text.shape[:3], dtype=torch.bool, device=text.device)
    return text_mask.to(text.device, torch.bool).reshape(*text.shape[:2], -1).expand(text.shape[:3])


def check_mpers_options(backbone: FrozenBackbone, taps: Sequence[int] | None, adapter_stages: Sequence[int],
                        lqga_stages: Sequence[int], adapter_branches: Sequence[str], eval_captions: str,
                        captioners: Sequence[str]) -> None:
    """One-line :class:`ConfigError` for MPerS options that cannot be built."""
    taps = list(taps) if taps is not None else mpers_default_taps(backbone.num_layers)
    if len(taps) != 4 or any(t < 0 or t >= backbone.num_layers for t in taps):
        raise ConfigError(f"MPerS needs 4 taps within the backbone's {backbone.num_layers} blocks, got {taps}")
    for name, stages in (("adapter_stages", adapter_stages), ("lqga_stages", lqga_stages)):
        if any(s not in (1, 2, 3, 4) for s in stages):
            raise ConfigError(f"mpers.{name}: stages are 1..4, got {list(stages)}")
    if any(b not in ("dino", "ldpe") for b in adapter_branches):
        raise ConfigError(f"mpers.adapter_branches: 'dino' and/or 'ldpe', got {list(adapter_branches)}")
    if eval_captions not in EVAL_CAPTIONS:
        raise ConfigError(f"mpers.eval_captions: got {eval_captions!r}, expected one of {list(EVAL_CAPTIONS)}")
    if lqga_stages and not captioners:
        raise ConfigError("mpers.lqga_stages need at least one captioner (text source) in mpers.captioners")


def build_mpers(cfg: Any, num_classes: int, wavelengths: Sequence[float], class_names: Sequence[str] | None = None,
                text_encoder: Any = None, load_text_encoder: bool = True, ignore_index: int = 255,
                load_adapter_pretrained: bool = True) -> MPerS:
    """The MPerS of a :class:`rsmoe.config.Config` (``model: mpers``) for images with the given band wavelengths.

    The frozen text encoder is the config's shared one (:func:`rsmoe.text.encoders.text_encoder_for`, the same
    object the data pipeline embeds training captions with) unless ``load_text_encoder=False`` (then
    ``mpers.text_dim`` must be set; used to count parameters or build on the meta device) or ``text_encoder``
    passes a ready one. The adapter blocks named in ``mpers.adapter_pretrained`` start from those files unless
    ``load_adapter_pretrained=False`` (a model rebuilt to receive a checkpoint's trained tensors does not need them)
    or the model is on the meta device.
    """
    from ...text.encoders import text_encoder_for
    from ..backbones import build_backbone

    m = cfg.mpers
    guided = bool(m.lqga_stages)
    if text_encoder is None and load_text_encoder and guided:
        text_encoder = text_encoder_for(m)
    text_dim = m.text_dim
    if text_encoder is not None:
        if text_dim is not None and text_dim != text_encoder.dim:
            raise ConfigError(f"mpers.text_dim {text_dim} does not match the text encoder {text_encoder.name} "
                              f"(dim {text_encoder.dim})")
        text_dim = text_encoder.dim
    if text_dim is None and guided:
        raise ConfigError("mpers.text_dim must be set when the text encoder is not loaded")
    b = cfg.backbone
    backbone = build_backbone(b.kind, pretrained=b.pretrained, config=b.config, num_bands=len(wavelengths),
                              band_init=b.band_channels or b.band_init, wavelengths=list(wavelengths), seed=b.seed)
    model = MPerS(
        backbone, num_classes, taps=b.taps, neck_channels=m.neck_channels, ldpe_widths=m.ldpe_widths,
        adapter_attention=m.adapter_attention, kernel_size=m.kernel_size,
        dilation=tuple(m.adapter_dilations) or m.dilation, adapter_norm_eps=m.adapter_norm_eps,
        adapter_qkv_bias=m.adapter_qkv_bias,
        adapter_heads=m.adapter_heads, adapter_blocks=m.adapter_blocks, adapter_stages=m.adapter_stages,
        adapter_branches=m.adapter_branches, text_dim=text_dim or 0, captioners=m.captioners, num_prompts=m.num_prompts,
        linguistic_heads=m.linguistic_heads, gate_hidden=m.gate_hidden, shared_attention=m.shared_attention,
        lqga_stages=m.lqga_stages, decoder=m.decoder, decoder_channels=m.decoder_channels,
        eval_captions=m.eval_captions, class_names=class_names, text_encoder=text_encoder,
        ignore_index=ignore_index,
    )
    on_meta = any(p.is_meta for p in model.adapters.parameters())
    if m.adapter_pretrained and load_adapter_pretrained and not on_meta:  # `rsmoe convert dilateformer` files
        load_pretrained_adapters(model.adapters, m.adapter_pretrained)
    return model


__all__ = ["DECODER_HEADS", "EVAL_CAPTIONS", "FROZEN_PREFIXES", "MPerS", "build_mpers", "present_mask"]
