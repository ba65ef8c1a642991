"""`rsmoe convert FORMAT IN OUT`: public checkpoints → what rsmoe loads, never from the hub.

Formats (:data:`~rsmoe.convert.registry.FORMATS`; ``rsmoe convert --list`` prints them):

``dinov3-original``
    Meta's original DINOv3 ``.pth`` — a release file or a training checkpoint (``teacher`` → ``backbone.*``) —
    → a transformers ``DINOv3ViTModel`` directory (``backbone.pretrained``). ``backbone.pretrained`` accepts the
    same ``.pth`` files directly. The architecture is read from the tensor shapes (width, depth, MLP width, gated
    MLP, register tokens, patch size; heads = width / 64 as in every released DINOv3 up to ViT-H+); ``--arch
    vitl16`` (a preset of :data:`~rsmoe.models.backbones.dinov3.DINOV3_PRESETS`) or ``--arch
    '{"num_attention_heads": 16}'`` overrides.
``depth-anything-original`` / ``prompt-depth-anything-original``
    Depth Anything (V1/V2) ``.pth`` / Prompt Depth Anything ``.ckpt`` → a transformers
    ``DepthAnythingForDepthEstimation`` / ``PromptDepthAnythingForDepthEstimation`` directory
    (``depth.pretrained``), or with ``--encoder-only`` just the DINOv2 encoder as a ``Dinov2Model`` directory
    (all rsmoe uses). The key mapping follows the public transformers conversion scripts (renames only;
    ``attn.qkv`` is split in thirds). ``--variant v1|v2`` picks the DPT tap layers (V1: last four blocks; V2 /
    Prompt DA: blocks 3/6/9/12 for ViT-S/B, 5/12/18/24 for ViT-L) — only the depth prediction depends on it.
``dofa-original`` / ``dofa-torchgeo``
    The authors' ``DOFA_ViT_*_e100.pth`` / TorchGeo's DOFA weights → a ``.safetensors`` of the backbone tensors
    whose metadata stores the patch-kernel layout (``--kernel-layout``; default from the file's SHA-256 when it is
    a known release, else ``band_major`` with a warning) and the source file's SHA-256; ``backbone.kind: dofa``
    loads it with that layout (:mod:`rsmoe.models.backbones.dofa_weights` has the release history).
``spectralmoe-official``
    The authors' mmsegmentation checkpoint (``backbone.depthmoe.*`` + ``decode_head.*`` of mmdet 3.x's
    Mask2Former head) → an rsmoe checkpoint (``.safetensors`` of the plug-in + head, with metadata). Needs the
    model config (``--config``); class names, bands and normalisation come from the options, a prepared dataset
    (``--data``) or the checkpoint (see :mod:`rsmoe.convert.spectralmoe_official`). Whatever stays unknown is
    written to the metadata key ``import_unknown`` (and printed).
``dilateformer``
    A DilateFormer checkpoint (github.com/JIAOJIAYUASD/dilateformer) → the blocks of one stage (``--stage``) in
    rsmoe's ``DilateBlock`` naming, as ``.safetensors``; ``mpers.adapter_pretrained`` starts MPerS adapters from
    it (:mod:`rsmoe.convert.dilateformer`).

Every ``.pth``/``.ckpt`` is read by :func:`rsmoe.io.torch_files.read_torch_file` (``weights_only=True``, inert
placeholders for logging objects), outputs are written atomically, and problems are one-line
:class:`~rsmoe.errors.RsmoeError`\\ s naming the key (and both shapes).

The names below are imported lazily, so ``import rsmoe.convert.cli`` (what the command line needs) stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

#: public name → submodule that defines it
_EXPORTS = {
    "add_convert_arguments": "cli",
    "run_convert_from_args": "cli",
    "main": "cli",
    "FORMATS": "registry",
    "ConverterFormat": "registry",
    "convert_dinov3_original": "dinov3",
    "dinov3_config_from_state": "dinov3",
    "convert_depth_anything_original": "depth_anything",
    "convert_depth_anything_state_dict": "depth_anything",
    "depth_anything_config_from_state": "depth_anything",
    "convert_dofa": "dofa",
    "convert_dilateformer": "dilateformer",
    "dilateformer_block_state": "dilateformer",
    "ADAPTER_PREFIX": "spectralmoe_keys",
    "HEAD_PREFIX": "spectralmoe_keys",
    "OfficialImport": "spectralmoe_keys",
    "convert_mmdet_mask2former_head": "spectralmoe_keys",
    "convert_spectralmoe_official_adapter": "spectralmoe_keys",
    "convert_spectralmoe_official_state_dict": "spectralmoe_keys",
    "official_key_for": "spectralmoe_keys",
    "OfficialMeta": "mmengine_meta",
    "parse_mmengine_config_text": "mmengine_meta",
    "read_official_meta": "mmengine_meta",
    "default_palette": "classes",
    "read_classes_file": "classes",
    "convert_spectralmoe_official": "spectralmoe_official",
    "match_band_order": "spectralmoe_official",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(_EXPORTS)
