"""Self-distillation with an EMA teacher on a DINOv3 ViT: DINO's image-level loss (arXiv 2104.14294, §3.1) plus
iBOT's masked patch-level loss (arXiv 2111.07832, §3.2), the two objectives DINOv2/DINOv3 combine.

Per step, two views of each tile (random resized crops of 35–100 % of the area, dihedral transforms, mild
photometric changes) go through the teacher (an exponential moving average of the student, no gradient) and,
with a random 10–50 % of their patches replaced by the mask token, through the student. A shared projection head
(MLP → L2-normalised bottleneck → weight-normalised prototypes) turns the CLS token and the patch tokens into
prototype scores. Losses: cross-entropy between the centred, sharpened teacher CLS distribution of one view and
the student's of the other view (DINO), and between teacher and student patch distributions at the masked
positions of the same view (iBOT). Centres are EMAs of the teacher scores; the teacher temperature warms up from
0.04 to 0.07 over the first 30 % of the steps; the EMA momentum follows a cosine from ``momentum`` to 1.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DINOv3ViTModel

from .augment import draw_batch, photometric, random_patch_mask, resized_crop


class ProjectionHead(nn.Module):
    """width → hidden → hidden → bottleneck (L2-normalised) → prototypes (weight-normalised linear, no bias)."""

    def __init__(self, width: int, hidden: int = 256, bottleneck: int = 64, prototypes: int = 1024):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.prototypes = nn.Linear(bottleneck, prototypes, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        z = F.normalize(self.mlp(x), dim=-1)
        return F.linear(z, F.normalize(self.prototypes.weight, dim=-1))


def _cross_entropy(teacher_probs: Tensor, student_logits: Tensor, temperature: float) -> Tensor:
    """Mean over rows of −Σ p_teacher · log softmax(student / T)."""
    return -(teacher_probs * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


class SelfDistillation(nn.Module):
    """The DINO + iBOT objective around ``model`` (the student); see the module docstring."""

    def __init__(self, model: DINOv3ViTModel, images: Tensor, steps: int, batch: int = 32, prototypes: int = 1024,
                 momentum: float = 0.99, student_temp: float = 0.1, mask_ratio: tuple[float, float] = (0.1, 0.5),
                 paired: Tensor | None = None):
        super().__init__()
        cfg = model.config
        self.student = model
        self.head = ProjectionHead(int(cfg.hidden_size), prototypes=prototypes)
        self.teacher = copy.deepcopy(model).requires_grad_(False)
        self.teacher_head = copy.deepcopy(self.head).requires_grad_(False)
        self.images = images
        self.paired = paired
        self.batch = int(batch)
        self.patch = int(cfg.patch_size)
        self.prefix = 1 + int(cfg.num_register_tokens)
        self.momentum = float(momentum)
        self.student_temp = float(student_temp)
        self.mask_ratio = mask_ratio
        self.register_buffer("center_cls", torch.zeros(1, prototypes))
        self.register_buffer("center_patch", torch.zeros(1, prototypes))
        self.steps = int(steps)

    def train(self, mode: bool = True) -> "SelfDistillation":
        super().train(mode)
        self.teacher.train(False)
        self.teacher_head.train(False)
        return self

    def _views(self, g: torch.Generator) -> Tensor:
        """(2B, 3, H, W): view 1 of every tile, then view 2. Unpaired: two independent crops of one rendering.
        Paired: the tile's two renderings (two cameras, two lights) under one and the same crop, so that patch p of
        view 1 and patch p of view 2 show the same ground."""
        size = self.images.shape[-1]
        if self.paired is None:
            (x,) = draw_batch([self.images], self.batch, g)
            return torch.cat([photometric(resized_crop(x, g, (0.35, 1.0), size), g) for _ in range(2)])
        x1, x2 = draw_batch([self.images, self.paired], self.batch, g)
        both = resized_crop(torch.cat([x1, x2], 1), g, (0.35, 1.0), size)
        return torch.cat([photometric(both[:, :3], g), photometric(both[:, 3:], g)])

    def teacher_temp(self, step: int) -> float:
        warm = max(1, int(0.3 * self.steps))
        return 0.04 + (0.07 - 0.04) * min(1.0, step / warm)

    def loss(self, step: int, g: torch.Generator) -> tuple[Tensor, dict]:
        views = self._views(g)
        grid = (views.shape[-2] // self.patch, views.shape[-1] // self.patch)
        ratio = self.mask_ratio[0] + (self.mask_ratio[1] - self.mask_ratio[0]) * float(torch.rand(1, generator=g))
        mask = random_patch_mask(views.shape[0], grid, ratio, g)
        t_temp = self.teacher_temp(step)
        b = self.batch
        # iBOT: masked patches against the teacher's view of the same patch; paired: every patch against the
        # teacher's other rendering of the same ground (a dense cross-camera target)
        where = mask if self.paired is None else torch.ones_like(mask)
        with torch.no_grad():
            t_tokens = self.teacher(pixel_values=views).last_hidden_state
            t_cls = self.teacher_head(t_tokens[:, 0])
            t_patches = t_tokens[:, self.prefix:]
            if self.paired is not None:
                t_patches = torch.cat([t_patches[b:], t_patches[:b]])
            t_patch = self.teacher_head(t_patches[where])
            p_cls = F.softmax((t_cls - self.center_cls) / t_temp, dim=-1)
            p_patch = F.softmax((t_patch - self.center_patch) / t_temp, dim=-1)
        s_tokens = self.student(pixel_values=views, bool_masked_pos=mask).last_hidden_state
        s_cls = self.head(s_tokens[:, 0])
        s_patch = self.head(s_tokens[:, self.prefix:][where])
        swapped = torch.cat([p_cls[b:], p_cls[:b]])  # each view's student learns the other view's teacher
        dino = _cross_entropy(swapped, s_cls, self.student_temp)
        ibot = _cross_entropy(p_patch, s_patch, self.student_temp)
        with torch.no_grad():
            self.center_cls.mul_(0.9).add_(0.1 * t_cls.mean(0, keepdim=True))
            self.center_patch.mul_(0.9).add_(0.1 * t_patch.mean(0, keepdim=True))
            entropy = -(p_cls * p_cls.clamp_min(1e-12).log()).sum(-1).mean()
        return dino + ibot, {"dino": float(dino.detach()), "ibot": float(ibot.detach()),
                             "teacher_entropy": float(entropy)}

    @torch.no_grad()
    def after_step(self, step: int, total: int) -> None:
        """EMA update of the teacher with a cosine momentum schedule from ``momentum`` to 1."""
        m = 1.0 - (1.0 - self.momentum) * 0.5 * (1.0 + math.cos(math.pi * step / max(1, total)))
        for pairs in (zip(self.teacher.parameters(), self.student.parameters()),
                      zip(self.teacher_head.parameters(), self.head.parameters())):
            for t, s in pairs:
                t.mul_(m).add_(s.detach(), alpha=1.0 - m)


__all__ = ["ProjectionHead", "SelfDistillation"]
