"""`rsmoe params`: trainable parameters of a config, per module, without allocating any weights.

The whole Segmentor is built on PyTorch's ``meta`` device (shapes only), so even a ViT-L config counts in seconds
and needs no weights on disk: a ``pretrained`` directory contributes only its ``config.json`` shapes.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from .config import Config
from .errors import CheckpointError, MissingFileError, one_line
from .models.build import build_model
from .shipped import resolve_weights
from .sensors import RGB_CENTRES_UM


#: keys ``save_pretrained`` writes about the file or derives from other fields, not config arguments
SAVE_METADATA = ("model_type", "architectures", "transformers_version", "dtype", "torch_dtype", "stage_names",
                 "_name_or_path")


def _shape_only(section_cfg, what: str) -> None:
    """Replace a pretrained reference by the shapes of its config.json (weights are never read)."""
    if section_cfg.pretrained:
        path = Path(resolve_weights(section_cfg.pretrained))
        if not path.exists():
            raise MissingFileError(f"{what}.pretrained: {path} not found")
        cfg_file = path / "config.json" if path.is_dir() else None
        if cfg_file is not None and cfg_file.is_file():
            try:
                saved = {k: v for k, v in json.loads(cfg_file.read_text()).items() if k not in SAVE_METADATA}
                section_cfg.config = {**saved, **section_cfg.config}
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise CheckpointError(f"{cfg_file}: not a readable config.json ({one_line(exc)})") from None
        elif cfg_file is not None:
            raise MissingFileError(f"{what}.pretrained: {path} has no config.json; expected a transformers model "
                                   "folder")
        section_cfg.pretrained = None


def meta_model(cfg: Config, num_classes: int, wavelengths: list[float] | None = None):
    cfg = copy.deepcopy(cfg)
    _shape_only(cfg.backbone, "backbone")
    if cfg.depth.enabled:
        _shape_only(cfg.depth, "depth")
    cfg.depth.pretrained = None
    text_encoder = None
    if cfg.model == "mpers" and cfg.mpers.text_dim is None and cfg.mpers.lqga_stages:
        from .text.encoders import text_encoder_for  # d_t comes from the encoder: load it (frozen, not counted)

        text_encoder = text_encoder_for(cfg.mpers)
    with torch.device("meta"):
        return build_model(cfg, num_classes, wavelengths or list(RGB_CENTRES_UM), load_text_encoder=False,
                           text_encoder=text_encoder)


def count_parameters(cfg: Config, num_classes: int = 24) -> dict:
    model = meta_model(cfg, num_classes)
    per_module = model.trainable_parameter_counts()
    total = sum(per_module.values())
    head = per_module.get("head", 0)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {"per_module": per_module, "total": total, "head": head, "total_excluding_head": total - head,
            "frozen": frozen}


def format_counts(counts: dict) -> str:
    lines = [f"{'module':<28} {'trainable':>14}"]
    for name, n in sorted(counts["per_module"].items()):
        if name != "head":  # the head has its own line below
            lines.append(f"{name:<28} {n:>14,}")
    lines.append(f"{'total (excluding head)':<28} {counts['total_excluding_head']:>14,}")
    lines.append(f"{'head':<28} {counts['head']:>14,}")
    lines.append(f"{'total trainable':<28} {counts['total']:>14,}")
    lines.append(f"{'frozen (backbone, depth)':<28} {counts['frozen']:>14,}")
    return "\n".join(lines)
