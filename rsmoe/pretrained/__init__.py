"""The pretrained stand-ins shipped with rsmoe (weights, config and model card per folder).

* ``backbone/`` — a small ViT in the transformers DINOv3 architecture, self-supervised on the synthetic world's
  RGB corpus (``backbone.kind: dinov3``, ``backbone.pretrained: <folder>``);
* ``depth/`` — a small Depth Anything-architecture height model whose encoder matches the backbone block for
  block (``depth.pretrained: <folder>``);
* ``clip/`` — a small CLIP pair with its tokenizer (``mpers.text_encoder: <folder>``, the caption check's
  ``quality.clip: <folder>``).

They are not DINOv3, Depth Anything or OpenAI CLIP: see each folder's ``README.md`` for the recipe (``rsmoe pretrain
…``), the SHA-256 of the weights and the measured quality.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

SHIPPED = ("backbone", "depth", "clip")


def shipped_model(name: str) -> Path:
    """The installed folder of a shipped model (``backbone``, ``depth`` or ``clip``)."""
    if name not in SHIPPED:
        raise ValueError(f"no shipped model {name!r}; shipped: {', '.join(SHIPPED)}")
    folder = Path(str(resources.files("rsmoe") / "pretrained" / name))
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder}: the shipped {name} weights are missing (reinstall rsmoe, or rebuild them "
                                f"with `rsmoe pretrain {name} --out {folder}`)")
    return folder


__all__ = ["SHIPPED", "shipped_model"]
