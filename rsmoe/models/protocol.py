"""The one contract between a segmentation model and the rest of rsmoe.

The engine (training, evaluation), the optimiser, checkpoints and ``rsmoe predict`` depend only on this protocol;
:class:`~rsmoe.models.segmentor.Segmentor` (frozen / Rein / SpectralMoE) and :class:`~rsmoe.models.mpers.MPerS`
implement it. A *batch* is the dict the data pipeline collates (:func:`rsmoe.engine.data.collate`):

* ``image``: B×C×H×W float32, normalised (:class:`rsmoe.data.normalize.Normalize`);
* ``wavelengths``: B×C (or C) float32 band centres in µm;
* ``mask``: B×H×W int64 class indices, 255 = ignore (training and evaluation batches only);
* ``text``, ``text_mask``: B×M×P×d_t caption embeddings and their B×M×P presence (only for models that read
  captions; :mod:`rsmoe.text.fields` adds them);
* ``tile``, ``domain``: lists of B manifest paths / domain names (bookkeeping; models ignore them).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class SegModel(Protocol):
    """What a model offers the engine, the optimiser, checkpoints and prediction."""

    #: state-dict prefixes of the frozen parts (never trained, never saved)
    frozen_prefixes: tuple[str, ...]
    #: image sides must be a multiple of this (the backbone's patch size)
    input_multiple: int

    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """``{"loss": scalar to back-propagate, "loss_<term>": detached scalars to log, …}``."""

    def predict(self, batch: Mapping[str, Any]) -> Tensor:
        """B×K×H×W class scores at the image size, as used for evaluation and prediction (no ground truth read)."""

    def no_weight_decay_names(self) -> set[str]:
        """Full names of trainable parameters that AdamW must not decay."""

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Every tensor a checkpoint holds: all parameters and buffers outside ``frozen_prefixes``."""


__all__ = ["SegModel"]
