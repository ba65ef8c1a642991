"""`rsmoe convert FORMAT IN OUT`: public checkpoints → what rsmoe loads, never from the hub.

Formats (:data:`FORMATS`; ``rsmoe convert --list`` prints them):

``dinov3-original``
    Meta's original DINOv3 ``.pth`` → a transformers ``DINOv3ViTModel`` directory (``backbone.pretrained``). The
    architecture is read from the tensor shapes (width, depth, MLP width, gated MLP, register tokens, patch size;
    heads = width / 64 as in every released DINOv3 up to ViT-H+); ``--arch vitl16`` (a preset of
    :data:`~rsmoe.models.backbones.dinov3.DINOV3_PRESETS`) or ``--arch '{"num_attention_heads": 16}'`` overrides.
``depth-anything-original`` / ``prompt-depth-anything-original``
    Depth Anything (V1/V2) ``.pth`` / Prompt Depth Anything ``.ckpt`` → a transformers
    ``DepthAnythingForDepthEstimation`` / ``PromptDepthAnythingForDepthEstimation`` directory
    (``depth.pretrained``), or with ``--encoder-only`` just the DINOv2 encoder as a ``Dinov2Model`` directory
    (all rsmoe uses; :meth:`~rsmoe.models.backbones.depth.DepthEncoder.from_pretrained` takes both). The key
    mapping follows the public transformers conversion scripts (renames only; ``attn.qkv`` is split in thirds).
    ``--variant v1|v2`` picks the DPT tap layers (V1: last four blocks; V2 / Prompt DA: blocks 3/6/9/12 for ViT-S/B,
    5/12/18/24 for ViT-L) — only the depth prediction depends on it, never rsmoe's encoder.
``dofa-original`` / ``dofa-torchgeo``
    The authors' ``DOFA_ViT_*_e100.pth`` / TorchGeo's DOFA weights → a normalised ``.pth`` holding tensors only
    (wrappers, ``module.`` prefixes and the pre-training/classification extras removed) that
    :meth:`~rsmoe.models.backbones.dofa.DOFABackbone.from_checkpoint` reads (it reads ``.pth`` with
    ``weights_only=True``, not safetensors). The result is loaded once to check it. Kernel layout is not stored
    in the weights: pre-Aug-2024 TorchGeo files need ``kernel_layout: legacy`` (see ``dofa.py``).
``spectralmoe-official``
    The authors' mmsegmentation checkpoint (``backbone.depthmoe.*`` + ``decode_head.*`` of mmdet 3.x's
    Mask2Former head) → an rsmoe checkpoint (``.safetensors`` of the plug-in + head, with metadata). Needs the
    model config (``--config``, e.g. ``configs/models/spectralmoe_dinov3_vitl.yaml``); class names from
    ``--classes FILE``, the checkpoint's own ``meta.dataset_meta``, ``--data ROOT`` (a prepared dataset) or
    ``--num-classes``; band wavelengths from ``--sensor``/``--wavelengths``/``--data`` or the authors' config
    stored in the checkpoint; normalisation from ``--mean/--std``/``--data`` or that stored config. Whatever
    stays unknown is written to the metadata key ``import_unknown`` (and printed).

Every ``.pth``/``.ckpt`` is read with ``torch.load(weights_only=True)``. Training checkpoints written by
mmengine / Lightning also pickle logging objects (``HistoryBuffer``, numpy scalars, …) that ``weights_only``
refuses; those globals — and only those, as listed by ``torch.serialization.get_unsafe_globals_in_checkpoint`` —
are bound to an inert placeholder class that stores its arguments and runs nothing, so no code from the file is
ever executed. Missing files, unknown keys and shape mismatches are one-line errors naming the key (and both
shapes).

The key mappings and where they come from are documented next to each table below.
"""
from __future__ import annotations

import argparse
import ast
import colorsys
import json
import math
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "FORMATS",
    "ConverterFormat",
    "OfficialImport",
    "add_convert_arguments",
    "convert_depth_anything_original",
    "convert_depth_anything_state_dict",
    "convert_dinov3_original",
    "convert_dofa",
    "convert_mmdet_mask2former_head",
    "convert_spectralmoe_official",
    "convert_spectralmoe_official_adapter",
    "convert_spectralmoe_official_state_dict",
    "depth_anything_config_from_state",
    "dinov3_config_from_state",
    "load_torch_file",
    "run_convert_from_args",
]


# ================================================================================================================
# Safe loading
# ================================================================================================================
class _Inert:
    """Stand-in for a global a checkpoint pickles but ``weights_only`` refuses (logging objects and the like).

    It records what the unpickler hands it and does nothing else; subclasses are made per global name."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Inert":
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: D107 - nothing to do
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<placeholder for {type(self).__qualname__}>"


def _placeholder(name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (_Inert,), {"__qualname__": name, "__module__": __name__})


def load_torch_file(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; globals that ``weights_only`` refuses become inert
    placeholders (see the module docstring). Raises a one-line ``FileNotFoundError`` / ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 - weights_only raises UnpicklingError or RuntimeError
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # noqa: BLE001 - e.g. the legacy (non-zip) format: nothing more we can do safely
            unsafe = []
        if not unsafe:
            raise ValueError(f"{path}: cannot read as a weights-only torch checkpoint "
                             f"({type(first).__name__}: {_first_line(first)})") from None
        try:
            with torch.serialization.safe_globals([(_placeholder(n), n) for n in unsafe]):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as second:  # noqa: BLE001
            raise ValueError(f"{path}: cannot read as a weights-only torch checkpoint, even with placeholders "
                             f"for {_short(unsafe)} ({type(second).__name__}: {_first_line(second)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _short(items: Sequence[str], limit: int = 6) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f", … (+{len(items) - limit} more)" if len(items) > limit else "")


def _tensor_dict(obj: Any, path: Path, keys: Sequence[str] = ("state_dict", "model", "module")) -> dict[str, Tensor]:
    """The tensor state dict inside a loaded checkpoint (bare, or under one of ``keys``); ``module.`` stripped."""
    state = obj
    if isinstance(state, Mapping) and not any(isinstance(v, Tensor) for v in state.values()):
        for key in keys:
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ValueError(f"{path}: no tensors found (top-level keys: {_short([str(k) for k in state])})")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _prepare_output(out: Path, *, directory: bool, force: bool) -> None:
    if out.exists():
        if directory and out.is_dir() and not any(out.iterdir()):
            return
        if not force:
            raise FileExistsError(f"{out} already exists; pass --force to overwrite")
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)


def _shape_error(where: str, key: str, got: Sequence[int], want: Sequence[int]) -> ValueError:
    return ValueError(f"{where}: shape mismatch for {key}: checkpoint {tuple(got)} vs model {tuple(want)}")


def _check_keys(where: str, tensors: Mapping[str, Tensor], expected: Mapping[str, Sequence[int]],
                names: Callable[[str], str] = lambda k: k) -> None:
    """Exactly the expected keys with the expected shapes, or a one-line error (``names`` maps a key back to the
    source naming for the message)."""
    for key, want in expected.items():
        if key in tensors and tuple(tensors[key].shape) != tuple(want):
            raise _shape_error(where, names(key), tensors[key].shape, want)
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_short([names(k) for k in missing])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_short([names(k) for k in unexpected])}")
        raise ValueError(f"{where}: " + "; ".join(parts))


# ================================================================================================================
# DINOv3 original → transformers directory
# ================================================================================================================
def dinov3_config_from_state(state: Mapping[str, Tensor], arch: str | Mapping[str, Any] | None = None):
    """``DINOv3ViTConfig`` for an original DINOv3 state dict, from its shapes; ``arch`` (a preset name or a dict
    of config fields) overrides what the shapes cannot tell (heads) or anything else."""
    from .models.backbones.dinov3 import DINOV3_PRESETS, DINOv3Backbone

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

    from .models.backbones.dinov3 import convert_dinov3_original_state_dict, seeded

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


# ================================================================================================================
# Depth Anything V1/V2, Prompt Depth Anything → transformers directory
# ================================================================================================================
# Original naming (Depth Anything's DINOv2 under ``pretrained.``, the DPT head under ``depth_head.``) → transformers
# 5.x naming. Provenance: transformers' convert_depth_anything_to_hf.py / convert_prompt_depth_anything_to_hf.py
# (read in the public code index) for the original names; the transformers 5.x target names were read from the
# installed DepthAnythingForDepthEstimation / PromptDepthAnythingForDepthEstimation state dicts (5.x renamed the
# DINOv2 attention to q_proj/k_proj/v_proj/o_proj). Refinenet k (1…4) is fusion layer 4 − k.
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
    raise ValueError(f"{where}: no key contains {' or '.join(repr(a) for a in anchors)}: not a Depth Anything "
                     f"checkpoint (keys: {_short(list(state))})")


def depth_anything_config_from_state(state: Mapping[str, Tensor], *, prompt: bool = False, variant: str = "v2",
                                      encoder_only: bool = False, depth_type: str | None = None,
                                      max_depth: float | None = None):
    """The transformers config for an original Depth Anything / Prompt DA state dict (wrapper prefix removed):
    DINOv2 encoder from the ``pretrained.*`` shapes, DPT sizes from ``depth_head.*``."""
    from transformers import DepthAnythingConfig, Dinov2Config, PromptDepthAnythingConfig

    if variant not in ("v1", "v2"):
        raise ValueError(f"variant must be 'v1' or 'v2', got {variant!r}")
    need = ("pretrained.cls_token", "pretrained.pos_embed", "pretrained.patch_embed.proj.weight",
            "pretrained.blocks.0.mlp.fc1.weight")
    if "pretrained.blocks.0.mlp.w12.weight" in state:
        raise ValueError("SwiGLU DINOv2 encoders (ViT-g) are not supported by the Depth Anything converter")
    missing = [k for k in need if k not in state]
    if missing:
        raise ValueError(f"not a Depth Anything state dict: missing {', '.join(missing)}")
    hidden = int(state["pretrained.cls_token"].shape[-1])
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("pretrained.blocks."))
    patch = int(state["pretrained.patch_embed.proj.weight"].shape[-1])
    grid = math.isqrt(int(state["pretrained.pos_embed"].shape[1]) - 1)
    if grid * grid != int(state["pretrained.pos_embed"].shape[1]) - 1:
        raise ValueError(f"pretrained.pos_embed {tuple(state['pretrained.pos_embed'].shape)} is not a square grid")
    inter = int(state["pretrained.blocks.0.mlp.fc1.weight"].shape[0])
    if inter % hidden:
        raise ValueError(f"MLP width {inter} is not a multiple of the width {hidden}")
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
        raise ValueError("no depth_head.* weights (depth_head.scratch.layer1_rn.weight); use --encoder-only")
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
        raise ValueError(f"unrecognised keys in the Depth Anything checkpoint: {_short(unknown)}")
    return out, ignored


def convert_depth_anything_original(src: str | os.PathLike, out_dir: str | os.PathLike, *, prompt: bool = False,
                                    variant: str = "v2", encoder_only: bool = False, depth_type: str | None = None,
                                    max_depth: float | None = None, force: bool = False) -> Path:
    """Depth Anything ``.pth`` / Prompt Depth Anything ``.ckpt`` → transformers directory (see the module doc)."""
    from transformers import DepthAnythingForDepthEstimation, Dinov2Model, PromptDepthAnythingForDepthEstimation

    from .models.backbones.dinov3 import seeded

    src, out = Path(src), Path(out_dir)
    what = "Prompt Depth Anything checkpoint" if prompt else "Depth Anything checkpoint"
    state = _tensor_dict(load_torch_file(src, what), src)
    state = _strip_to(state, ("pretrained.", "depth_head."), str(src))
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
    if "embeddings.mask_token" in expected or "backbone.embeddings.mask_token" in expected:
        mt = "embeddings.mask_token" if encoder_only else "backbone.embeddings.mask_token"
        if mt in tensors and tensors[mt].dim() == 3:  # some exports keep it 1×1×D
            tensors[mt] = tensors[mt].reshape(expected[mt])
    _check_keys(str(src), tensors, expected, names=lambda k: f"{sources[k]} (→ {k})" if k in sources else k)
    with seeded(0):
        model = model_cls(config)
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    _prepare_output(out, directory=True, force=force)
    model.save_pretrained(out)
    if ignored:
        print(f"note: ignored {len(ignored)} key(s) outside pretrained.*/depth_head.*: {_short(ignored)}",
              file=sys.stderr)
    return out


# ================================================================================================================
# DOFA (authors' / TorchGeo) → normalised tensors-only .pth
# ================================================================================================================
def convert_dofa(src: str | os.PathLike, out_path: str | os.PathLike, *, source: str = "original",
                 kernel_layout: str | None = None, size: Any = None, force: bool = False) -> Path:
    """DOFA v1 weights → a bare ``{key: tensor}`` ``.pth`` with exactly the backbone keys that
    :meth:`DOFABackbone.from_checkpoint` expects; loaded once through it (with ``size``: a DOFA size name /
    config, None = inferred from the shapes) to check names and shapes."""
    from .models.backbones.dofa import IGNORED_KEY_PREFIXES, IGNORED_KEYS, DOFABackbone, _unwrap_state_dict

    if source not in ("original", "torchgeo"):
        raise ValueError(f"source must be 'original' or 'torchgeo', got {source!r}")
    src, out = Path(src), Path(out_path)
    loaded = load_torch_file(src, f"DOFA checkpoint ({source})")
    state = _unwrap_state_dict(loaded, src)
    kept = {k: v.contiguous() for k, v in state.items()
            if not (k.startswith(IGNORED_KEY_PREFIXES) or k in IGNORED_KEYS)}
    _prepare_output(out, directory=False, force=force)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        torch.save(kept, tmp)
        DOFABackbone.from_checkpoint(tmp, size=size, kernel_layout=kernel_layout)  # validates keys and shapes
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


# ================================================================================================================
# SpectralMoE official (mmseg) → rsmoe checkpoint
# ================================================================================================================
# Adapter: the authors' DepthMoE module (SpectralMoE/models/backbones/depthmoe.py, read in the public code index)
# holds per-(layer, expert) ParameterLists, so its keys are experts_a.{l}.{e} (m×r), experts_b.{l}.{e} (r×d),
# w_gate.{l}.{j} / w_noise.{l}.{j} (d×E; j = 0 MSI/visual, 1 depth), scale (α, 0-dim), mlp_token2feat.* (t2f),
# mlp_delta_f.* (delta), transform.* / merge.* (query link), and two buffers mean=[0.], std=[1.] (the standard
# normal used for the load estimate; constants, dropped). The backbone's state_dict override keeps only keys
# containing "depthmoe", so the frozen ViT / PromptDA weights are not in the file.
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
# post_norm), all read in the public code index. mmseg's wrapper and the authors' DepthMoEMask2FormerHead add no
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


def convert_spectralmoe_official_adapter(adapter: Mapping[str, Tensor], where: str = "checkpoint"
                                         ) -> tuple[dict[str, Tensor], list[str]]:
    """``backbone.depthmoe.*`` (prefix removed) → rsmoe SpectralMoE parameter names. Returns (tensors, notes)."""
    indexed: dict[str, dict[tuple[int, int], Tensor]] = {n: {} for n in ("experts_a", "experts_b", "w_gate",
                                                                          "w_noise")}
    out: dict[str, Tensor] = {}
    notes: list[str] = []
    unknown: list[str] = []
    for key, value in adapter.items():
        m = _ADAPTER_INDEXED.match(key)
        if m:
            indexed[m[1]][(int(m[2]), int(m[3]))] = value
        elif key in _ADAPTER_SIMPLE:
            out[_ADAPTER_SIMPLE[key]] = value
        elif key in _ADAPTER_BUFFERS:
            if value.numel() != 1 or float(value.reshape(-1)[0]) != _ADAPTER_BUFFERS[key]:
                notes.append(f"{ADAPTER_PREFIX}{key} is {value.tolist()}, expected [{_ADAPTER_BUFFERS[key]}] "
                             "(the standard normal of the load estimate); rsmoe uses the standard normal")
        else:
            unknown.append(ADAPTER_PREFIX + key)
    if unknown:
        raise ValueError(f"{where}: unrecognised adapter keys: {_short(unknown)}")
    if not indexed["experts_a"]:
        raise ValueError(f"{where}: no {ADAPTER_PREFIX}experts_a.* keys: not a SpectralMoE (DepthMoE) checkpoint")
    layers = 1 + max(l for l, _ in indexed["experts_a"])
    experts = 1 + max(e for _, e in indexed["experts_a"])
    for name, grid, what in (("experts_a", experts, "expert"), ("experts_b", experts, "expert"),
                             ("w_gate", None, "modality"), ("w_noise", None, "modality")):
        entries = indexed[name]
        if not entries:
            raise ValueError(f"{where}: missing {ADAPTER_PREFIX}{name}.* keys")
        cols = grid if grid is not None else 1 + max(j for _, j in entries)
        missing = [f"{ADAPTER_PREFIX}{name}.{l}.{j}" for l in range(layers) for j in range(cols)
                   if (l, j) not in entries]
        extra = [f"{ADAPTER_PREFIX}{name}.{l}.{j}" for (l, j) in entries if l >= layers or j >= cols]
        if missing or extra:
            raise ValueError(f"{where}: {name} is not a full {layers} layers × {cols} {what}s grid"
                             + (f"; missing {_short(missing)}" if missing else "")
                             + (f"; extra {_short(extra)}" if extra else ""))
        ref_key = (0, 0)
        ref = entries[ref_key]
        for (l, j), t in entries.items():
            if t.shape != ref.shape:
                hint = (" (per-expert ranks differ — lora_dims must all be equal for rsmoe)"
                        if name in ("experts_a", "experts_b") else "")
                raise ValueError(f"{where}: {ADAPTER_PREFIX}{name}.{l}.{j} has shape {tuple(t.shape)} but "
                                 f"{ADAPTER_PREFIX}{name}.0.0 has {tuple(ref.shape)}{hint}")
        stacked = torch.stack([torch.stack([entries[(l, j)] for j in range(cols)]) for l in range(layers)])
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
                raise ValueError(f"{where}: {HEAD_PREFIX}{key}: {why}")
        for pattern, repl in _HEAD_RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                if new in out:
                    raise ValueError(f"{where}: {HEAD_PREFIX}{key} maps onto {new} twice (mixed mmdet 2.x/3.x names)")
                out[new] = value
                break
        else:
            unknown.append(HEAD_PREFIX + key)
    if unknown:
        raise ValueError(f"{where}: unrecognised decode_head keys: {_short(unknown)}")
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
    with the query link's output, so the head alone reproduces what runs."""
    state = dict(state)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    adapter = {k[len(ADAPTER_PREFIX):]: v for k, v in state.items() if k.startswith(ADAPTER_PREFIX)}
    head = {k[len(HEAD_PREFIX):]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    ignored = [k for k in state if not k.startswith((ADAPTER_PREFIX, HEAD_PREFIX))]
    stray = [k for k in ignored if not k.startswith(("backbone.", "data_preprocessor."))]
    if stray:
        raise ValueError(f"{where}: keys outside backbone.depthmoe.* / decode_head.*: {_short(stray)}")
    if not head:
        raise ValueError(f"{where}: no {HEAD_PREFIX}* keys (the Mask2Former head)")
    adapter_t, notes = convert_spectralmoe_official_adapter(adapter, where)
    head_t = convert_mmdet_mask2former_head(head, where)
    tensors = {f"adapter.{k}": v for k, v in adapter_t.items()}
    tensors.update({f"head.{k}": v for k, v in head_t.items()})
    if ignored:
        notes.append(f"ignored {len(ignored)} frozen-backbone / preprocessor key(s) (rsmoe takes the frozen weights "
                     "from the config)")
    if "head.query_pos.weight" not in tensors:
        tensors["head.query_pos.weight"] = _query_link_output(adapter_t)
        notes.append("head.query_pos: not in the authors' head (deleted there; the query link replaces it) — filled "
                     "with the query link's output")
    return OfficialImport(tensors=tensors, ignored=ignored, notes=notes)


@torch.no_grad()
def _query_link_output(adapter: Mapping[str, Tensor]) -> Tensor:
    from .models.adapters.query_link import QueryLink

    w = adapter.get("query_link.transform.weight")
    if w is None or "query_link.merge.weight" not in adapter:
        raise ValueError("the checkpoint has no query link (transform.*, merge.*): cannot fill head.query_pos")
    link = QueryLink(int(w.shape[1]), int(w.shape[0]))
    link.load_state_dict({k[len("query_link."):]: v.float() for k, v in adapter.items()
                          if k.startswith("query_link.")}, strict=True)
    tokens = adapter["experts.experts_a"].float() @ adapter["experts.experts_b"].float()
    return link(tokens).contiguous()


# ---------------------------------------------------------------- the authors' config text stored by mmengine
def _literal(node: ast.AST) -> Any:
    """Literal value of a config AST node: constants, lists/tuples/dicts, ``dict(...)`` calls, unary minus.
    Anything else (names, other calls) becomes None — nothing is executed."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values) if k is not None}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand)
        return -value if isinstance(value, (int, float)) else None
    return None


def parse_mmengine_config_text(text: str) -> dict[str, Any]:
    """Top-level assignments of an mmengine ``pretty_text`` config, as plain literals (never executed)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return {}
    out: dict[str, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            out[stmt.targets[0].id] = _literal(stmt.value)
    return out


def _dig(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


@dataclass
class OfficialMeta:
    """What the checkpoint itself says besides tensors (mmengine ``meta``), all optional."""

    classes: list[str] | None = None
    palette: list[list[int]] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    wavelengths: list[float] | None = None
    in_chans: int | None = None
    moe: dict[str, Any] = field(default_factory=dict)
    backbone_type: str | None = None
    step: int = 0


def read_official_meta(obj: Any) -> OfficialMeta:
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    result = OfficialMeta()
    if not isinstance(meta, Mapping):
        return result
    dataset_meta = meta.get("dataset_meta")
    if isinstance(dataset_meta, Mapping):
        classes = dataset_meta.get("classes")
        if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
            result.classes = list(classes)
        palette = dataset_meta.get("palette")
        if isinstance(palette, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 3 for p in palette):
            result.palette = [[int(v) for v in p] for p in palette]
    for key in ("iter", "step"):
        if isinstance(meta.get(key), int):
            result.step = int(meta[key])
    cfg_text = meta.get("cfg")
    if isinstance(cfg_text, str):
        cfg = parse_mmengine_config_text(cfg_text)
        model = cfg.get("model") if isinstance(cfg.get("model"), Mapping) else {}
        mean, std = _dig(model, "data_preprocessor", "mean"), _dig(model, "data_preprocessor", "std")
        if isinstance(mean, list) and isinstance(std, list):
            result.mean, result.std = [float(v) for v in mean], [float(v) for v in std]
        backbone = model.get("backbone") if isinstance(model.get("backbone"), Mapping) else {}
        result.backbone_type = backbone.get("type") if isinstance(backbone.get("type"), str) else None
        if isinstance(backbone.get("wave_list"), list):
            result.wavelengths = [float(v) for v in backbone["wave_list"]]
        if isinstance(backbone.get("in_chans"), int):
            result.in_chans = int(backbone["in_chans"])
        moe = backbone.get("depthmoe_config")
        if isinstance(moe, Mapping):
            result.moe = {k: v for k, v in moe.items() if v is not None}
    return result


# ---------------------------------------------------------------- class names, palette, metadata
def default_palette(n: int) -> list[list[int]]:
    """n well-separated colours (golden-ratio hues)."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95 if i % 2 == 0 else 0.75)
        out.append([int(round(255 * r)), int(round(255 * g)), int(round(255 * b))])
    return out


def read_classes_file(path: str | os.PathLike) -> tuple[list[str], list[list[int]] | None]:
    """Class names (and optional palette) from ``.txt`` (one name per line), or ``.json``/``.yaml`` holding a
    list of names, a list of ``{name, color}`` entries, or a mapping with ``classes`` (+ ``palette``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classes file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip()], None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot parse ({_first_line(exc)})") from None
    palette = None
    if isinstance(data, Mapping):
        palette = data.get("palette")
        data = data.get("classes")
    if isinstance(data, list) and data and all(isinstance(e, Mapping) for e in data):
        palette = [list(e["color"]) for e in data] if all("color" in e for e in data) else None
        data = [e.get("name") for e in data]
    if not isinstance(data, list) or not all(isinstance(c, str) for c in data):
        raise ValueError(f"{path}: expected a list of class names (or a mapping with 'classes')")
    if palette is not None:
        if len(palette) != len(data) or not all(isinstance(p, (list, tuple)) and len(p) == 3 for p in palette):
            raise ValueError(f"{path}: palette must have one [r, g, b] per class ({len(data)})")
        palette = [[int(v) for v in p] for p in palette]
    return list(data), palette


def _imported_meta_cls():
    from .engine.checkpoints import CheckpointMeta

    @dataclass
    class ImportedMeta(CheckpointMeta):
        """CheckpointMeta plus provenance keys (``import_*``) in the safetensors metadata."""

        extra: dict[str, str] = field(default_factory=dict)

        def to_strings(self) -> dict[str, str]:
            strings = super().to_strings()
            strings.update(self.extra)
            return strings

    return ImportedMeta


class _Tensors:
    """What :func:`rsmoe.engine.checkpoints.save_checkpoint` needs from a model: the trainable tensors."""

    def __init__(self, tensors: dict[str, Tensor]):
        self._tensors = tensors

    def trainable_state_dict(self) -> dict[str, Tensor]:
        return self._tensors


def convert_spectralmoe_official(
    src: str | os.PathLike,
    out_path: str | os.PathLike,
    config: Any,
    *,
    classes_file: str | os.PathLike | None = None,
    num_classes: int | None = None,
    data_root: str | os.PathLike | None = None,
    sensor: str | None = None,
    wavelengths: Sequence[float] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    ignore_index: int | None = None,
    force: bool = False,
    quiet: bool = False,
) -> Path:
    """The authors' checkpoint → rsmoe checkpoint for ``config`` (a :class:`rsmoe.config.Config`).

    Checks every trainable tensor of the model the config builds (names and shapes, on the meta device — no
    weights are read). Metadata sources, first found wins: class names ``classes_file`` → the checkpoint's
    ``meta.dataset_meta`` → ``data_root`` → ``num_classes`` (placeholder names) → the class count of
    ``cls_embed``; wavelengths ``wavelengths`` → ``sensor`` → ``data_root`` (first source domain) → the authors'
    ``wave_list`` → RGB when the authors' config has 3 input bands; mean/std ``mean``/``std`` → ``data_root``
    → the authors' ``data_preprocessor`` → 0/1 (unknown). Unknowns go to ``import_unknown``.
    """
    from .engine.checkpoints import save_checkpoint
    from .params import meta_model
    from .sensors import get_sensor

    src, out = Path(src), Path(out_path)
    where = str(src)
    loaded = load_torch_file(src, "SpectralMoE checkpoint")
    state = _tensor_dict(loaded, src, keys=("state_dict", "model"))
    official = read_official_meta(loaded)
    imported = convert_spectralmoe_official_state_dict(state, where)
    notes, unknown = list(imported.notes), []

    a = config.adapter
    if a.type != "spectralmoe":
        raise ValueError(f"{where}: the config's adapter.type is {a.type!r}; a SpectralMoE checkpoint needs "
                         "adapter.type: spectralmoe")
    if not config.depth.enabled:
        raise ValueError(f"{where}: the checkpoint has depth routers; the config needs depth.enabled: true")
    if config.head.type != "mask2former" or not a.query_link:
        raise ValueError(f"{where}: the checkpoint has a Mask2Former head fed by the query link; the config needs "
                         "head.type: mask2former and adapter.query_link: true")
    for key, want in (("expert_logits", "official"), ("fusion", "official"), ("combine", "official")):
        if getattr(a, key) != want:
            notes.append(f"adapter.{key} is {getattr(a, key)!r}: outputs will differ from the authors' code "
                         f"(which computes {want!r})")
    moe = official.moe
    if moe:
        gating = moe.get("gating", "softmax")
        if gating != a.gating:
            notes.append(f"the authors' config used gating {gating!r} but this config has {a.gating!r}")
        if a.gating == "laplace" and a.distance_p != 2.0:
            notes.append(f"adapter.distance_p is {a.distance_p}; the authors' code uses the Euclidean distance (2)")
        for theirs, ours in (("top_k", a.top_k), ("num_experts", a.num_experts), ("token_length", a.num_tokens)):
            if theirs in moe and moe[theirs] != ours:
                raise ValueError(f"{where}: the authors' config has {theirs}={moe[theirs]}, this config {ours}")
        if "noisy_gating" in moe and bool(moe["noisy_gating"]) != a.noisy:
            notes.append(f"the authors' config has noisy_gating={moe['noisy_gating']}, this config noisy={a.noisy}")
    else:
        unknown.append("gating/top_k/noise: not recorded in the checkpoint — taken from the config (the published "
                       "configs use laplace gating with the Euclidean distance, top-1, noisy)")

    # ---- class names / palette
    info = None
    if data_root is not None:
        from .data.prepared import load_dataset_info

        info = load_dataset_info(data_root)
    head_classes = int(imported.tensors["head.class_embed.weight"].shape[0]) - 1
    palette = None
    if classes_file is not None:
        names, palette = read_classes_file(classes_file)
    elif official.classes is not None:
        names, palette = official.classes, official.palette
    elif info is not None:
        names, palette = list(info.classes), [list(p) for p in info.palette]
    elif num_classes is not None:
        names = [f"class_{i}" for i in range(num_classes)]
        unknown.append("class names (placeholders class_0…)")
    else:
        names = [f"class_{i}" for i in range(head_classes)]
        unknown.append("class names (placeholders; count from decode_head.cls_embed)")
    if num_classes is not None and num_classes != len(names):
        raise ValueError(f"{where}: --num-classes {num_classes} but {len(names)} class names were found")
    if len(names) != head_classes:
        raise ValueError(f"{where}: {len(names)} class names but decode_head.cls_embed predicts {head_classes} "
                         "classes (+ no-object)")
    if palette is None or len(palette) != len(names):
        palette = default_palette(len(names))
        unknown.append("palette (generated)")

    # ---- bands
    band_names: list[str] = []
    sensor_key = None
    if wavelengths is not None:
        wl = [float(w) for w in wavelengths]
    elif sensor is not None:
        s = get_sensor(sensor)
        wl, band_names, sensor_key = list(s.wavelengths), list(s.band_names), sensor
    elif info is not None:
        domain = config.data.source_domains[0] if config.data.source_domains else next(iter(info.sensors))
        sensor_key = info.sensors.get(domain)
        if sensor_key is None:
            raise ValueError(f"{where}: domain {domain!r} is not in {data_root}/dataset.yaml")
        s = get_sensor(sensor_key)
        wl, band_names = list(s.wavelengths), list(s.band_names)
    elif official.wavelengths is not None:
        wl = official.wavelengths
        notes.append("band wavelengths from the authors' config (wave_list)")
    elif official.in_chans == 3:
        s = get_sensor("RGB")
        wl, band_names, sensor_key = list(s.wavelengths), list(s.band_names), "RGB"
    else:
        chans = f" ({official.in_chans} bands)" if official.in_chans else ""
        raise ValueError(f"{where}: band wavelengths unknown{chans}: pass --sensor, --wavelengths or --data (the "
                         "band order the model was trained with; the published Five-Billion-Pixels models take "
                         "NIR,R,G,B: --wavelengths 0.83 0.665 0.56 0.49)")
    if official.in_chans is not None and official.in_chans != len(wl):
        raise ValueError(f"{where}: the authors' config has in_chans={official.in_chans}, got {len(wl)} wavelengths")

    # ---- normalisation
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise ValueError("--mean and --std go together")
        mean_l, std_l = [float(v) for v in mean], [float(v) for v in std]
    elif info is not None:
        mean_l, std_l = list(info.mean), list(info.std)
    elif official.mean is not None:
        mean_l, std_l = official.mean, official.std
        notes.append("mean/std from the authors' data_preprocessor (in the units of their input files)")
    else:
        mean_l, std_l = [0.0] * len(wl), [1.0] * len(wl)
        unknown.append("normalisation mean/std (set to 0/1)")
    if len(mean_l) != len(wl) or len(std_l) != len(wl):
        raise ValueError(f"{where}: mean/std have {len(mean_l)}/{len(std_l)} values for {len(wl)} bands")
    ignore = ignore_index if ignore_index is not None else (info.ignore_index if info is not None else 255)

    # ---- exact check against the model the config builds, then write
    model = meta_model(config, len(names), wl)
    expected = {k: tuple(v.shape) for k, v in model.trainable_state_dict().items()}
    _check_keys(where, imported.tensors, expected, names=official_key_for)
    tensors = {k: imported.tensors[k].detach().to(torch.float32).contiguous() for k in expected}

    meta_cls = _imported_meta_cls()
    extra = {
        "import_format": "spectralmoe-official",
        "import_source": src.name,
        "import_notes": json.dumps(notes),
        "import_unknown": json.dumps(unknown),
    }
    meta = meta_cls(config=config, class_names=list(names), palette=[list(p) for p in palette], mean=mean_l,
                    std=std_l, wavelengths=wl, band_names=band_names, sensor=sensor_key, ignore_index=int(ignore),
                    step=official.step, extra=extra)
    _prepare_output(out, directory=False, force=force)
    save_checkpoint(_Tensors(tensors), meta, out)
    if not quiet:
        for line in notes:
            print(f"note: {line}", file=sys.stderr)
        for line in unknown:
            print(f"unknown: {line}", file=sys.stderr)
    return out


# ================================================================================================================
# Registry and CLI
# ================================================================================================================
@dataclass(frozen=True)
class ConverterFormat:
    name: str
    input: str
    output: str
    description: str


FORMATS: dict[str, ConverterFormat] = {
    f.name: f
    for f in (
        ConverterFormat("dinov3-original", "Meta DINOv3 .pth", "transformers directory (backbone.pretrained)",
                        "DINOv3 original checkpoint → DINOv3ViTModel.save_pretrained"),
        ConverterFormat("depth-anything-original", "Depth Anything V1/V2 .pth",
                        "transformers directory (depth.pretrained)",
                        "→ DepthAnythingForDepthEstimation (or --encoder-only: Dinov2Model)"),
        ConverterFormat("prompt-depth-anything-original", "Prompt Depth Anything .ckpt",
                        "transformers directory (depth.pretrained)",
                        "→ PromptDepthAnythingForDepthEstimation (or --encoder-only: Dinov2Model)"),
        ConverterFormat("dofa-original", "DOFA_ViT_*_e100.pth (authors)", ".pth of tensors (backbone.pretrained)",
                        "normalised DOFA v1 state dict for DOFABackbone.from_checkpoint"),
        ConverterFormat("dofa-torchgeo", "TorchGeo DOFA .pth", ".pth of tensors (backbone.pretrained)",
                        "normalised DOFA v1 state dict for DOFABackbone.from_checkpoint"),
        ConverterFormat("spectralmoe-official", "authors' mmseg .pth (SpectralMoE)", "rsmoe .safetensors checkpoint",
                        "adapter + Mask2Former head → rsmoe checkpoint; needs --config"),
    )
}


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``rsmoe convert`` (the CLI module wires ``run_convert_from_args``)."""
    parser.add_argument("format", nargs="?", choices=sorted(FORMATS), metavar="FORMAT",
                        help=f"one of: {', '.join(sorted(FORMATS))}")
    parser.add_argument("input", nargs="?", help="the checkpoint to convert")
    parser.add_argument("output", nargs="?", help="where to write (a directory for transformers formats, a file "
                                                  "otherwise)")
    parser.add_argument("--list", action="store_true", help="list the formats and exit")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    g = parser.add_argument_group("dinov3-original")
    g.add_argument("--arch", help="DINOv3 preset (vits16, vitb16, vitl16) or a JSON dict of config fields; default: "
                                  "read from the tensor shapes")
    g = parser.add_argument_group("depth-anything-original / prompt-depth-anything-original")
    g.add_argument("--encoder-only", action="store_true", help="write only the DINOv2 encoder (Dinov2Model)")
    g.add_argument("--variant", choices=["v1", "v2"], default="v2", help="Depth Anything release (DPT tap blocks)")
    g.add_argument("--depth-type", choices=["relative", "metric"], help="depth_estimation_type of the config")
    g.add_argument("--max-depth", type=float, help="max_depth of a metric model")
    g = parser.add_argument_group("dofa-original / dofa-torchgeo")
    g.add_argument("--kernel-layout", choices=["band_major", "legacy"],
                   help="check the result with this kernel layout (legacy: pre-Aug-2024 TorchGeo weights)")
    g.add_argument("--dofa-size", choices=["small", "base", "large", "huge"],
                   help="DOFA size (default: inferred from width and depth)")
    g = parser.add_argument_group("spectralmoe-official")
    g.add_argument("--config", help="rsmoe model config YAML (e.g. configs/models/spectralmoe_dinov3_vitl.yaml)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    g.add_argument("--classes", help="class names: .txt (one per line), .json/.yaml (list, or classes + palette)")
    g.add_argument("--num-classes", type=int, help="number of classes when no names are known")
    g.add_argument("--data", help="a prepared dataset (dataset.yaml): classes, palette, mean/std, sensor")
    g.add_argument("--sensor", help="sensor name of the input bands (rsmoe.sensors), e.g. GF-2")
    g.add_argument("--wavelengths", type=float, nargs="+", help="band centre wavelengths in µm, in input order")
    g.add_argument("--mean", type=float, nargs="+", help="per-band normalisation mean")
    g.add_argument("--std", type=float, nargs="+", help="per-band normalisation std")
    g.add_argument("--ignore-index", type=int, help="label of ignored pixels (default 255)")


def _format_list() -> str:
    width = max(len(n) for n in FORMATS)
    return "\n".join(f"{f.name:<{width}}  {f.input} → {f.output}" for f in FORMATS.values())


def run_convert_from_args(args: argparse.Namespace) -> int:
    """Run ``rsmoe convert`` from parsed arguments; prints the written path. Errors raise ValueError /
    FileNotFoundError (the CLI prints them on one line)."""
    if getattr(args, "list", False):
        print(_format_list())
        return 0
    if not args.format or not args.input or not args.output:
        raise ValueError("usage: rsmoe convert FORMAT IN OUT (rsmoe convert --list for the formats)")
    fmt, src, out = args.format, args.input, args.output
    try:
        if fmt == "dinov3-original":
            written = convert_dinov3_original(src, out, arch=args.arch, force=args.force)
        elif fmt in ("depth-anything-original", "prompt-depth-anything-original"):
            written = convert_depth_anything_original(
                src, out, prompt=fmt.startswith("prompt"), variant=args.variant, encoder_only=args.encoder_only,
                depth_type=args.depth_type, max_depth=args.max_depth, force=args.force)
        elif fmt in ("dofa-original", "dofa-torchgeo"):
            written = convert_dofa(src, out, source=fmt.split("-", 1)[1], kernel_layout=args.kernel_layout,
                                   size=args.dofa_size, force=args.force)
        elif fmt == "spectralmoe-official":
            from .config import load_config

            if not args.config:
                raise ValueError("spectralmoe-official needs --config (the rsmoe model config the checkpoint fits)")
            cfg = load_config(args.config, args.overrides)
            written = convert_spectralmoe_official(
                src, out, cfg, classes_file=args.classes, num_classes=args.num_classes, data_root=args.data,
                sensor=args.sensor, wavelengths=args.wavelengths, mean=args.mean, std=args.std,
                ignore_index=args.ignore_index, force=args.force)
        else:  # argparse's choices make this unreachable
            raise ValueError(f"unknown format {fmt!r}; known: {', '.join(sorted(FORMATS))}")
    except FileExistsError as exc:
        raise ValueError(str(exc)) from None
    print(written)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m rsmoe.convert``) until the CLI wires the subcommand."""
    parser = argparse.ArgumentParser(prog="rsmoe convert", description=__doc__.split("\n\n")[0])
    add_convert_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_convert_from_args(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        if os.environ.get("RSMOE_DEBUG"):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"rsmoe convert: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
