"""``rsmoe pretrain depth``: the shipped monocular height model in the Depth Anything architecture.

Architecture (:func:`depth_config`): ``DepthAnythingForDepthEstimation`` — a DINOv2 encoder with exactly the
shipped backbone's patch size, width and number of blocks (SpectralMoE pairs VFM block ℓ with depth block ℓ,
so :class:`~rsmoe.models.backbones.depth.DepthEncoder` needs no kernel resize), taps after every block for the DPT
neck (reassemble factors 2, 1, ½, ¼: on the 16×16 token grid of a 64-px tile the finest neck map is 32×32 and
the fused output 64×64, the input size), and the metric head (sigmoid × ``max_depth`` = 80 m).

Training: supervised regression of the corpus height field (metres above the tile's lowest ground point) from the
standardised RGB tile — mean squared error in units of 10 m — with dihedral transforms (applied to image and
heights together) and mild photometric changes. No class labels are used.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

from ..seeding import seeded
from .augment import draw_batch, photometric
from .backbone import BACKBONE_ARCH
from .corpus import build_corpus
from .loop import Schedule, TrainResult, train

HEIGHT_UNIT_M = 10.0
DEPTH_HEAD: dict[str, Any] = dict(
    reassemble_factors=[2, 1, 0.5, 0.25], neck_hidden_sizes=[24, 48, 96, 96], fusion_hidden_size=48,
    head_hidden_size=32, depth_estimation_type="metric", max_depth=80,
)


def depth_config(**encoder_overrides: Any) -> DepthAnythingConfig:
    """The shipped height model's config: encoder sized like :data:`~rsmoe.pretrain.backbone.BACKBONE_ARCH`
    (``encoder_overrides`` replace DINOv2 fields, e.g. for tests)."""
    a = {**BACKBONE_ARCH, **encoder_overrides}
    layers = int(a["num_hidden_layers"])
    encoder = Dinov2Config(
        hidden_size=a["hidden_size"], num_hidden_layers=layers, num_attention_heads=a["num_attention_heads"],
        mlp_ratio=a["intermediate_size"] // a["hidden_size"], patch_size=a["patch_size"], image_size=a["image_size"],
        out_indices=list(range(1, layers + 1))[-4:], reshape_hidden_states=False, apply_layernorm=True,
    )
    return DepthAnythingConfig(backbone_config=encoder, patch_size=a["patch_size"],
                               reassemble_hidden_size=a["hidden_size"], **DEPTH_HEAD)


class HeightRegression(nn.Module):
    """Regress corpus heights (N, H, W metres) from corpus images (N, 3, H, W standardised) with ``model``."""

    def __init__(self, model: DepthAnythingForDepthEstimation, images: Tensor, heights: Tensor, batch: int = 32):
        super().__init__()
        self.model = model
        self.images = images
        self.heights = heights
        self.batch = int(batch)

    def loss(self, step: int, g: torch.Generator) -> tuple[Tensor, dict]:
        x, h = draw_batch([self.images, self.heights], self.batch, g)
        pred = self.model(pixel_values=photometric(x, g)).predicted_depth
        mse = (pred - h).div(HEIGHT_UNIT_M).pow(2).mean()
        return mse, {"rmse_m": float(mse.detach().sqrt()) * HEIGHT_UNIT_M}


@torch.no_grad()
def predict_heights(model: DepthAnythingForDepthEstimation, images: Tensor, batch: int = 64) -> Tensor:
    """Heights (N, H, W) in metres predicted for standardised images (N, 3, H, W)."""
    model.eval()
    return torch.cat([model(pixel_values=images[i:i + batch]).predicted_depth
                      for i in range(0, images.shape[0], batch)])


def pretrain_depth(steps: int, batch: int, lr: float, seed: int, corpus_seed: int, acquisitions: int,
                   warmup: int = 100, encoder: dict[str, Any] | None = None,
                   log: Callable[[str], None] | None = print
                   ) -> tuple[DepthAnythingForDepthEstimation, TrainResult, float]:
    """Train the height model on ``acquisitions`` corpus acquisitions of ``corpus_seed``; weights from ``seed``.

    Returns the model (eval mode), the run's result and the mean training height in metres (the baseline).
    """
    corpus = build_corpus(corpus_seed, acquisitions, progress=log is not None)
    with seeded(seed):
        model = DepthAnythingForDepthEstimation(depth_config(**(encoder or {})))
    objective = HeightRegression(model, torch.from_numpy(corpus.images), torch.from_numpy(corpus.heights), batch)
    result = train(objective, Schedule(steps=steps, lr=lr, warmup=warmup), seed=seed, log=log)
    return model.eval(), result, float(corpus.heights.mean(dtype=np.float64))


__all__ = ["DEPTH_HEAD", "HEIGHT_UNIT_M", "HeightRegression", "depth_config", "predict_heights", "pretrain_depth"]
