"""rsmoe checkpoints: only the trainable tensors (plug-in + head) as safetensors, with what is needed to rebuild.

The file's metadata holds the format and its version, the run config (JSON), class names, palette, the
normalisation statistics (:class:`rsmoe.data.normalize.Normalize`: the training split's per-band mean and std),
band wavelengths (µm) and names, the sensor key and the training step. The frozen backbone and depth weights are
never copied: the config references them (a local path, or the seed of the random initialisation used by tests
and the demo), so loading rebuilds them exactly.

Versions (``format_version``): 1 — the first release (``format`` = ``rsmoe-checkpoint-v1``); 2 — every model's
decoder is an ordinary decode head (``model: mpers`` tensors ``decoder.*`` → ``head.*``). Older files are migrated when read
(:data:`MIGRATIONS`), so a saved model keeps loading after the code moves on; a newer file than this rsmoe knows
is refused with a one-line message.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..config import Config, config_from_dict
from ..data.normalize import Normalize
from ..errors import CheckpointError, MissingFileError, OutputError, one_line
from ..io.atomic import atomic_path
from ..io.writable import describe
from ..models.build import build_model
from ..models.protocol import SegModel

FORMAT = "rsmoe-checkpoint"
FORMAT_VERSION = 2
LEGACY_FORMATS = {"rsmoe-checkpoint-v1": 1}


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

    def normalizer(self) -> Normalize:
        """The per-band standardisation the model was trained with (used by evaluation and ``rsmoe predict``)."""
        return Normalize(self.mean, self.std)

    def to_strings(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
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
        try:
            config = config_from_dict(json.loads(meta["config"]))
            return cls(
                config=config, class_names=json.loads(meta["class_names"]), palette=json.loads(meta["palette"]),
                mean=json.loads(meta["mean"]), std=json.loads(meta["std"]),
                wavelengths=json.loads(meta["wavelengths"]), band_names=json.loads(meta.get("band_names", "[]")),
                sensor=meta.get("sensor") or None, ignore_index=int(meta.get("ignore_index", 255)),
                step=int(meta.get("step", 0)),
            )
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: damaged rsmoe metadata ({one_line(exc)})") from None


def checkpoint_version(meta: dict[str, str], path: Path) -> int:
    """The format version of a checkpoint's metadata (legacy names included); refuses other files."""
    fmt = meta.get("format")
    if fmt in LEGACY_FORMATS:
        return LEGACY_FORMATS[fmt]
    if fmt != FORMAT:
        raise CheckpointError(f"{path}: not an rsmoe checkpoint (format {fmt!r}, expected {FORMAT!r})")
    version = int(meta.get("format_version", "0") or 0)
    if not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version}, this rsmoe reads 1..{FORMAT_VERSION}; "
                              "upgrade rsmoe")
    return version


def _v1_to_v2(tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    if config.get("model") == "mpers":
        for key in [k for k in tensors if k.startswith("decoder.")]:
            tensors["head." + key[len("decoder."):]] = tensors.pop(key)


#: version v → the step that turns a v file's tensors and config dict into v + 1's (in place)
MIGRATIONS: dict[int, Callable[[dict[str, torch.Tensor], dict[str, Any]], None]] = {1: _v1_to_v2}


def migrate(tensors: dict[str, torch.Tensor], meta: dict[str, str], path: Path) -> dict[str, str]:
    """Bring a checkpoint's tensors (in place) and metadata up to :data:`FORMAT_VERSION`."""
    version = checkpoint_version(meta, path)
    try:
        config = json.loads(meta["config"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged rsmoe metadata ({one_line(exc)})") from None
    for v in range(version, FORMAT_VERSION):
        MIGRATIONS[v](tensors, config)
    return {**meta, "format": FORMAT, "format_version": str(FORMAT_VERSION), "config": json.dumps(config)}


def save_checkpoint(model: SegModel, meta: CheckpointMeta, path: str | Path) -> Path:
    """Write the trainable tensors + metadata to ``path`` atomically (temporary file, fsync, rename; mode 0644).
    A failed write is a one-line :class:`OutputError` and leaves an earlier file at ``path`` as it was."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta.to_strings())
    except OSError as exc:
        raise OutputError(f"could not write {path}: {describe(exc)}; an earlier file there is kept") from None
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Tensors and metadata of a checkpoint, migrated to the current format."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":  # a zip: torch.save's format, i.e. Lightning's last.ckpt
            raise CheckpointError(f"{path}: a training checkpoint (last.ckpt), not the model's weights; give the "
                                  "run's model.safetensors (last.ckpt only resumes training: train.resume)")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({one_line(exc)})") from None
    return tensors, CheckpointMeta.from_strings(migrate(tensors, raw, path), path)


def load_trainable(model: SegModel, tensors: dict[str, torch.Tensor], path: str | Path = "checkpoint") -> None:
    """Load plug-in + head tensors; every trainable tensor must be present with the right shape."""
    expected = model.trainable_state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not fit this model: missing keys {missing[:5]}"
                              f"{'…' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
                              f"{'…' if len(unexpected) > 5 else ''}")
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(f"{path}: {key} has shape {tuple(value.shape)}, the model expects "
                                  f"{tuple(expected[key].shape)}")
    model.load_state_dict(tensors, strict=False)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[SegModel, CheckpointMeta]:
    """Rebuild the model of a checkpoint (frozen weights from the config's references) and load its tensors."""
    tensors, meta = read_checkpoint(path)
    model = build_model(meta.config, len(meta.class_names), meta.wavelengths, class_names=meta.class_names,
                        ignore_index=meta.ignore_index, load_adapter_pretrained=False)
    load_trainable(model, tensors, path)
    return model.to(map_location).eval(), meta


class EvaluationForward(torch.nn.Module):
    """``forward(image, wavelengths)`` = the model's evaluation-time ``predict`` (caption-guided models: with their
    own captions)."""

    def __init__(self, model: SegModel):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
        return self.model.predict({"image": image, "wavelengths": wavelengths})


def load_prediction_model(path: str | Path, device: str = "cpu"):
    """The checkpoint as the :class:`rsmoe.predict.PredictionModel` that ``rsmoe predict`` consumes, with the
    file's SHA-256 and run config (recorded in every summary, checked by ``--resume``).

    ``min_size`` is two patches: the feature pyramid of every rsmoe model has a level at half the patch grid,
    which a one-patch input would shrink to nothing."""
    from ..predict import PredictionModel
    from ..io.digest import file_sha256

    model, meta = load_checkpoint(path, device)
    return PredictionModel(
        model=EvaluationForward(model), class_names=meta.class_names, palette=[tuple(c) for c in meta.palette],
        normalize=meta.normalizer(), wavelengths=meta.wavelengths, band_names=meta.band_names, sensor=meta.sensor,
        ignore_index=meta.ignore_index, multiple_of=model.input_multiple, min_size=2 * model.input_multiple,
        source_path=str(path), source_sha256=file_sha256(Path(path)), config_json=meta.config.to_json(),
    )


__all__ = ["FORMAT", "FORMAT_VERSION", "MIGRATIONS", "CheckpointMeta", "EvaluationForward", "checkpoint_version",
           "load_checkpoint", "load_prediction_model", "load_trainable", "migrate", "read_checkpoint",
           "save_checkpoint"]
