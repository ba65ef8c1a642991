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

# Re-exports: everything the former single module ``rsmoe.convert`` defined publicly stays importable from here.
from .cli import add_convert_arguments, main, run_convert_from_args
from .depth_anything import (
    convert_depth_anything_original,
    convert_depth_anything_state_dict,
    depth_anything_config_from_state,
)
from .dinov3 import convert_dinov3_original, dinov3_config_from_state
from .dofa import convert_dofa
from .loading import load_torch_file
from .registry import FORMATS, ConverterFormat
from .spectralmoe_official import (
    ADAPTER_PREFIX,
    HEAD_PREFIX,
    OfficialImport,
    OfficialMeta,
    convert_mmdet_mask2former_head,
    convert_spectralmoe_official,
    convert_spectralmoe_official_adapter,
    convert_spectralmoe_official_state_dict,
    default_palette,
    official_key_for,
    parse_mmengine_config_text,
    read_classes_file,
    read_official_meta,
)

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
    "main",
    "ADAPTER_PREFIX",
    "HEAD_PREFIX",
    "OfficialMeta",
    "default_palette",
    "official_key_for",
    "parse_mmengine_config_text",
    "read_classes_file",
    "read_official_meta",
]
