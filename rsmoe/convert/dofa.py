"""``dofa-original`` / ``dofa-torchgeo``: the authors' / TorchGeo's DOFA v1 weights → a ``.safetensors`` of the
backbone tensors whose metadata records the patch-kernel layout and the source file's SHA-256
(:mod:`rsmoe.models.backbones.dofa_weights`); ``backbone.pretrained`` loads it with that layout."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .output import check_output

SOURCES = ("original", "torchgeo")


def convert_dofa(src: str | os.PathLike, out_path: str | os.PathLike, *, source: str = "original",
                 kernel_layout: str | None = None, size: Any = None, force: bool = False) -> Path:
    """DOFA v1 weights → ``out_path`` (``.safetensors``) with exactly the backbone keys that
    :meth:`~rsmoe.models.backbones.dofa.DOFABackbone.from_checkpoint` expects, checked against the model of
    ``size`` (a DOFA size name / config; None = inferred from the shapes). ``kernel_layout`` None = the layout of
    a known release, else ``band_major`` with a warning (see :func:`resolve_kernel_layout`)."""
    from ..models.backbones.dofa import DOFABackbone, dofa_config_for
    from ..models.backbones.dofa_weights import read_dofa_weights, resolve_kernel_layout, write_dofa_weights

    if source not in SOURCES:
        raise ConfigError(f"DOFA source must be one of {list(SOURCES)}, got {source!r}")
    src, out = Path(src), Path(out_path)
    if src.suffix == ".safetensors":
        raise ConfigError(f"{src}: already a converted file; convert the public .pth instead")
    if out.suffix != ".safetensors":
        raise ConfigError(f"{out}: write converted DOFA weights as .safetensors (its metadata stores the kernel "
                          "layout)")
    check_output(out, force=force)
    weights = read_dofa_weights(src)
    layout = resolve_kernel_layout(src, kernel_layout, None, weights.source_sha256)
    config = dofa_config_for(weights.state, size, src, kernel_layout=layout)
    DOFABackbone.check_state_dict(weights.state, config, where=src, strict=True, name=size)
    return write_dofa_weights(out, weights.state, kernel_layout=layout, source=source, source_file=src.name,
                              source_sha256=str(weights.source_sha256))


__all__ = ["SOURCES", "convert_dofa"]
