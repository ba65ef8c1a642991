"""Where a run's frozen weights come from, in words a report can print: a local folder or file with the SHA-256 of
its weights, or random weights drawn from a seed."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .io.digest import file_sha256

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def describe_weights(what: str, pretrained: str | None, seed: int | None = None) -> str:
    """One line: ``what`` from ``pretrained`` (folder or file; SHA-256 of its weights) or random from ``seed``."""
    if not pretrained or pretrained == "tiny":
        return f"{what}: random weights (seed {seed}) — no pretraining"
    from .shipped import is_shipped, resolve_weights

    label = f"{pretrained}, shipped with rsmoe: " if is_shipped(pretrained) else ""
    path = Path(resolve_weights(pretrained))
    weights = next((path / n for n in WEIGHT_FILES if (path / n).is_file()), None) if path.is_dir() else path
    if weights is None or not weights.is_file():
        return f"{what}: {path} (weights not found)"
    card = path / "README.md" if path.is_dir() else None
    title = ""
    if card is not None and card.is_file():
        first = card.read_text(encoding="utf-8").splitlines()[:1]
        title = f" — {first[0].lstrip('# ').strip()}" if first else ""
    return f"{what}: {label}{path}{title} (SHA-256 {file_sha256(weights)[:16]}…)"


def weights_provenance(cfg: Any) -> list[str]:
    """Lines for the frozen parts a config uses: backbone, depth encoder (SpectralMoE with depth), text encoder
    (MPerS with guided stages)."""
    lines = [describe_weights(f"backbone ({cfg.backbone.kind})", cfg.backbone.pretrained, cfg.backbone.seed)]
    if cfg.model == "segmentor" and cfg.adapter.type == "spectralmoe" and cfg.depth.enabled:
        lines.append(describe_weights("depth encoder", cfg.depth.pretrained, cfg.depth.seed))
    if cfg.model == "mpers" and cfg.mpers.lqga_stages:
        lines.append(describe_weights("text encoder", cfg.mpers.text_encoder, cfg.mpers.text_encoder_seed))
    return lines


__all__ = ["describe_weights", "weights_provenance"]
