"""AdamW with the public SpectralMoE configs' no-decay groups and the poly learning-rate schedule (lr ∝
(1 − step/total)^power per iteration, no warm-up; mmengine's ``PolyLR``)."""
from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR, PolynomialLR

from ..config import TrainConfig
from ..models.protocol import SegModel


def parameter_groups(model: SegModel, weight_decay: float) -> list[dict]:
    """Two AdamW groups over the trainable parameters: decayed, and not decayed (``model.no_weight_decay_names()``:
    norms, head query/level embeddings, expert A/B, routers, α)."""
    no_decay = model.no_weight_decay_names()
    decay, keep = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (keep if name in no_decay else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": keep, "weight_decay": 0.0},
    ]


def poly_factor(step: int, total: int, power: float) -> float:
    """lr(step) / lr(0) = (1 − step/total)^power, no warm-up, 0 at the end."""
    return max(0.0, 1.0 - step / max(1, total)) ** power


def build_optimizer(model: SegModel, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, LRScheduler]:
    """AdamW and the ``train.lr_schedule`` scheduler, stepped once per iteration."""
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas),
                                  eps=cfg.eps)
    if cfg.lr_schedule == "multistep":
        return optimizer, MultiStepLR(optimizer, milestones=list(cfg.lr_milestones), gamma=cfg.lr_gamma)
    return optimizer, PolynomialLR(optimizer, total_iters=max(1, cfg.iterations), power=cfg.poly_power)


__all__ = ["build_optimizer", "parameter_groups", "poly_factor"]
