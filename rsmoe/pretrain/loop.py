"""The plain-torch training loop every pretraining recipe shares: AdamW, linear warm-up then cosine decay, gradient
clipping, deterministic batches from a seeded ``torch.Generator``, and a timed log.

A recipe supplies an *objective*: an ``nn.Module`` whose trainable parameters are optimised and which provides
``loss(step, generator) -> (loss tensor, {name: float})`` (it draws its own batch with the generator) and, optionally,
``after_step(step, total)`` (e.g. an EMA teacher update).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass
class Schedule:
    """Optimiser settings of a recipe: ``steps`` updates, peak ``lr`` after ``warmup`` steps, cosine to
    ``lr * final_lr_ratio``; AdamW ``weight_decay`` (not on biases, norms and 1-D parameters); ``clip`` max norm."""

    steps: int
    lr: float
    warmup: int = 100
    final_lr_ratio: float = 0.05
    weight_decay: float = 0.05
    clip: float = 1.0

    def factor(self, step: int) -> float:
        """lr(step) / lr at 0-based ``step``."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.final_lr_ratio + (1.0 - self.final_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(module: nn.Module, schedule: Schedule) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on parameters with fewer than two dimensions and on
    token embeddings (CLS, register, mask tokens)."""
    decay, keep = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (keep if p.ndim < 2 or name.endswith("_token") or name.endswith("_tokens") else decay).append(p)
    groups = [{"params": decay, "weight_decay": schedule.weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=schedule.lr, betas=(0.9, 0.95))


@dataclass
class TrainResult:
    """What a run did: ``steps`` done, ``seconds`` of wall time, the last logged values and the loss curve
    (``history``: (step, loss) every ``log_every`` steps)."""

    steps: int
    seconds: float
    last: dict
    history: list


def train(objective: nn.Module, schedule: Schedule, seed: int, log_every: int = 50,
          log: Callable[[str], None] | None = print, steps: int | None = None) -> TrainResult:
    """Run ``steps`` (default ``schedule.steps``) optimisation steps of ``objective`` from ``seed``.

    Deterministic on the CPU: batches, masks and augmentations come from one ``torch.Generator`` seeded with
    ``seed``, and torch's global generator (dropout, RoPE jitter) is seeded with it too.
    """
    total = schedule.steps if steps is None else int(steps)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(objective, schedule)
    params = [p for p in objective.parameters() if p.requires_grad]
    objective.train()
    start = time.perf_counter()
    history, last = [], {}
    for step in range(total):
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr * schedule.factor(step)
        loss, logs = objective.loss(step, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, schedule.clip)
        optimizer.step()
        if hasattr(objective, "after_step"):
            objective.after_step(step, schedule.steps)
        last = {"loss": float(loss.detach()), **logs}
        if step % log_every == 0 or step == total - 1:
            history.append((step, last["loss"]))
            if log is not None:
                extra = " ".join(f"{k} {v:.4g}" for k, v in logs.items())
                log(f"step {step + 1}/{total} loss {last['loss']:.4f} {extra} "
                    f"({time.perf_counter() - start:.0f} s)")
    objective.eval()
    return TrainResult(total, time.perf_counter() - start, last, history)


__all__ = ["Schedule", "TrainResult", "make_optimizer", "train"]
