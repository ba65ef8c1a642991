"""One entry point for the model of a config: ``model: segmentor`` (backbone + plug-in + head) or ``model: mpers``."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..config import Config
from ..errors import ConfigError

MODELS = ("segmentor", "mpers")


def build_model(cfg: Config, num_classes: int, wavelengths: Sequence[float],
                class_names: Sequence[str] | None = None, ignore_index: int = 255, **mpers_kwargs) -> nn.Module:
    """The model of ``cfg`` for images with the given band wavelengths (µm). ``class_names`` (and
    ``ignore_index``) are used by MPerS to write statistics captions; ``mpers_kwargs`` go to
    :func:`~rsmoe.models.mpers.model.build_mpers` (``text_encoder``, ``load_text_encoder``)."""
    if cfg.model == "segmentor":
        from .segmentor import build_segmentor

        return build_segmentor(cfg, num_classes, list(wavelengths), ignore_index=ignore_index)
    if cfg.model == "mpers":
        from .mpers.model import build_mpers

        return build_mpers(cfg, num_classes, wavelengths, class_names=class_names, ignore_index=ignore_index,
                           **mpers_kwargs)
    raise ConfigError(f"model: got {cfg.model!r}, expected one of {list(MODELS)}")


__all__ = ["MODELS", "build_model"]
