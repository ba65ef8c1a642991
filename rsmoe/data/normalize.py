"""Per-band standardisation, the one place where raw pixel values become model inputs.

A prepared dataset stores raw values (DN, reflectance × 10000, 8-bit colour …) and records the training split's
per-band mean and standard deviation in ``dataset.yaml``. :class:`Normalize` maps raw values ``x`` to

    n = (x − mean) / std′,   std′ = std where std > 0, else 1,

in float32, band by band. The guard matters for a band that is constant over the training split (std = 0, e.g. an
empty alpha or elevation band): it becomes ``x − mean`` (0 for the training value) instead of ±inf or NaN.

The same object, rebuilt from a checkpoint's metadata, normalises the evaluation tiles and the windows of
``rsmoe predict``, so training, evaluation and whole-scene prediction see identical values. Training transforms
(resize, crop, flip, photometric distortion) run on raw values *before* it, as mmsegmentation's pipeline does, and
padding after it (pad value 0 = the band mean).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError


class Normalize:
    """``n = (x − mean) / std′`` per band (see the module docstring); bands are axis −3 (C×H×W or B×C×H×W)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        mean_l, std_l = [float(v) for v in mean], [float(v) for v in std]
        if not mean_l or len(mean_l) != len(std_l):
            raise ConfigError(f"normalisation: mean has {len(mean_l)} values and std {len(std_l)}; expected one "
                              "of each per band")
        bad = [v for v in mean_l + std_l if not math.isfinite(v)] + [v for v in std_l if v < 0]
        if bad:
            raise ConfigError(f"normalisation statistics must be finite with std ≥ 0, got {bad[:3]}")
        self.mean = np.asarray(mean_l, dtype=np.float32)
        self.std = np.asarray(std_l, dtype=np.float32)
        self.divisor = np.where(self.std > 0, self.std, np.float32(1.0)).astype(np.float32)

    @property
    def num_bands(self) -> int:
        return int(self.mean.shape[0])

    def _stats_like(self, x: Any) -> tuple[Any, Any]:
        if x.shape[-3] != self.num_bands:
            raise ValueError(f"normalisation: image has {x.shape[-3]} bands, the statistics have {self.num_bands}")
        if isinstance(x, torch.Tensor):
            mean = torch.from_numpy(self.mean).to(x.device)[:, None, None]
            return mean, torch.from_numpy(self.divisor).to(x.device)[:, None, None]
        return self.mean[:, None, None], self.divisor[:, None, None]

    def apply(self, x: Any) -> Any:
        """Normalised float32 copy of a raw C×H×W or B×C×H×W array or tensor."""
        x = x.float() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
        mean, divisor = self._stats_like(x)
        return (x - mean) / divisor

    def apply_(self, x: np.ndarray) -> np.ndarray:
        """Normalise a float32 numpy array in place (the hot path of whole-scene prediction); returns it."""
        if x.dtype != np.float32:
            raise TypeError(f"apply_ needs a float32 array, got {x.dtype}")
        mean, divisor = self._stats_like(x)
        x -= mean
        x /= divisor
        return x

    def invert(self, n: Any) -> Any:
        """Raw values of a normalised array or tensor (for display)."""
        mean, divisor = self._stats_like(n)
        return n * divisor + mean

    def __call__(self, sample: dict) -> dict:
        sample["image"] = self.apply(sample["image"])
        return sample

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Sequence[float]]) -> "Normalize":
        return cls(data["mean"], data["std"])

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


__all__ = ["Normalize"]
