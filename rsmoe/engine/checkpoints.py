"""rsmoe checkpoints: only the trainable tensors (plug-in + head) as safetensors, with what is needed to rebuild.

The file's metadata holds the run config (JSON), class names, palette, normalisation statistics, band wavelengths
(µm) and names, the sensor key and the training step. The frozen backbone and depth weights are never copied: the
config references them (a local path, or the seed of the random initialisation used by tests and the demo), so
loading rebuilds them exactly.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..config import Config, config_from_dict
from ..models.build import build_model
from ..models.segmentor import FROZEN_PREFIXES, Segmentor

FORMAT = "rsmoe-checkpoint-v1"


@dataclass
class CheckpointMeta:
    config: Config
    class_names: list[str]
    palette: list[list[int]]
    mean: list[float]
    std: list[float]
    wavelengths: list[float]
    band_names: list[str] = field(default_factory=list)
    sensor: str | None = None
    ignore_index: int = 255
    step: int = 0

    def to_strings(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "config": self.config.to_json(),
            "class_names": json.dumps(self.class_names),
            "palette": json.dumps(self.palette),
            "mean": json.dumps(self.mean),
            "std": json.dumps(self.std),
            "wavelengths": json.dumps(self.wavelengths),
            "band_names": json.dumps(self.band_names),
            "sensor": self.sensor or "",
            "ignore_index": str(self.ignore_index),
            "step": str(self.step),
        }

    @classmethod
    def from_strings(cls, meta: dict[str, str], path: Path) -> "CheckpointMeta":
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not an rsmoe checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})")
        return cls(
            config=config_from_dict(json.loads(meta["config"])),
            class_names=json.loads(meta["class_names"]),
            palette=json.loads(meta["palette"]),
            mean=json.loads(meta["mean"]),
            std=json.loads(meta["std"]),
            wavelengths=json.loads(meta["wavelengths"]),
            band_names=json.loads(meta.get("band_names", "[]")),
            sensor=meta.get("sensor") or None,
            ignore_index=int(meta.get("ignore_index", 255)),
            step=int(meta.get("step", 0)),
        )


def save_checkpoint(model: Segmentor, meta: CheckpointMeta, path: str | Path) -> Path:
    """Write the trainable tensors + metadata to ``path`` (via a temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=meta.to_strings())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    return tensors, CheckpointMeta.from_strings(meta, path)


def load_trainable(model: Segmentor, tensors: dict[str, torch.Tensor], path: str | Path = "checkpoint") -> None:
    """Load plug-in + head tensors; every trainable tensor must be present with the right shape."""
    expected = model.trainable_state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: missing keys {missing[:5]}{'…' if len(missing) > 5 else ''}, "
                         f"unexpected keys {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}")
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, model expects {tuple(expected[key].shape)}")
    model.load_state_dict(tensors, strict=False)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Segmentor, CheckpointMeta]:
    """Rebuild the Segmentor of a checkpoint (frozen weights from the config's references) and load its tensors."""
    tensors, meta = read_checkpoint(path)
    model = build_model(meta.config, len(meta.class_names), meta.wavelengths, class_names=meta.class_names,
                        ignore_index=meta.ignore_index)
    load_trainable(model, tensors, path)
    assert not any(k.startswith(FROZEN_PREFIXES) for k in tensors)
    return model.to(map_location).eval(), meta


class EvaluationForward(torch.nn.Module):
    """``forward(image, wavelengths)`` = the model's evaluation-time ``predict`` (MPerS: with its own captions)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
        return self.model.predict(image, wavelengths)


def load_prediction_model(path: str | Path, device: str = "cpu"):
    """The checkpoint as the :class:`rsmoe.predict.PredictionModel` that ``rsmoe predict`` consumes."""
    from ..predict import PredictionModel

    model, meta = load_checkpoint(path, device)
    return PredictionModel(
        model=EvaluationForward(model), class_names=meta.class_names, palette=[tuple(c) for c in meta.palette], mean=meta.mean,
        std=meta.std, wavelengths=meta.wavelengths, band_names=meta.band_names, sensor=meta.sensor,
        ignore_index=meta.ignore_index, multiple_of=model.backbone.patch_size,
    )
