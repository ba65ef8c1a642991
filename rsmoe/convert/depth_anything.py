"""``depth-anything-original`` / ``prompt-depth-anything-original``: Depth Anything (V1/V2) ``.pth`` / Prompt
Depth Anything ``.ckpt`` → a transformers directory (or just the DINOv2 encoder)."""
from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..errors import CheckpointError, ConfigError
from ..io.torch_files import check_keys, read_state_dict, short_list
from ..io.atomic import atomic_directory
from .output import check_output


# ================================================================================================================
# Depth Anything V1/V2, Prompt Depth Anything → transformers directory
# ================================================================================================================
# Original naming (Depth Anything's DINOv2 under ``pretrained.``, the DPT head under ``depth_head.``) → transformers
# 5.x naming. Provenance: transformers' convert_depth_anything_to_hf.py / convert_prompt_depth_anything_to_hf.py
# (github.com/huggingface/transformers, src/transformers/models/{depth_anything,prompt_depth_anything}) for the
# original names; the transformers 5.x target names were read from the installed DepthAnythingForDepthEstimation /
# PromptDepthAnythingForDepthEstimation state dicts (5.x renamed the DINOv2 attention to q_proj/k_proj/v_proj/
# o_proj). Refinenet k (1…4) is fusion layer 4 − k.
_DA_ENCODER_RENAMES: list[tuple[str, str]] = [
    (r"^cls_token$", "embeddings.cls_token"),
    (r"^mask_token$", "embeddings.mask_token"),
    (r"^pos_embed$", "embeddings.position_embeddings"),
    (r"^patch_embed\.proj\.(weight|bias)$", r"embeddings.patch_embeddings.projection.\1"),
    (r"^norm\.(weight|bias)$", r"layernorm.\1"),
    (r"^blocks\.(\d+)\.norm([12])\.(weight|bias)$", r"encoder.layer.\1.norm\2.\3"),
    (r"^blocks\.(\d+)\.ls([12])\.gamma$", r"encoder.layer.\1.layer_scale\2.lambda1"),
    (r"^blocks\.(\d+)\.mlp\.fc([12])\.(weight|bias)$", r"encoder.layer.\1.mlp.fc\2.\3"),
    (r"^blocks\.(\d+)\.attn\.proj\.(weight|bias)$", r"encoder.layer.\1.attention.o_proj.\2"),
]
_DA_QKV = re.compile(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")


def _refine(m: re.Match, tail: str) -> str:
    return f"neck.fusion_stage.layers.{4 - int(m.group(1))}.{tail}"


_DA_HEAD_RENAMES: list[tuple[str, Callable[[re.Match], str]]] = [
    (r"^projects\.(\d+)\.(weight|bias)$", lambda m: f"neck.reassemble_stage.layers.{m[1]}.projection.{m[2]}"),
    (r"^resize_layers\.(\d+)\.(weight|bias)$", lambda m: f"neck.reassemble_stage.layers.{m[1]}.resize.{m[2]}"),
    (r"^scratch\.layer(\d)_rn\.weight$", lambda m: f"neck.convs.{int(m[1]) - 1}.weight"),
    (r"^scratch\.refinenet(\d)\.out_conv\.(weight|bias)$", lambda m: _refine(m, f"projection.{m[2]}")),
    (r"^scratch\.refinenet(\d)\.resConfUnit([12])\.conv([12])\.(weight|bias)$",
     lambda m: _refine(m, f"residual_layer{m[2]}.convolution{m[3]}.{m[4]}")),
    (r"^scratch\.refinenet(\d)\.resConfUnit_depth\.([024])\.(weight|bias)$",
     lambda m: _refine(m, f"prompt_depth_layer.convolution{int(m[2]) // 2 + 1}.{m[3]}")),
    (r"^scratch\.output_conv1\.(weight|bias)$", lambda m: f"head.conv1.{m[1]}"),
    (r"^scratch\.output_conv2\.0\.(weight|bias)$", lambda m: f"head.conv2.{m[1]}"),
    (r"^scratch\.output_conv2\.2\.(weight|bias)$", lambda m: f"head.conv3.{m[1]}"),
]

#: DPT tap blocks (1-based, transformers' out_indices) of the released models, by encoder width.
_DA_V2_TAPS = {384: [3, 6, 9, 12], 768: [3, 6, 9, 12], 1024: [5, 12, 18, 24], 1536: [10, 20, 30, 40]}


def _strip_to(state: Mapping[str, Tensor], anchors: Sequence[str], where: str) -> dict[str, Tensor]:
    """Drop the common wrapper prefix before the first of ``anchors`` (Lightning's ``model.`` and the like)."""
    for key in state:
        for anchor in anchors:
            pos = key.find(anchor)
            if pos >= 0 and (pos == 0 or key[pos - 1] == "."):
                prefix = key[:pos]
                return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    raise CheckpointError(f"{where}: no key contains {' or '.join(repr(a) for a in anchors)}: not a Depth Anything "
                     f"checkpoint (keys: {short_list(list(state))})")


def depth_anything_config_from_state(state: Mapping[str, Tensor], *, prompt: bool = False, variant: str = "v2",
                                      encoder_only: bool = False, depth_type: str | None = None,
                                      max_depth: float | None = None):
    """The transformers config for an original Depth Anything / Prompt DA state dict (wrapper prefix removed):
    DINOv2 encoder from the ``pretrained.*`` shapes, DPT sizes from ``depth_head.*``."""
    from transformers import DepthAnythingConfig, Dinov2Config, PromptDepthAnythingConfig

    if variant not in ("v1", "v2"):
        raise ConfigError(f"variant must be 'v1' or 'v2', got {variant!r}")
    need = ("pretrained.cls_token", "pretrained.pos_embed", "pretrained.patch_embed.proj.weight",
            "pretrained.blocks.0.mlp.fc1.weight")
    if "pretrained.blocks.0.mlp.w12.weight" in state:
        raise CheckpointError("SwiGLU DINOv2 encoders (ViT-g) are not supported by the Depth Anything converter")
    missing = [k for k in need if k not in state]
    if missing:
        raise CheckpointError(f"not a Depth Anything state dict: missing {', '.join(missing)}")
    hidden = int(state["pretrained.cls_token"].shape[-1])
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("pretrained.blocks."))
    patch = int(state["pretrained.patch_embed.proj.weight"].shape[-1])
    grid = math.isqrt(int(state["pretrained.pos_embed"].shape[1]) - 1)
    if grid * grid != int(state["pretrained.pos_embed"].shape[1]) - 1:
        raise CheckpointError(f"pretrained.pos_embed {tuple(state['pretrained.pos_embed'].shape)} is not a square grid")
    inter = int(state["pretrained.blocks.0.mlp.fc1.weight"].shape[0])
    if inter % hidden:
        raise CheckpointError(f"MLP width {inter} is not a multiple of the width {hidden}")
    if variant == "v1" and not prompt:
        taps = list(range(depth - 3, depth + 1))
    else:
        taps = _DA_V2_TAPS.get(hidden, list(range(depth - 3, depth + 1)))
    if not all(1 <= t <= depth for t in taps):  # not a released size: the last four blocks
        taps = list(range(max(1, depth - 3), depth + 1))
    backbone = Dinov2Config(hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=max(1, hidden // 64),
                            mlp_ratio=inter // hidden, image_size=grid * patch, patch_size=patch,
                            layerscale_value=1.0, out_indices=taps, apply_layernorm=True,
                            reshape_hidden_states=False)
    if encoder_only:
        return backbone
    if "depth_head.scratch.layer1_rn.weight" not in state:
        raise CheckpointError("no depth_head.* weights (depth_head.scratch.layer1_rn.weight); use --encoder-only")
    neck = [int(state[f"depth_head.projects.{i}.weight"].shape[0]) for i in range(4)]
    kwargs = dict(backbone_config=backbone, reassemble_hidden_size=hidden, patch_size=patch,
                  fusion_hidden_size=int(state["depth_head.scratch.layer1_rn.weight"].shape[0]),
                  neck_hidden_sizes=neck)
    if prompt:
        kwargs["depth_estimation_type"] = depth_type or "metric"
        kwargs["max_depth"] = max_depth
        return PromptDepthAnythingConfig(**kwargs)
    kwargs["depth_estimation_type"] = depth_type or "relative"
    if max_depth is not None:
        kwargs["max_depth"] = max_depth
    return DepthAnythingConfig(**kwargs)


def convert_depth_anything_state_dict(state: Mapping[str, Tensor], *, encoder_only: bool = False,
                                      sources: dict[str, str] | None = None
                                      ) -> tuple[dict[str, Tensor], list[str]]:
    """Original names (``pretrained.*``, ``depth_head.*``) → transformers names. With ``encoder_only`` the result
    is in ``Dinov2Model`` naming (no ``backbone.`` prefix) and the head is dropped. Returns (tensors, ignored
    keys); ``sources``, if given, is filled with new key → original key. Unknown ``pretrained.*`` /
    ``depth_head.*`` keys raise; keys outside both prefixes are ignored."""
    out: dict[str, Tensor] = {}
    sources = {} if sources is None else sources
    ignored: list[str] = []
    unknown: list[str] = []
    enc_prefix = "" if encoder_only else "backbone."
    for key, value in state.items():
        if key.startswith("pretrained."):
            sub = key[len("pretrained."):]
            m = _DA_QKV.match(sub)
            if m:
                layer, kind = m.groups()
                q, k, v = torch.chunk(value, 3, dim=0)
                base = f"{enc_prefix}encoder.layer.{layer}.attention"
                for name, part in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                    out[f"{base}.{name}.{kind}"] = part.clone()
                    sources[f"{base}.{name}.{kind}"] = key
                continue
            for pattern, repl in _DA_ENCODER_RENAMES:
                new, n = re.subn(pattern, repl, sub)
                if n:
                    out[enc_prefix + new] = value
                    sources[enc_prefix + new] = key
                    break
            else:
                unknown.append(key)
        elif key.startswith("depth_head.") and not encoder_only:
            sub = key[len("depth_head."):]
            for pattern, fn in _DA_HEAD_RENAMES:
                m = re.match(pattern, sub)
                if m:
                    out[fn(m)] = value
                    sources[fn(m)] = key
                    break
            else:
                unknown.append(key)
        else:
            ignored.append(key)
    if unknown:
        raise CheckpointError(f"unrecognised keys in the Depth Anything checkpoint: {short_list(unknown)}")
    return out, ignored


def convert_depth_anything_original(src: str | os.PathLike, out_dir: str | os.PathLike, *, prompt: bool = False,
                                    variant: str = "v2", encoder_only: bool = False, depth_type: str | None = None,
                                    max_depth: float | None = None, force: bool = False) -> Path:
    """Depth Anything ``.pth`` / Prompt Depth Anything ``.ckpt`` → transformers directory (see the module doc)."""
    from transformers import DepthAnythingForDepthEstimation, Dinov2Model, PromptDepthAnythingForDepthEstimation

    from ..seeding import seeded

    src, out = Path(src), Path(out_dir)
    check_output(out, force=force)
    what = "Prompt Depth Anything checkpoint" if prompt else "Depth Anything checkpoint"
    state = _strip_to(read_state_dict(src, what), ("pretrained.", "depth_head."), str(src))
    config = depth_anything_config_from_state(state, prompt=prompt, variant=variant, encoder_only=encoder_only,
                                              depth_type=depth_type, max_depth=max_depth)
    sources: dict[str, str] = {}
    tensors, ignored = convert_depth_anything_state_dict(state, encoder_only=encoder_only, sources=sources)
    if encoder_only:
        model_cls = Dinov2Model
    else:
        model_cls = PromptDepthAnythingForDepthEstimation if prompt else DepthAnythingForDepthEstimation
    with torch.device("meta"):
        skeleton = model_cls(config)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    mt = "embeddings.mask_token" if encoder_only else "backbone.embeddings.mask_token"
    if mt in expected and mt in tensors and tensors[mt].dim() == 3:  # some exports keep it 1×1×D
        tensors[mt] = tensors[mt].reshape(expected[mt])
    check_keys(src, tensors, expected, names=lambda k: f"{sources[k]} (→ {k})" if k in sources else k)
    with seeded(0):
        model = model_cls(config)
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
    if ignored:
        print(f"note: ignored {len(ignored)} key(s) outside pretrained.*/depth_head.*: {short_list(ignored)}",
              file=sys.stderr)
    return out
