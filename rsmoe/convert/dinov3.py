"""``dinov3-original``: Meta's original DINOv3 ``.pth`` → a transformers ``DINOv3ViTModel`` directory."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .loading import _check_keys, _prepare_output, _tensor_dict, load_torch_file


# ================================================================================================================
# DINOv3 original → transformers directory
# ================================================================================================================
def dinov3_config_from_state(state: Mapping[str, Tensor], arch: str | Mapping[str, Any] | None = None):
    """``DINOv3ViTConfig`` for an original DINOv3 state dict, from its shapes; ``arch`` (a preset name or a dict
    of config fields) overrides what the shapes cannot tell (heads) or anything else."""
    from ..models.backbones.dinov3 import DINOV3_PRESETS, DINOv3Backbone

    need = ("cls_token", "patch_embed.proj.weight")
    missing = [k for k in need if k not in state]
    if missing:
        raise ValueError(f"not an original DINOv3 state dict (no {', '.join(missing)})")
    hidden = int(state["cls_token"].shape[-1])
    patch = state["patch_embed.proj.weight"]
    depth = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1)
    gated = "blocks.0.mlp.w1.weight" in state
    inter_key = "blocks.0.mlp.w1.weight" if gated else "blocks.0.mlp.fc1.weight"
    if inter_key not in state:
        raise ValueError(f"original DINOv3 state dict has no {inter_key}")
    fields: dict[str, Any] = dict(
        hidden_size=hidden,
        num_hidden_layers=depth,
        intermediate_size=int(state[inter_key].shape[0]),
        patch_size=int(patch.shape[-1]),
        num_channels=int(patch.shape[1]),
        num_register_tokens=int(state["storage_tokens"].shape[1]) if "storage_tokens" in state else 0,
        use_gated_mlp=gated,
        hidden_act="silu" if gated else "gelu",
        num_attention_heads=max(1, hidden // 64),
    )
    for preset in DINOV3_PRESETS.values():
        if all(preset.get(k) == fields[k] for k in ("hidden_size", "num_hidden_layers", "intermediate_size")):
            fields["num_attention_heads"] = preset["num_attention_heads"]
    if isinstance(arch, str):
        arch = arch.strip()
        if arch.startswith("{"):
            arch = json.loads(arch)
        elif arch not in DINOV3_PRESETS:
            raise ValueError(f"unknown DINOv3 preset {arch!r}; known: {sorted(DINOV3_PRESETS)} or a JSON dict")
        else:
            arch = DINOV3_PRESETS[arch]
    if arch:
        fields.update(arch)
    return DINOv3Backbone.make_config(fields)


def convert_dinov3_original(src: str | os.PathLike, out_dir: str | os.PathLike, *,
                            arch: str | Mapping[str, Any] | None = None, force: bool = False) -> Path:
    """Original DINOv3 ``.pth`` → ``DINOv3ViTModel`` directory (``config.json`` + safetensors)."""
    from transformers import DINOv3ViTModel

    from ..models.backbones.dinov3 import convert_dinov3_original_state_dict
    from ..seeding import seeded

    src, out = Path(src), Path(out_dir)
    raw = load_torch_file(src, "DINOv3 checkpoint")
    if isinstance(raw, Mapping) and isinstance(raw.get("teacher"), Mapping):  # a DINOv3 training checkpoint
        raw = {k[len("backbone."):]: v for k, v in raw["teacher"].items() if k.startswith("backbone.")}
    state = _tensor_dict(raw, src, keys=("model", "state_dict"))
    config = dinov3_config_from_state(state, arch)
    try:
        converted = convert_dinov3_original_state_dict(state)
    except KeyError as exc:
        raise ValueError(f"{src}: {exc.args[0] if exc.args else exc}") from None
    with torch.device("meta"):
        model = DINOv3ViTModel(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _check_keys(str(src), converted, expected)
    with seeded(0):
        model = DINOv3ViTModel(config)
    model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True)
    _prepare_output(out, directory=True, force=force)
    model.save_pretrained(out)
    return out
