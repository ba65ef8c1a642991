"""MPerS: frozen DINOv3 + LDPE detail encoder + DilateFormer adapters + caption guidance (DMTE, LQGA) + decoder.

Forward (image B×C×H×W normalised, wavelengths (C,) or (B, C) in µm, optional captions)::

    DINOv3 (frozen, no grad) ─ taps t1..t4 ─▶ TapPyramidNeck ─▶ D1..D4 (strides p/4, p/2, p, 2p; p = patch size)
    image ─▶ LDPE ─▶ L1..L4 (same strides)
    adapters: DilateAdapter on D_s and/or L_s for s in adapter_stages (default: both branches at stage 4)
    fusion:   F_s = ReLU(BN(Conv1×1(concat(D_s, L_s))))                                  (width = neck width)
    text:     T_mix = DMTE(text, text_mask)                    (text: B×M×P×d_t caption embeddings, M MLLMs)
    guidance: F_s ← LQGA_s(F_s, T_mix) for s in lqga_stages (default [4])
    decoder:  unet | fpn | pixelup (F_1..F_4) → logits at stride p/4 → bilinear to H×W

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
* Loss: pixel-wise cross-entropy with the ignore index at the image resolution; ``loss_moe`` is a constant 0 so
  the engine's logging works unchanged.

Captions at evaluation (``eval_captions``, used by :meth:`MPerS.predict`) must never come from ground truth:
'statistics-self' = two passes — pass 1 without statistics captions (with only the image-derived captions the
caller gives, if any), its arg-max label map → ``statistics_captions`` → the frozen
text encoder → pass 2 with that text in the 'statistics' captioner's slot (other slots keep what the caller gives,
e.g. MLLM captions of the image from a store); 'store' = only the given text, the 'statistics' slot masked out;
'none' = no text. Training uses ground-truth statistics captions (:meth:`MPerS.statistics_text` on the mask) or a
caption store.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones.base import FrozenBackbone, tokens_to_map
from .decoders import build_decoder
from .dilateformer import DilateAdapter, load_pretrained_adapters
from .dmte import DMTE
from .ldpe import LDPE, conv_bn_relu
from .lqga import LQGA
from ..trainable import TrainablePartsMixin
from .neck import TapPyramidNeck, mpers_default_taps

FROZEN_PREFIXES = ("backbone.", "text_encoder.")
EVAL_CAPTIONS = ("statistics-self", "store", "none")
STATISTICS = "statistics"
TEXT_CACHE_SIZE = 16384


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
        self.backbone = backbone
        self.num_classes = num_classes
        self.taps = list(taps) if taps is not None else mpers_default_taps(backbone.num_layers)
        if len(self.taps) != 4 or any(t < 0 or t >= backbone.num_layers for t in self.taps):
            raise ValueError(f"MPerS needs 4 taps within the backbone's {backbone.num_layers} blocks, got {self.taps}")
        for name, stages in (("adapter_stages", adapter_stages), ("lqga_stages", lqga_stages)):
            if any(s not in (1, 2, 3, 4) for s in stages):
                raise ValueError(f"MPerS {name}: stages are 1..4, got {list(stages)}")
        if any(b not in ("dino", "ldpe") for b in adapter_branches):
            raise ValueError(f"MPerS adapter_branches: 'dino' and/or 'ldpe', got {list(adapter_branches)}")
        if eval_captions not in EVAL_CAPTIONS:
            raise ValueError(f"MPerS eval_captions: got {eval_captions!r}, expected one of {list(EVAL_CAPTIONS)}")
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
        if self.lqga_stages and not self.captioners:
            raise ValueError("MPerS: LQGA stages need at least one captioner (text source)")
        # no guided stage (Table 1's row without a text encoder): no text path at all
        self.dmte = (DMTE(text_dim, len(self.captioners), num_heads=linguistic_heads, gate_hidden=gate_hidden,
                          shared_attention=shared_attention) if self.lqga_stages else None)
        self.lqga = nn.ModuleDict({str(s): LQGA(text_dim, width) for s in self.lqga_stages})
        self.decoder = build_decoder(decoder, [width] * 4, num_classes, decoder_channels)
        self.text_encoder = text_encoder
        # caption → vector of the frozen, deterministic encoder (statistics captions repeat: same tile, same text)
        self._text_cache: OrderedDict[tuple[str, str], Tensor] = OrderedDict()
        if isinstance(text_encoder, nn.Module):
            text_encoder.requires_grad_(False)
            text_encoder.eval()

    # ---------------------------------------------------------------------------------------------------- forward
    def visual_features(self, image: Tensor, wavelengths: Tensor) -> list[Tensor]:
        """The four fused maps F_1..F_4 before guidance."""
        with torch.no_grad():
            tokens, ctx = self.backbone.embed(image, wavelengths)
            maps = []
            for i in range(max(self.taps) + 1):
                tokens = self.backbone.block(i, tokens, ctx)
                if i in self.taps:
                    maps.append(tokens_to_map(self.backbone.split_prefix(tokens)[1], ctx.grid))
        dino = self.neck([m.to(image.dtype) for m in maps])
        detail = self.ldpe(image)
        for key, adapter in self.adapters.items():
            branch, s = key[:-1], int(key[-1]) - 1
            if branch == "dino":
                dino[s] = adapter(dino[s])
            else:
                detail[s] = adapter(detail[s])
        fused = []
        for fuse, d, l in zip(self.fuse, dino, detail):
            if l.shape[-2:] != d.shape[-2:]:
                l = F.interpolate(l, size=d.shape[-2:], mode="bilinear", align_corners=False)
            fused.append(fuse(torch.cat([d, l], dim=1)))
        return fused

    def forward(self, image: Tensor, wavelengths: Tensor, text: Tensor | None = None,
                text_mask: Tensor | None = None) -> Tensor:
        """Class scores B×K×H×W at the input resolution. ``text``: B×M×P×d_t caption embeddings (M =
        ``len(captioners)``), ``text_mask``: B×M or B×M×P bool (None = all present); no text = no guidance."""
        feats = self.visual_features(image, wavelengths)
        mixed = present = None
        if text is not None and self.dmte is not None:
            text = text.to(device=image.device, dtype=feats[0].dtype)
            out = self.dmte(text, text_mask)
            mixed, present = out.text, out.present
        for s in self.lqga_stages:
            feats[s - 1] = self.lqga[str(s)](feats[s - 1], mixed, present)
        logits = self.decoder(feats)
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)

    def loss(self, image: Tensor, wavelengths: Tensor, mask: Tensor, text: Tensor | None = None,
             text_mask: Tensor | None = None, moe_weight: float = 1.0) -> dict[str, Tensor]:  # noqa: ARG002
        """Pixel-wise cross-entropy (ignore index). ``loss_moe`` is 0 (MPerS has no router; kept for the engine)."""
        logits = self(image, wavelengths, text, text_mask)
        if (mask != self.ignore_index).any():
            ce = F.cross_entropy(logits, mask, ignore_index=self.ignore_index)
        else:
            ce = logits.sum() * 0.0
        zero = ce.new_zeros(())
        return {"loss": ce, "loss_ce": ce.detach(), "loss_moe": zero}

    # ------------------------------------------------------------------------------------------------- captions
    def _statistics_slot(self) -> int | None:
        return self.captioners.index(STATISTICS) if STATISTICS in self.captioners else None

    @torch.no_grad()
    def statistics_text(self, labels: Tensor, text: Tensor | None = None, text_mask: Tensor | None = None,
                        captioner: Callable[..., list[str]] | None = None) -> tuple[Tensor, Tensor]:
        """Statistics captions of B×H×W label maps, embedded by the frozen text encoder, put into the 'statistics'
        slot of ``text`` (B×M×P×d_t, zeros if None; other slots and their mask entries are kept).

        Training passes the ground-truth mask; :meth:`predict` passes the model's own first-pass prediction.
        Returns (text, text_mask B×M×P).
        """
        slot = self._statistics_slot()
        if slot is None:
            raise ValueError(f"statistics captions need a 'statistics' entry in captioners {self.captioners}")
        if self.text_encoder is None:
            raise ValueError("statistics captions need a text encoder (MPerS(text_encoder=...))")
        if captioner is None:
            from ...text.statistics import statistics_captions as captioner
        b = labels.shape[0]
        m, p, d = len(self.captioners), self.num_prompts, self.text_dim
        device = labels.device
        text = torch.zeros(b, m, p, d, device=device) if text is None else text.to(device).clone()
        mask = torch.zeros(b, m, p, dtype=torch.bool, device=device)
        if text_mask is not None:
            mask = mask | text_mask.to(device=device, dtype=torch.bool).reshape(b, m, -1).expand(b, m, p)
        labels_np = labels.detach().cpu().numpy()
        sentences: list[str] = []
        for i in range(b):
            captions = list(captioner(labels_np[i], self.class_names, self.ignore_index))
            if len(captions) != p:
                raise ValueError(f"the statistics captioner gave {len(captions)} captions, the model expects {p}")
            sentences += captions
        emb = self.encode_text(sentences).to(device=device, dtype=text.dtype)
        if emb.shape != (b * p, d):
            raise ValueError(f"text encoder output {tuple(emb.shape)}, expected {(b * p, d)} "
                             f"(d_t of the model = {d})")
        text[:, slot] = emb.reshape(b, p, d)
        mask[:, slot] = True
        return text, mask

    @torch.no_grad()
    def encode_text(self, sentences: Sequence[str]) -> Tensor:
        """The frozen text encoder's vectors (n×d_t, CPU) of ``sentences``, through an LRU cache of
        :data:`TEXT_CACHE_SIZE` captions (the encoder is frozen and deterministic, so a cached vector is exact)."""
        name = str(getattr(self.text_encoder, "name", ""))
        missing = [t for t in dict.fromkeys(sentences) if (name, t) not in self._text_cache]
        if missing:
            for t, vec in zip(missing, torch.as_tensor(self.text_encoder.encode(missing)).float().cpu()):
                self._text_cache[(name, t)] = vec
        out = []
        for t in sentences:
            self._text_cache.move_to_end((name, t))
            out.append(self._text_cache[(name, t)])
        while len(self._text_cache) > TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return torch.stack(out)

    @torch.no_grad()
    def predict(self, image: Tensor, wavelengths: Tensor, text: Tensor | None = None,
                text_mask: Tensor | None = None) -> Tensor:
        """Scores B×K×H×W for evaluation and inference, with captions per ``eval_captions`` (module docstring):
        never from ground truth. ``text``/``text_mask``: captions of the image from elsewhere (an MLLM store)."""
        slot = self._statistics_slot()
        if text is not None and slot is not None:  # a 'statistics' caption handed in could come from labels
            text_mask = (torch.ones(text.shape[:3], dtype=torch.bool, device=text.device) if text_mask is None
                         else text_mask.to(text.device, torch.bool).reshape(*text.shape[:2], -1).expand(text.shape[:3]))
            text_mask = text_mask.clone()
            text_mask[:, slot] = False
        if self.eval_captions == "none" or self.dmte is None:
            return self(image, wavelengths)
        if self.eval_captions == "statistics-self" and slot is not None:
            if self.text_encoder is None:
                raise ValueError("eval_captions 'statistics-self' needs a text encoder (MPerS(text_encoder=...))")
            first = self(image, wavelengths, text, text_mask)
            text, text_mask = self.statistics_text(first.argmax(1), text, text_mask)
        return self(image, wavelengths, text, text_mask)

    # ----------------------------------------------------------------------------------------------- parameters
    def train(self, mode: bool = True) -> "MPerS":
        super().train(mode)
        self.backbone.train(False)
        if isinstance(self.text_encoder, nn.Module):
            self.text_encoder.train(False)
        return self

    def no_weight_decay_names(self) -> set[str]:
        """Norm parameters (LayerNorm, BatchNorm, GroupNorm) and the DMTE expert weights W_m."""
        names = {"dmte.expert_weight"} if self.dmte is not None else set()
        norm_types = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.BatchNorm1d, nn.SyncBatchNorm)
        for mod_name, module in self.named_modules():
            if mod_name.startswith(FROZEN_PREFIXES) or mod_name in ("backbone", "text_encoder"):
                continue
            if isinstance(module, norm_types):
                names |= {f"{mod_name}.{n}" for n, _ in module.named_parameters(recurse=False)}
        return names




def build_text_encoder(m: Any) -> Any:
    """The frozen text encoder of an ``mpers`` config section: ``tiny`` or a local folder."""
    from ...text.encoders import TextEncoder

    if m.text_encoder == "tiny":
        encoder = TextEncoder.tiny(seed=m.text_encoder_seed, dim=m.text_dim or 32)
    else:
        encoder = TextEncoder.from_pretrained(m.text_encoder)
    if m.text_encoder_name:
        encoder._name = str(m.text_encoder_name)
    return encoder


def build_mpers(cfg: Any, num_classes: int, wavelengths: Sequence[float], class_names: Sequence[str] | None = None,
                text_encoder: Any = None, load_text_encoder: bool = True, ignore_index: int = 255,
                load_adapter_pretrained: bool = True) -> MPerS:
    """The MPerS of a :class:`rsmoe.config.Config` (``model: mpers``) for images with the given band wavelengths.

    The text encoder is loaded unless ``load_text_encoder=False`` (then ``mpers.text_dim`` must be set; used to
    count parameters or build on the meta device); ``text_encoder`` passes a ready one. The adapter blocks named
    in ``mpers.adapter_pretrained`` start from those files unless ``load_adapter_pretrained=False`` (a model
    rebuilt to receive a checkpoint's trained tensors does not need them) or the model is on the meta device.
    """
    from ..backbones import build_backbone

    m = cfg.mpers
    if m.eval_captions not in EVAL_CAPTIONS:
        raise ValueError(f"mpers.eval_captions: got {m.eval_captions!r}, expected one of {list(EVAL_CAPTIONS)}")
    if m.train_statistics not in ("live", "store"):
        raise ValueError(f"mpers.train_statistics: got {m.train_statistics!r}, expected 'live' or 'store'")
    guided = bool(m.lqga_stages)
    if guided and m.eval_captions == "store" and not [c for c in m.captioners if c != STATISTICS]:
        raise ValueError("mpers.eval_captions 'store' uses MLLM captions only (never label-derived ones) but "
                         f"captioners {m.captioners} name none; use eval_captions: statistics-self")
    if text_encoder is None and load_text_encoder and guided:
        text_encoder = build_text_encoder(m)
    text_dim = m.text_dim
    if text_encoder is not None:
        if text_dim is not None and text_dim != text_encoder.dim:
            raise ValueError(f"mpers.text_dim {text_dim} does not match the text encoder {text_encoder.name} "
                             f"(dim {text_encoder.dim})")
        text_dim = text_encoder.dim
    if text_dim is None and guided:
        raise ValueError("mpers.text_dim must be set when the text encoder is not loaded")
    b = cfg.backbone
    backbone = build_backbone(b.kind, pretrained=b.pretrained, config=b.config, num_bands=len(wavelengths),
                              band_init=b.band_init, wavelengths=list(wavelengths), seed=b.seed)
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


__all__ = ["EVAL_CAPTIONS", "FROZEN_PREFIXES", "MPerS", "STATISTICS", "build_mpers", "build_text_encoder"]
