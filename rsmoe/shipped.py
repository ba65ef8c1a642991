"""References to the pretrained models shipped inside the rsmoe package (``rsmoe/pretrained/<name>/``).

A config may name them instead of a local path — ``backbone.pretrained: rsmoe:backbone``, ``depth.pretrained:
rsmoe:depth``, ``mpers.text_encoder: rsmoe:clip``, a captions config's ``quality.clip: rsmoe:clip`` — so the same
config works wherever rsmoe is installed. The reference stays symbolic in configs and checkpoints and is resolved
to the installed folder only when the weights are loaded.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import ConfigError, MissingFileError

PREFIX = "rsmoe:"
SHIPPED = ("backbone", "depth", "clip")


def is_shipped(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def shipped_folder(name: str) -> Path:
    """The installed folder of the shipped model ``name`` (``backbone``, ``depth`` or ``clip``)."""
    if name not in SHIPPED:
        raise ConfigError(f"{PREFIX}{name}: no such shipped model; shipped: {', '.join(PREFIX + s for s in SHIPPED)}")
    folder = Path(str(resources.files("rsmoe") / "pretrained" / name))
    if not (folder / "model.safetensors").is_file():
        raise MissingFileError(f"{folder}: the shipped {name} weights are missing (reinstall rsmoe, or rebuild them "
                               f"with `rsmoe pretrain {name} --out {folder}`)")
    return folder


def resolve_weights(value: str | None) -> str | None:
    """``value`` with a ``rsmoe:<name>`` reference replaced by the installed folder; anything else unchanged."""
    return str(shipped_folder(value[len(PREFIX):])) if is_shipped(value) else value


__all__ = ["PREFIX", "SHIPPED", "is_shipped", "resolve_weights", "shipped_folder"]
