"""The decode-head contract, and the base of every head that predicts one logit map.

Every head in rsmoe has the same three calls:

* ``out = head(features, query_pos=None)``: four maps B×C_i×H_i×W_i, fine to coarse (strides 4, 8, 16, 32 of the
  image for a patch-16 backbone) → the head's raw output (a logit map, or Mask2Former's dict);
* ``head.loss(out, mask) -> {"loss": total, …detached terms}`` against a B×H×W int64 mask (255 = ignore);
* ``head.predict(out, size) -> B×K×H×W`` class scores at the image size.

``query_pos`` is consumed only by heads with queries (Mask2Former, from SpectralMoE's query link).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PixelHead(nn.Module):
    """A head whose output is one B×K×h×w logit map at the finest feature level's stride: predictions are its
    bilinear upsampling to the image size, the loss is pixel-wise cross-entropy there (ignore index excluded; a
    batch with no labelled pixel gives an exact 0 that still has a gradient path)."""

    def __init__(self, ignore_index: int = 255):
        super().__init__()
        self.ignore_index = ignore_index

    def predict(self, out: Tensor, size: tuple[int, int]) -> Tensor:
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)

    def loss(self, out: Tensor, mask: Tensor) -> dict[str, Tensor]:
        logits = self.predict(out, mask.shape[-2:])
        if (mask != self.ignore_index).any():
            ce = F.cross_entropy(logits, mask, ignore_index=self.ignore_index)
        else:
            ce = logits.sum() * 0.0
        return {"loss": ce, "loss_ce": ce.detach()}


__all__ = ["PixelHead"]
