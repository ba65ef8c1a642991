"""``dinov3-original``: Meta's original DINOv3 ``.pth`` → a transformers ``DINOv3ViTModel`` directory."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError, ConfigError
from ..io.torch_files import check_keys
from ..io.atomic import atomic_directory
from .output import check_output


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
        raise CheckpointError(f"not an original DINOv3 state dict (no {', '.join(missing)})")
    hidden = int(state["cls_token"].shape[-1])
    patch = state["patch_embed.proj.weight"]
    depth = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1)
    gated = "blocks.0.mlp.w1.weight" in state
    inter_key = "blocks.0.mlp.w1.weight" if gated else "blocks.0.mlp.fc1.weight"
    if inter_key not in state:
        raise CheckpointError(f"original DINOv3 state dict has no {inter_key}")
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
            try:
                arch = json.loads(arch)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--arch is not valid JSON ({exc.msg} at column {exc.colno}): {arch}") from None
        elif arch not in DINOV3_PRESETS:
            raise ConfigError(f"unknown DINOv3 preset {arch!r}; known: {sorted(DINOV3_PRESETS)} or a JSON dict")
        else:
            arch = DINOV3_PRESETS[arch]
    if arch:
        fields.update(arch)
    return DINOv3Backbone.make_config(fields)


def convert_dinov3_original(src: str | os.PathLike, out_dir: str | os.PathLike, *,
                            arch: str | Mapping[str, Any] | None = None, force: bool = False) -> Path:
    """Original DINOv3 ``.pth`` (release file or training checkpoint, read as ``backbone.pretrained`` reads it)
    → ``DINOv3ViTModel`` directory (``config.json`` + safetensors), written atomically."""
    from transformers import DINOv3ViTModel

    from ..models.backbones.dinov3 import convert_dinov3_original_state_dict, read_dinov3_original
    from ..seeding import seeded

    src, out = Path(src), Path(out_dir)
    check_output(out, force=force)
    state = read_dinov3_original(src)
    config = dinov3_config_from_state(state, arch)
    try:
        converted = convert_dinov3_original_state_dict(state)
    except KeyError as exc:
        raise CheckpointError(f"{src}: {exc.args[0] if exc.args else exc}") from None
    with torch.device("meta"):
        model = DINOv3ViTModel(config)
    check_keys(src, converted, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    with seeded(0):
        model = DINOv3ViTModel(config)
    model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True)
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
    return out
