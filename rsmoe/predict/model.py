"""The trained model as prediction consumes it, and the user-facing error type."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.normalize import Normalize
from ..errors import PredictError


@dataclass
class PredictionModel:
    """A trained segmentation model plus everything needed to apply it to a scene (built by the checkpoint loader)."""

    model: torch.nn.Module  # forward(image B×C×h×w float32 normalised, wavelengths (C,) µm) -> logits B×K×h×w
    class_names: list[str]
    palette: list[tuple[int, int, int]]
    normalize: Normalize  # the checkpoint's per-band standardisation (the same object evaluation uses)
    wavelengths: list[float]  # µm, per band, in the order the model expects
    band_names: list[str]
    sensor: str | None = None
    ignore_index: int = 255
    multiple_of: int = 1  # tile sides must be a multiple of this (patch size); windows are padded up to it


