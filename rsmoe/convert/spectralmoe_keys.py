"""The authors' SpectralMoE state dict (mmsegmentation naming) → rsmoe's trainable tensors: the DepthMoE adapter
keys (``backbone.depthmoe.*``) and mmdet's Mask2Former head keys (``decode_head.*``). Renames and stacking only;
the metadata is read in :mod:`rsmoe.convert.mmengine_meta`."""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import CheckpointError
from ..io.torch_files import short_list


# Adapter: the authors' DepthMoE module (github.com/daxichen/SpectralMoE-main,
# SpectralMoE/models/backbones/depthmoe.py) holds per-(layer, expert) ParameterLists, so its keys are
# experts_a.{l}.{e} (m×r), experts_b.{l}.{e} (r×d), w_gate.{l}.{j} / w_noise.{l}.{j} (d×E; j = 0 MSI/visual,
# 1 depth), scale (α, 0-dim), mlp_token2feat.* (t2f), mlp_delta_f.* (delta), transform.* / merge.* (query link),
# and two buffers mean=[0.], std=[1.] (the standard normal used for the load estimate; constants, dropped). The
# backbone's state_dict override keeps only keys containing "depthmoe", so the frozen ViT / PromptDA weights are
# not in the file.
ADAPTER_PREFIX = "backbone.depthmoe."
HEAD_PREFIX = "decode_head."
_ADAPTER_SIMPLE = {
    "scale": "alpha",
    "mlp_token2feat.weight": "t2f.weight",
    "mlp_token2feat.bias": "t2f.bias",
    "mlp_delta_f.weight": "delta.weight",
    "mlp_delta_f.bias": "delta.bias",
    "transform.weight": "query_link.transform.weight",
    "transform.bias": "query_link.transform.bias",
    "merge.weight": "query_link.merge.weight",
    "merge.bias": "query_link.merge.bias",
}
_ADAPTER_INDEXED = re.compile(r"^(experts_a|experts_b|w_gate|w_noise)\.(\d+)\.(\d+)$")
_ADAPTER_BUFFERS = {"mean": 0.0, "std": 1.0}

# Head: mmdet 3.x Mask2FormerHead (mmdet/models/dense_heads/mask2former_head.py) with MSDeformAttnPixelDecoder
# (mmdet/models/layers/msdeformattn_pixel_decoder.py: input_convs = ConvModule(conv, gn) from the coarsest input
# down, level_encoding, lateral_convs/output_convs ConvModules, mask_feature), Mask2FormerTransformerEncoder layers
# (deformable_detr_layers.py: self_attn = mmcv MultiScaleDeformableAttention, ffn = mmcv FFN whose Linear layers
# sit at ffn.layers.0.0 and ffn.layers.1, norms.0/1) and Mask2FormerTransformerDecoder (mask2former_layers.py:
# cross_attn → norms.0 → self_attn → norms.1 → ffn → norms.2; attentions wrap nn.MultiheadAttention as .attn;
# post_norm), all in github.com/open-mmlab/mmdetection. mmseg's wrapper and the authors' DepthMoEMask2FormerHead add no
# parameters but delete query_embed (the query link replaces it). The older mmdet 2.x naming (attentions.0/1,
# ffns.0) is accepted too. rsmoe's head keeps mmdet's layouts (offsets M×L×P×2, level order, MLP 0/2/4), so this
# is a rename.
_HEAD_RENAMES: list[tuple[str, str]] = [
    (r"^pixel_decoder\.input_convs\.(\d+)\.conv\.(weight|bias)$", r"pixel_decoder.input_projs.\1.0.\2"),
    (r"^pixel_decoder\.input_convs\.(\d+)\.gn\.(weight|bias)$", r"pixel_decoder.input_projs.\1.1.\2"),
    (r"^pixel_decoder\.level_encoding\.weight$", r"pixel_decoder.level_embed.weight"),
    (r"^pixel_decoder\.encoder\.layers\.(\d+)\.(?:self_attn|attentions\.0)\."
     r"(sampling_offsets|attention_weights|value_proj|output_proj)\.(weight|bias)$",
     r"pixel_decoder.layers.\1.self_attn.\2.\3"),
    (r"^pixel_decoder\.encoder\.layers\.(\d+)\.(?:ffn|ffns\.0)\.layers\.0\.0\.(weight|bias)$",
     r"pixel_decoder.layers.\1.ffn.0.\2"),
    (r"^pixel_decoder\.encoder\.layers\.(\d+)\.(?:ffn|ffns\.0)\.layers\.1\.(weight|bias)$",
     r"pixel_decoder.layers.\1.ffn.2.\2"),
    (r"^pixel_decoder\.encoder\.layers\.(\d+)\.norms\.0\.(weight|bias)$", r"pixel_decoder.layers.\1.norm1.\2"),
    (r"^pixel_decoder\.encoder\.layers\.(\d+)\.norms\.1\.(weight|bias)$", r"pixel_decoder.layers.\1.norm2.\2"),
    (r"^pixel_decoder\.lateral_convs\.0\.conv\.weight$", r"pixel_decoder.lateral_conv.0.weight"),
    (r"^pixel_decoder\.lateral_convs\.0\.gn\.(weight|bias)$", r"pixel_decoder.lateral_conv.1.\1"),
    (r"^pixel_decoder\.output_convs\.0\.conv\.weight$", r"pixel_decoder.output_conv.0.weight"),
    (r"^pixel_decoder\.output_convs\.0\.gn\.(weight|bias)$", r"pixel_decoder.output_conv.1.\1"),
    (r"^pixel_decoder\.mask_feature\.(weight|bias)$", r"pixel_decoder.mask_feature.\1"),
    (r"^transformer_decoder\.layers\.(\d+)\.(?:cross_attn|attentions\.0)\.attn\."
     r"(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)$", r"layers.\1.cross_attn.\2"),
    (r"^transformer_decoder\.layers\.(\d+)\.(?:self_attn|attentions\.1)\.attn\."
     r"(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)$", r"layers.\1.self_attn.\2"),
    (r"^transformer_decoder\.layers\.(\d+)\.(?:ffn|ffns\.0)\.layers\.0\.0\.(weight|bias)$", r"layers.\1.ffn.0.\2"),
    (r"^transformer_decoder\.layers\.(\d+)\.(?:ffn|ffns\.0)\.layers\.1\.(weight|bias)$", r"layers.\1.ffn.2.\2"),
    (r"^transformer_decoder\.layers\.(\d+)\.norms\.0\.(weight|bias)$", r"layers.\1.norm1.\2"),
    (r"^transformer_decoder\.layers\.(\d+)\.norms\.1\.(weight|bias)$", r"layers.\1.norm2.\2"),
    (r"^transformer_decoder\.layers\.(\d+)\.norms\.2\.(weight|bias)$", r"layers.\1.norm3.\2"),
    (r"^transformer_decoder\.post_norm\.(weight|bias)$", r"decoder_norm.\1"),
    (r"^query_feat\.weight$", r"query_feat.weight"),
    (r"^query_embed\.weight$", r"query_pos.weight"),
    (r"^level_embed\.weight$", r"level_embed.weight"),
    (r"^cls_embed\.(weight|bias)$", r"class_embed.\1"),
    (r"^mask_embed\.([024])\.(weight|bias)$", r"mask_embed.\1.\2"),
]
_HEAD_UNSUPPORTED = {
    "decoder_input_projs.": "decoder_input_projs convolutions (enforce_decoder_input_project=True or decoder width "
                            "≠ feat_channels) have no counterpart in rsmoe's head",
    "querys2feat.": "replace_query_feat=True (query content from the query link) is not supported by rsmoe's head",
}


@dataclass
class OfficialImport:
    """The result of mapping an official state dict: rsmoe tensors (``adapter.*`` and ``head.*``), the official
    keys that were deliberately dropped, and notes for the user / the metadata."""

    tensors: dict[str, Tensor]
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _split_adapter_keys(adapter: Mapping[str, Tensor], where: str
                        ) -> tuple[dict[str, dict[tuple[int, int], Tensor]], dict[str, Tensor], list[str]]:
    """Sort the adapter keys: per-(layer, column) ParameterList entries, renamed simple keys, notes on the
    constant buffers. Unknown keys raise."""
    indexed: dict[str, dict[tuple[int, int], Tensor]] = {n: {} for n in ("experts_a", "experts_b", "w_gate",
                                                                          "w_noise")}
    simple: dict[str, Tensor] = {}
    notes: list[str] = []
    unknown: list[str] = []
    for key, value in adapter.items():
        m = _ADAPTER_INDEXED.match(key)
        if m:
            indexed[m[1]][(int(m[2]), int(m[3]))] = value
        elif key in _ADAPTER_SIMPLE:
            simple[_ADAPTER_SIMPLE[key]] = value
        elif key in _ADAPTER_BUFFERS:
            if value.numel() != 1 or float(value.reshape(-1)[0]) != _ADAPTER_BUFFERS[key]:
                notes.append(f"{ADAPTER_PREFIX}{key} is {value.tolist()}, expected [{_ADAPTER_BUFFERS[key]}] "
                             "(the standard normal of the load estimate); rsmoe uses the standard normal")
        else:
            unknown.append(ADAPTER_PREFIX + key)
    if unknown:
        raise CheckpointError(f"{where}: unrecognised adapter keys: {short_list(unknown)}")
    if not indexed["experts_a"]:
        raise CheckpointError(f"{where}: no {ADAPTER_PREFIX}experts_a.* keys: not a SpectralMoE (DepthMoE) "
                              "checkpoint")
    return indexed, simple, notes


def _stack_grid(name: str, entries: dict[tuple[int, int], Tensor], layers: int, cols: int | None, where: str
                ) -> Tensor:
    """One ParameterList family (``experts_a`` …) as a layers × cols × … tensor; ``cols`` None = as many columns
    as the entries have (the router modalities). Gaps, extra entries and unequal shapes raise."""
    what = "expert" if name.startswith("experts") else "modality"
    if not entries:
        raise CheckpointError(f"{where}: missing {ADAPTER_PREFIX}{name}.* keys")
    cols = cols if cols is not None else 1 + max(j for _, j in entries)
    missing = [f"{ADAPTER_PREFIX}{name}.{l}.{j}" for l in range(layers) for j in range(cols) if (l, j) not in entries]
    extra = [f"{ADAPTER_PREFIX}{name}.{l}.{j}" for (l, j) in entries if l >= layers or j >= cols]
    if missing or extra:
        raise CheckpointError(f"{where}: {name} is not a full {layers} layers × {cols} {what}s grid"
                              + (f"; missing {short_list(missing)}" if missing else "")
                              + (f"; extra {short_list(extra)}" if extra else ""))
    ref = entries[(0, 0)]
    for (l, j), t in entries.items():
        if t.shape != ref.shape:
            hint = " (per-expert ranks differ — lora_dims must all be equal for rsmoe)" if what == "expert" else ""
            raise CheckpointError(f"{where}: {ADAPTER_PREFIX}{name}.{l}.{j} has shape {tuple(t.shape)} but "
                                  f"{ADAPTER_PREFIX}{name}.0.0 has {tuple(ref.shape)}{hint}")
    return torch.stack([torch.stack([entries[(l, j)] for j in range(cols)]) for l in range(layers)])


def convert_spectralmoe_official_adapter(adapter: Mapping[str, Tensor], where: str = "checkpoint"
                                         ) -> tuple[dict[str, Tensor], list[str]]:
    """``backbone.depthmoe.*`` (prefix removed) → rsmoe SpectralMoE parameter names. Returns (tensors, notes)."""
    indexed, out, notes = _split_adapter_keys(adapter, where)
    layers = 1 + max(l for l, _ in indexed["experts_a"])
    experts = 1 + max(e for _, e in indexed["experts_a"])
    for name in ("experts_a", "experts_b", "w_gate", "w_noise"):
        stacked = _stack_grid(name, indexed[name], layers, experts if name.startswith("experts") else None, where)
        out[f"experts.{name}" if name.startswith("experts") else name] = stacked
    if "alpha" not in out:
        notes.append("no depthmoe.scale in the checkpoint (zero_mlp_delta_f=True uses a constant scale 1): α set to 1")
        out["alpha"] = torch.tensor(1.0)
    elif out["alpha"].numel() == 1:
        out["alpha"] = out["alpha"].reshape(())
    if out["w_gate"].shape[1] != 2:
        notes.append(f"routers for {out['w_gate'].shape[1]} modalities (the public code has 2: visual, depth)")
    return out, notes


def convert_mmdet_mask2former_head(head: Mapping[str, Tensor], where: str = "checkpoint") -> dict[str, Tensor]:
    """``decode_head.*`` (prefix removed) of mmdet's Mask2FormerHead → rsmoe Mask2FormerHead names."""
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in head.items():
        for prefix, why in _HEAD_UNSUPPORTED.items():
            if key.startswith(prefix):
                raise CheckpointError(f"{where}: {HEAD_PREFIX}{key}: {why}")
        for pattern, repl in _HEAD_RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                if new in out:
                    raise CheckpointError(f"{where}: {HEAD_PREFIX}{key} maps onto {new} twice (mixed mmdet 2.x/3.x "
                                          "names)")
                out[new] = value
                break
        else:
            unknown.append(HEAD_PREFIX + key)
    if unknown:
        raise CheckpointError(f"{where}: unrecognised decode_head keys: {short_list(unknown)}")
    return out


def official_key_for(rsmoe_key: str) -> str:
    """Best-effort official name of an rsmoe key (for error messages)."""
    if rsmoe_key.startswith("adapter."):
        sub = rsmoe_key[len("adapter."):]
        inverse = {v: k for k, v in _ADAPTER_SIMPLE.items()}
        if sub in inverse:
            return ADAPTER_PREFIX + inverse[sub]
        return ADAPTER_PREFIX + sub.replace("experts.", "") + ".*"
    if rsmoe_key.startswith("head."):
        return f"{HEAD_PREFIX}… ({rsmoe_key})"
    return rsmoe_key


def convert_spectralmoe_official_state_dict(state: Mapping[str, Tensor], where: str = "checkpoint"
                                            ) -> OfficialImport:
    """The authors' full mmseg state dict → rsmoe trainable tensors (``adapter.*``, ``head.*``).

    ``head.query_pos.weight`` — absent from the authors' head, which replaces it by the query link — is filled
    with the query link's output, so the head alone reproduces what runs. ``state`` as
    :func:`rsmoe.io.torch_files.extract_state_dict` returns it (wrappers and ``module.`` removed)."""
    adapter = {k[len(ADAPTER_PREFIX):]: v for k, v in state.items() if k.startswith(ADAPTER_PREFIX)}
    head = {k[len(HEAD_PREFIX):]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    ignored = [k for k in state if not k.startswith((ADAPTER_PREFIX, HEAD_PREFIX))]
    stray = [k for k in ignored if not k.startswith(("backbone.", "data_preprocessor."))]
    if stray:
        raise CheckpointError(f"{where}: keys outside backbone.depthmoe.* / decode_head.*: {short_list(stray)}")
    if not head:
        raise CheckpointError(f"{where}: no {HEAD_PREFIX}* keys (the Mask2Former head)")
    adapter_t, notes = convert_spectralmoe_official_adapter(adapter, where)
    head_t = convert_mmdet_mask2former_head(head, where)
    tensors = {f"adapter.{k}": v for k, v in adapter_t.items()}
    tensors.update({f"head.{k}": v for k, v in head_t.items()})
    if ignored:
        notes.append(f"ignored {len(ignored)} frozen-backbone / preprocessor key(s) (rsmoe takes the frozen weights "
                     "from the config)")
    if "head.query_pos.weight" not in tensors:
        tensors["head.query_pos.weight"] = query_link_output(adapter_t)
        notes.append("head.query_pos: not in the authors' head (deleted there; the query link replaces it) — filled "
                     "with the query link's output")
    return OfficialImport(tensors=tensors, ignored=ignored, notes=notes)


@torch.no_grad()
def query_link_output(adapter: Mapping[str, Tensor]) -> Tensor:
    """The query link's output (num_tokens × query width) for converted adapter tensors: what the authors' head
    receives in place of its deleted ``query_embed``."""
    from ..models.adapters.query_link import QueryLink

    w = adapter.get("query_link.transform.weight")
    if w is None or "query_link.merge.weight" not in adapter:
        raise CheckpointError("the checkpoint has no query link (transform.*, merge.*): cannot fill head.query_pos")
    link = QueryLink(int(w.shape[1]), int(w.shape[0]))
    link.load_state_dict({k[len("query_link."):]: v.float() for k, v in adapter.items()
                          if k.startswith("query_link.")}, strict=True)
    tokens = adapter["experts.experts_a"].float() @ adapter["experts.experts_b"].float()
    return link(tokens).contiguous()


__all__ = ["ADAPTER_PREFIX", "HEAD_PREFIX", "OfficialImport", "convert_mmdet_mask2former_head",
           "convert_spectralmoe_official_adapter", "convert_spectralmoe_official_state_dict", "official_key_for",
           "query_link_output"]
