"""One entry point for the model of a config: ``model: segmentor`` (backbone + plug-in + head) or ``model: mpers``."""
from __future__ import annotations

from collections.abc import Sequence

from ..config import Config
from ..registry import Registry
from .protocol import SegModel

#: ``model`` → the builder ``(cfg, num_classes, wavelengths, class_names=…, ignore_index=…, **extra) -> SegModel``
MODELS = Registry("model", {
    "segmentor": "rsmoe.models.segmentor:build_segmentor",
    "mpers": "rsmoe.models.mpers.model:build_mpers",
})


def build_model(cfg: Config, num_classes: int, wavelengths: Sequence[float],
                class_names: Sequence[str] | None = None, ignore_index: int = 255, **extra) -> SegModel:
    """The model of ``cfg`` for images with the given band wavelengths (µm). ``class_names`` (and
    ``ignore_index``) are used by MPerS to write statistics captions; ``extra`` goes to the builder (MPerS:
    ``text_encoder``, ``load_text_encoder``)."""
    return MODELS.get(cfg.model)(cfg, num_classes, list(wavelengths), class_names=class_names,
                                 ignore_index=ignore_index, **extra)


__all__ = ["MODELS", "build_model"]
