"""``dilateformer``: the blocks of one stage of a DilateFormer checkpoint → a ``.safetensors`` that starts MPerS
adapter blocks (``mpers.adapter_pretrained``; :func:`rsmoe.models.mpers.dilateformer.load_pretrained_adapter`).

DilateFormer (Jiao et al. 2023; github.com/JIAOJIAYUASD/dilateformer, ``models/dilateformer.py``) names a block's
parameters ``stages.{s}.blocks.{b}.`` + ``pos_embed.*`` (the 3×3 depth-wise positional conv, ``cpe_per_block``),
``norm1.*``, ``attn.qkv.*``, ``attn.proj.*``, ``norm2.*``, ``mlp.fc1.*``, ``mlp.fc2.*``. rsmoe's ``DilateBlock`` has
the same layers under ``pos.*`` and ``mlp.0.*`` / ``mlp.2.*``; the other names are equal. Its stages 0 and 1 use
multi-scale dilated attention (``MultiDilatelocalAttention``: q, k, v from a 1×1 conv, heads split over the rates
[1, 2, 3]) → rsmoe's ``dilate`` attention; stages 2 and 3 use global attention whose q, k, v come from a ``Linear``
(3C × C) → rsmoe's ``mhsa``, whose 1×1 conv weight is the same matrix as 3C × C × 1 × 1. Both order the q, k, v
channels as [q | k | v], heads contiguous within each. The released models build every block with LayerNorm eps
1e-6, qkv bias on, MLP ratio 4, and heads [3, 6, 12, 24] per stage; the heads are not visible in the weights, so
``--heads`` can override the default. The output records all of this in its metadata.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from ..errors import CheckpointError, ConfigError
from ..io.atomic import atomic_path
from ..io.torch_files import read_state_dict, short_list
from .output import check_output

#: DilateFormer block key (after ``stages.{s}.blocks.{b}.``) → rsmoe DilateBlock key; first match wins.
BLOCK_RENAMES: list[tuple[str, str]] = [
    (r"^pos_embed\.(weight|bias)$", r"pos.\1"),
    (r"^mlp\.fc1\.(weight|bias)$", r"mlp.0.\1"),
    (r"^mlp\.fc2\.(weight|bias)$", r"mlp.2.\1"),
    (r"^(norm1|norm2)\.(weight|bias)$", r"\1.\2"),
    (r"^attn\.(qkv|proj)\.(weight|bias)$", r"attn.\1.\2"),
]
#: what the released DilateFormer models use (models/dilateformer.py: Dilateformer defaults and the variants)
STAGE_HEADS = (3, 6, 12, 24)
NORM_EPS = 1e-6
DILATIONS = (1, 2, 3)
_BLOCK_KEY = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(.+)$")


def stage_blocks(state: Mapping[str, Tensor], where: str) -> dict[int, dict[int, dict[str, Tensor]]]:
    """stage → block → {DilateFormer block key: tensor}; keys outside ``stages.*.blocks.*`` are left out."""
    out: dict[int, dict[int, dict[str, Tensor]]] = {}
    for key, value in state.items():
        m = _BLOCK_KEY.match(key)
        if m:
            out.setdefault(int(m[1]), {}).setdefault(int(m[2]), {})[m[3]] = value
    if not out:
        raise CheckpointError(f"{where}: no stages.N.blocks.M.* keys: not a DilateFormer checkpoint")
    return out


def dilateformer_block_state(block: Mapping[str, Tensor], where: str = "block") -> dict[str, Tensor]:
    """One DilateFormer block (keys without the ``stages.{s}.blocks.{b}.`` prefix) → rsmoe DilateBlock keys; a
    global block's ``Linear`` q, k, v weight becomes the 1×1 conv weight of rsmoe's ``mhsa``. Unknown keys raise."""
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in block.items():
        for pattern, repl in BLOCK_RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value[:, :, None, None] if new == "attn.qkv.weight" and value.dim() == 2 else value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{where}: unrecognised DilateFormer block keys: {short_list(unknown)}")
    return out


def _stage_metadata(first: Mapping[str, Tensor], stage: int, blocks: int, heads: int, src: Path) -> dict[str, str]:
    if "attn.qkv.weight" not in first or "norm1.weight" not in first:
        raise CheckpointError(f"{src}: stage {stage} block 0 has no attn.qkv.weight / norm1.weight")
    dilate = first["attn.qkv.weight"].dim() == 4
    dim = int(first["norm1.weight"].shape[0])
    if dim % heads or (dilate and heads % len(DILATIONS)):
        raise ConfigError(f"{src}: stage {stage} has width {dim}; {heads} heads do not fit it"
                          + (f" and its {len(DILATIONS)} dilation groups" if dilate else ""))
    return {"source_file": src.name, "stage": str(stage),
            "blocks": str(blocks), "dim": str(dim), "heads": str(heads), "attention": "dilate" if dilate else "mhsa",
            "dilations": ",".join(map(str, DILATIONS)) if dilate else "", "norm_eps": repr(NORM_EPS),
            "qkv_bias": str("attn.qkv.bias" in first).lower(), "pos_conv": str("pos_embed.weight" in first).lower()}


def convert_dilateformer(src: str | os.PathLike, out_path: str | os.PathLike, *, stage: int,
                         blocks: int | None = None, heads: int | None = None, force: bool = False) -> Path:
    """Blocks 0 … ``blocks`` − 1 (default: all) of DilateFormer stage ``stage`` → ``out_path`` (``.safetensors``,
    keys of an rsmoe ``DilateAdapter``: ``{b}.pos.weight`` …, metadata as in the module docstring), written
    atomically. ``heads`` defaults to the released models' heads of that stage."""
    from safetensors.torch import save_file

    from ..models.mpers.dilateformer import PRETRAINED_FORMAT

    src, out = Path(src), Path(out_path)
    if out.suffix != ".safetensors":
        raise ConfigError(f"{out}: write converted DilateFormer blocks as .safetensors")
    check_output(out, force=force)
    stages = stage_blocks(read_state_dict(src, "DilateFormer checkpoint"), str(src))
    if stage not in stages:
        raise ConfigError(f"{src}: no stage {stage}; the checkpoint has stages {sorted(stages)}")
    available = sorted(stages[stage])
    count = len(available) if blocks is None else blocks
    if available != list(range(len(available))) or not 1 <= count <= len(available):
        raise ConfigError(f"{src}: stage {stage} has blocks {available}; cannot take the first {count}")
    if heads is None:
        if stage >= len(STAGE_HEADS):
            raise ConfigError(f"{src}: released DilateFormers have {len(STAGE_HEADS)} stages; pass --heads for "
                              f"stage {stage}")
        heads = STAGE_HEADS[stage]
    tensors: dict[str, Tensor] = {}
    for b in range(count):
        renamed = dilateformer_block_state(stages[stage][b], f"{src}: stages.{stage}.blocks.{b}")
        tensors.update({f"{b}.{k}": v.contiguous() for k, v in renamed.items()})
    meta = {"format": PRETRAINED_FORMAT, **_stage_metadata(stages[stage][0], stage, count, heads, src)}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return out


__all__ = ["BLOCK_RENAMES", "DILATIONS", "NORM_EPS", "STAGE_HEADS", "convert_dilateformer",
           "dilateformer_block_state", "stage_blocks"]
