"""``dofa-original`` / ``dofa-torchgeo``: the authors' / TorchGeo's DOFA v1 weights → a normalised tensors-only
``.pth``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .loading import _prepare_output, load_torch_file


# ================================================================================================================
# DOFA (authors' / TorchGeo) → normalised tensors-only .pth
# ================================================================================================================
def convert_dofa(src: str | os.PathLike, out_path: str | os.PathLike, *, source: str = "original",
                 kernel_layout: str | None = None, size: Any = None, force: bool = False) -> Path:
    """DOFA v1 weights → a bare ``{key: tensor}`` ``.pth`` with exactly the backbone keys that
    :meth:`DOFABackbone.from_checkpoint` expects; loaded once through it (with ``size``: a DOFA size name /
    config, None = inferred from the shapes) to check names and shapes."""
    from ..models.backbones.dofa import IGNORED_KEY_PREFIXES, IGNORED_KEYS, DOFABackbone, _unwrap_state_dict

    if source not in ("original", "torchgeo"):
        raise ValueError(f"source must be 'original' or 'torchgeo', got {source!r}")
    src, out = Path(src), Path(out_path)
    loaded = load_torch_file(src, f"DOFA checkpoint ({source})")
    state = _unwrap_state_dict(loaded, src)
    kept = {k: v.contiguous() for k, v in state.items()
            if not (k.startswith(IGNORED_KEY_PREFIXES) or k in IGNORED_KEYS)}
    _prepare_output(out, directory=False, force=force)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        torch.save(kept, tmp)
        DOFABackbone.from_checkpoint(tmp, size=size, kernel_layout=kernel_layout)  # validates keys and shapes
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
