"""``rsmoe pretrain backbone``: self-supervised pretraining of the shipped DINOv3-architecture ViT.

Architecture (:data:`BACKBONE_ARCH`): ``DINOv3ViTModel`` with patch 4, width 96, 4 blocks, 4 heads, MLP 384,
4 register tokens, 2-D RoPE, for 64×64 tiles (16×16 tokens). Patch 4 rather than 8: with 8×8 tokens on a 64-px
tile the FPN head cannot resolve the world's roads and buildings — even end-to-end supervised training of that
architecture reaches only about 52 % GF-2 mIoU (see the model card). RoPE's training-time coordinate
augmentations are off (``pos_embed_rescale: null``); rsmoe runs backbones in eval mode.

Methods (:data:`METHODS`): ``mim`` (masked image modelling, :mod:`rsmoe.pretrain.mim`), ``distill`` (DINO +
iBOT self-distillation, :mod:`rsmoe.pretrain.distill`) and ``xsensor`` (the same self-distillation, but the two
views of a tile are the same ground through two cameras under two lights, and every patch learns the teacher's
view of the same patch in the other rendering). No class labels are used by any. The result is a
``save_pretrained`` folder (``config.json`` + ``model.safetensors``) that ``backbone.kind: dinov3`` +
``backbone.pretrained: <folder>`` loads like a released DINOv3 folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from ..seeding import seeded
from .corpus import build_corpus
from .loop import Schedule, TrainResult, train

BACKBONE_ARCH: dict[str, Any] = dict(
    patch_size=4, hidden_size=96, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
    num_register_tokens=4, image_size=64, pos_embed_rescale=None, use_gated_mlp=False, hidden_act="gelu",
)
METHODS = ("mim", "distill", "xsensor")


def backbone_config(**overrides: Any) -> DINOv3ViTConfig:
    """The shipped backbone's transformers config (``overrides`` replace fields, e.g. for tests)."""
    return DINOv3ViTConfig(**{**BACKBONE_ARCH, **overrides})


def make_objective(method: str, model: DINOv3ViTModel, corpus: Any, steps: int, batch: int) -> torch.nn.Module:
    """The SSL objective ``method`` (one of :data:`METHODS`) around ``model`` on a :class:`~rsmoe.pretrain.corpus.
    Corpus` (``xsensor`` needs a paired corpus)."""
    images = torch.from_numpy(corpus.images)
    if method == "mim":
        from .mim import MaskedImageModelling

        return MaskedImageModelling(model, images, batch=batch)
    if method in ("distill", "xsensor"):
        from .distill import SelfDistillation

        paired = torch.from_numpy(corpus.images2) if method == "xsensor" else None
        return SelfDistillation(model, images, steps=steps, batch=batch, paired=paired)
    raise ValueError(f"unknown pretraining method {method!r}; choose one of {list(METHODS)}")


def pretrain_backbone(method: str, steps: int, batch: int, lr: float, seed: int, corpus_seed: int,
                      acquisitions: int, warmup: int = 100, arch: dict[str, Any] | None = None,
                      log: Callable[[str], None] | None = print) -> tuple[DINOv3ViTModel, TrainResult]:
    """Pretrain a backbone on ``acquisitions`` corpus acquisitions of ``corpus_seed``; weights drawn from ``seed``.

    Returns the model (eval mode) and the run's :class:`~rsmoe.pretrain.loop.TrainResult`.
    """
    corpus = build_corpus(corpus_seed, acquisitions, progress=log is not None, paired=method == "xsensor")
    with seeded(seed):
        model = DINOv3ViTModel(backbone_config(**(arch or {})))
    with seeded(seed + 1):  # heads and decoders: their own draws, after the backbone's
        objective = make_objective(method, model, corpus, steps, batch)
    result = train(objective, Schedule(steps=steps, lr=lr, warmup=warmup), seed=seed, log=log)
    return model.eval(), result


__all__ = ["BACKBONE_ARCH", "METHODS", "backbone_config", "make_objective", "pretrain_backbone"]
