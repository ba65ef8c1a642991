"""DOFA v1 weight files: the public releases, rsmoe's converted file, and which patch-kernel layout each needs.

**Kernel layout.** DOFA's weight generator returns, per band, a row of ``p·p·D`` numbers (p = patch size, D =
width). How that ``C × (p·p·D)`` matrix becomes the ``D × C × p × p`` conv weight changed in 2024:

- ``legacy`` — the first public code (github.com/zhu-xlab/DOFA, and TorchGeo's ``torchgeo/models/dofa.py`` as
  added in PR #1903, 2024-03-25) *viewed* the matrix as ``D × C × p × p``, which scatters every band over many
  output channels.
- ``band_major`` — the fix: view it as ``C × p × p × D`` and permute to ``D × C × p × p``. TorchGeo PR #2256
  ("DOFA: fix bug in patch embedding", opened 2024-08-27, merged 2024-09-01) made this change and replaced its
  weight files, whose names end in the first 8 hex digits of their SHA-256 (torch.hub's convention): pre-fix
  ``dofa_base_patch16_224-7cc0f413.pth`` / ``dofa_large_patch16_224-fbd47fa9.pth``, post-fix
  ``-a0275954.pth`` / ``-0ff904d3.pth``. The authors made the same change in their code (zhu-xlab/DOFA commit
  d77aae0, ``pretraining/wave_dynamic_layer.py``: ``view(inplanes, k, k, D).permute(3, 0, 1, 2)``), retrained,
  and re-uploaded ``DOFA_ViT_base_e100.pth`` on 2024-08-30 and ``DOFA_ViT_large_e100.pth`` on 2024-09-01 to the
  Hugging Face repository XShadow/DOFA (also reachable as earthflow/DOFA); their README asks users of the new
  weights to use the new ``wave_dynamic_layer.py``.

Both kinds of file have the same keys and shapes, so only the file's hash tells them apart. Hence:

- a file whose SHA-256 is a known post-fix release (:data:`POST_FIX_SHA256`, :data:`POST_FIX_TORCHGEO_PREFIXES`)
  is ``band_major``; a known pre-fix TorchGeo file (:data:`PRE_FIX_TORCHGEO_PREFIXES`) is ``legacy``;
- any other file defaults to ``band_major`` (right for every download since September 2024) with a one-line
  warning; pass ``kernel_layout: legacy`` for an older download;
- ``rsmoe convert dofa-*`` writes a ``.safetensors`` file whose metadata stores the layout and the source file's
  SHA-256 (:data:`METADATA_KEYS`), and loading that file honours the stored layout.

**Keys.** The authors' file is a bare state dict with the backbone keys plus the pre-training extras
``mask_token``, ``norm.*``, ``projector.*``; TorchGeo's files hold the backbone keys only; fine-tuned classifiers add
``fc_norm.*`` / ``head.*``. The extras are dropped here (:data:`IGNORED_KEY_PREFIXES`, :data:`IGNORED_KEYS`).
"""
from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from ...errors import CheckpointError
from ...io import digest
from ...io.atomic import atomic_path
from ...io.torch_files import read_safetensors, read_state_dict

KERNEL_LAYOUTS = ("band_major", "legacy")
#: Prefixes / names in public checkpoints that are not part of the backbone (pre-training or classification).
IGNORED_KEY_PREFIXES = ("head.", "fc_norm.", "norm.", "projector.")
IGNORED_KEYS = ("mask_token",)

#: SHA-256 of the authors' re-uploaded (post-fix) releases on Hugging Face XShadow/DOFA.
POST_FIX_SHA256 = {
    "4720985e42b918ac0307009eb06121a3435d9bbce6fd95446f84824a538165b1": "DOFA_ViT_base_e100.pth (2024-08-30)",
    "ea9910bc026268ca36c30b76fd1169aeaca9ea51af5eaff840a20f150ea03d49": "DOFA_ViT_large_e100.pth (2024-09-01)",
}
#: SHA-256 prefixes of TorchGeo's files after PR #2256 (band_major) …
POST_FIX_TORCHGEO_PREFIXES = {"a0275954": "dofa_base_patch16_224-a0275954.pth",
                              "0ff904d3": "dofa_large_patch16_224-0ff904d3.pth"}
#: … and before it (legacy).
PRE_FIX_TORCHGEO_PREFIXES = {"7cc0f413": "dofa_base_patch16_224-7cc0f413.pth",
                             "fbd47fa9": "dofa_large_patch16_224-fbd47fa9.pth"}

#: safetensors metadata of a converted file: format tag, kernel layout, source kind, source file name and SHA-256.
FORMAT_TAG = "rsmoe-dofa-v1"
METADATA_KEYS = ("format", "kernel_layout", "source", "source_file", "source_sha256")


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:  # noqa: ARG001 - size/mtime key the cache
    return digest.file_sha256(path)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (cached per path, size and modification time within the process)."""
    st = os.stat(path)
    return _sha256_cached(os.fspath(path), st.st_size, st.st_mtime_ns)


def known_release(sha256: str | None) -> tuple[str | None, str | None]:
    """(layout, release name) of a known public DOFA file, or (None, None)."""
    if not sha256:
        return None, None
    if sha256 in POST_FIX_SHA256:
        return "band_major", POST_FIX_SHA256[sha256]
    for table, layout in ((POST_FIX_TORCHGEO_PREFIXES, "band_major"), (PRE_FIX_TORCHGEO_PREFIXES, "legacy")):
        if sha256[:8] in table:
            return layout, table[sha256[:8]]
    return None, None


def resolve_kernel_layout(where: str | os.PathLike, requested: str | None, stored: str | None,
                          sha256: str | None) -> str:
    """The layout to build with: the requested one (config), else the one stored in a converted file, else the
    one of a known release, else ``band_major``. A request that contradicts the stored layout raises; a layout
    that contradicts a known release, or ``band_major`` for a file that is no known post-fix release, warns."""
    for name, value in (("requested", requested), ("stored", stored)):
        if value is not None and value not in KERNEL_LAYOUTS:
            raise CheckpointError(f"{where}: {name} kernel_layout {value!r}; expected one of {list(KERNEL_LAYOUTS)}")
    if requested and stored and requested != stored:
        raise CheckpointError(f"{where}: converted with kernel_layout {stored!r} but the config asks for "
                              f"{requested!r}; drop backbone.config.kernel_layout or convert again")
    known, release = known_release(sha256)
    layout = requested or stored or known or "band_major"
    if known is not None and layout != known:
        warnings.warn(f"{where}: this is {release}, which needs kernel_layout {known!r}, but {layout!r} is used: "
                      "band order will be scrambled", UserWarning, stacklevel=3)
    elif known is None and layout == "band_major":
        warnings.warn(f"{where}: SHA-256 {str(sha256)[:12]}… is not a known post-fix DOFA release; using "
                      "kernel_layout band_major (right for downloads since 2024-09-01) — for an older download use "
                      "legacy (--kernel-layout when converting, backbone.config.kernel_layout when loading)",
                      UserWarning, stacklevel=3)
    return layout


@dataclass
class DOFAWeights:
    """The backbone tensors of a DOFA file, the extras dropped from it, and what a converted file records (its
    stored kernel layout and the SHA-256 of the public file it came from; None for a public file itself)."""

    state: dict[str, Tensor]
    ignored: list[str] = field(default_factory=list)
    kernel_layout: str | None = None
    source_sha256: str | None = None


def _backbone_only(state: dict[str, Tensor], where: Path) -> tuple[dict[str, Tensor], list[str]]:
    if any(k.startswith("model.blocks.") for k in state):
        raise CheckpointError(f"{where}: a DOFA v2 checkpoint (keys 'model.blocks.*'); only DOFA v1 is supported")
    ignored = sorted(k for k in state if k.startswith(IGNORED_KEY_PREFIXES) or k in IGNORED_KEYS)
    return {k: v for k, v in state.items() if k not in set(ignored)}, ignored


def read_dofa_weights(path: str | os.PathLike) -> DOFAWeights:
    """A public DOFA ``.pth`` (authors' or TorchGeo's, bare or wrapped; hashed to identify the release) or a
    converted ``.safetensors`` (its metadata read). One-line :class:`CheckpointError` on failure."""
    path = Path(path)
    if path.suffix != ".safetensors":
        state, ignored = _backbone_only(read_state_dict(path, "DOFA checkpoint"), path)
        return DOFAWeights(state, ignored, None, file_sha256(path))
    state, meta = read_safetensors(path, "converted DOFA checkpoint (rsmoe convert dofa-*)", FORMAT_TAG)
    state, ignored = _backbone_only(state, path)
    return DOFAWeights(state, ignored, meta.get("kernel_layout"), meta.get("source_sha256"))


def write_dofa_weights(out: str | os.PathLike, state: dict[str, Tensor], *, kernel_layout: str, source: str,
                       source_file: str, source_sha256: str) -> Path:
    """Write backbone tensors as ``.safetensors`` with the :data:`METADATA_KEYS`, atomically."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.suffix != ".safetensors":
        raise CheckpointError(f"{out}: write converted DOFA weights as .safetensors (the kernel layout is stored in "
                              "its metadata)")
    if kernel_layout not in KERNEL_LAYOUTS:
        raise CheckpointError(f"kernel_layout {kernel_layout!r}; expected one of {list(KERNEL_LAYOUTS)}")
    meta = dict(zip(METADATA_KEYS, (FORMAT_TAG, kernel_layout, source, source_file, source_sha256)))
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=meta)
    return out


__all__ = ["FORMAT_TAG", "IGNORED_KEYS", "IGNORED_KEY_PREFIXES", "KERNEL_LAYOUTS", "METADATA_KEYS",
           "POST_FIX_SHA256", "POST_FIX_TORCHGEO_PREFIXES", "PRE_FIX_TORCHGEO_PREFIXES", "DOFAWeights",
           "file_sha256", "known_release", "read_dofa_weights", "resolve_kernel_layout", "write_dofa_weights"]
