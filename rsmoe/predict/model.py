"""The trained model as prediction consumes it (with what the class map derives from it), and the user-facing
error type."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.normalize import Normalize
from ..errors import PredictError


@dataclass
class PredictionModel:
    """A trained segmentation model plus everything needed to apply it to a scene (built by
    :func:`rsmoe.engine.checkpoints.load_prediction_model`; tests build it from any ``nn.Module``)."""

    model: torch.nn.Module  # forward(image B×C×h×w float32 normalised, wavelengths (C,) µm) -> logits B×K×h×w
    class_names: list[str]
    palette: list[tuple[int, int, int]]
    normalize: Normalize  # the checkpoint's per-band standardisation (the same object evaluation uses)
    wavelengths: list[float]  # µm, per band, in the order the model expects
    band_names: list[str]
    sensor: str | None = None
    ignore_index: int = 255
    multiple_of: int = 1  # window sides are padded up to a multiple of this (the patch size)
    min_size: int = 1  # smallest window side (px) the model accepts; smaller windows are padded up to it
    source_path: str | None = None  # the checkpoint file the model came from (None: built in memory)
    source_sha256: str | None = None  # its SHA-256 (hex), recorded in every summary and checked by --resume
    config_json: str | None = None  # the run config stored in the checkpoint (JSON), recorded in every summary

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def nodata_value(self) -> int:
        """The class map's no-data value: ``ignore_index`` if it is a uint8 value no class uses, else 255."""
        k = self.num_classes
        if k > 255:
            raise PredictError(f"{k} classes do not fit a uint8 class map (at most 255)")
        ig = int(self.ignore_index)
        return ig if k <= ig <= 255 else 255

    @property
    def class_colours(self) -> list[tuple[int, int, int]]:
        """One RGB colour per class: the checkpoint's palette, extended by fixed random colours if it is short."""
        pal = [tuple(int(v) for v in c[:3]) for c in self.palette[: self.num_classes]]
        rng = np.random.default_rng(0)
        while len(pal) < self.num_classes:
            pal.append(tuple(int(v) for v in rng.integers(0, 256, 3)))
        return pal  # type: ignore[return-value]


__all__ = ["PredictError", "PredictionModel"]
