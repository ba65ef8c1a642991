"""Exact resume: the random states a run carries in ``last.ckpt``, and the checks that a checkpoint fits the run.

Lightning's ``last.ckpt`` already holds the trainable tensors, the AdamW moments, the poly schedule's state (its
recursive form: the restored ``lr`` of each group is what the next step multiplies) and the loop counters; the
training stream's position is the loader's state (:mod:`rsmoe.engine.stream`). :class:`RandomStates` adds the
python, numpy, torch CPU and CUDA generator states of the moment the checkpoint was written and puts them back
just before the first resumed step, so random draws in the model (noisy gating, point sampling, dropout) continue
exactly. A resumed run is never re-seeded.

:func:`read_resume_checkpoint` and :func:`check_resume_fits` turn a missing, unreadable or foreign checkpoint into
one line naming the first tensor whose shape differs (or the first config value that differs) before any training.
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from ..errors import CheckpointError, MissingFileError

#: config keys a resumed run may change: where things are and how often to save, log, evaluate; nothing that
#: changes the trained weights
FREE_ON_RESUME = ("name", "output_dir", "train.resume", "train.checkpoint_every", "train.log_every",
                  "train.val_interval", "train.accelerator", "data.root", "data.num_workers", "data.cache",
                  "data.eval_batch_size", "data.val_split", "data.test_split", "data.target_domains", "eval",
                  "backbone.pretrained", "depth.pretrained", "mpers.text_encoder", "mpers.caption_store")


def collect_rng_states() -> dict[str, Any]:
    """Every generator state of this process, as plain lists and tensors (loadable with ``weights_only``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: Mapping[str, Any]) -> None:
    """Put back the states of :func:`collect_rng_states`."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RandomStates(L.Callback):
    """Saves the random states in every Lightning checkpoint and restores them when training (re)starts."""

    def __init__(self) -> None:
        self.pending: Mapping[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"rng": collect_rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending = state_dict.get("rng")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pending is not None:
            restore_rng_states(self.pending)
            self.pending = None


def read_resume_checkpoint(path: str | Path) -> dict[str, Any]:
    """The contents of a ``last.ckpt`` named by ``train.resume``; a one-line error when it is missing, unreadable
    or not a Lightning training checkpoint (e.g. a ``model.safetensors``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"train.resume: {path} not found (give the last.ckpt of an earlier run)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # torch raises pickle/zip/runtime errors of many types for a damaged file
        ckpt = None
    if ckpt is None:
        try:  # without mmap: slower, but its error says what is wrong with the file
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"train.resume: {path} is not a readable training checkpoint (last.ckpt): the file "
                                  f"is damaged or not a PyTorch checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or not {"state_dict", "optimizer_states", "loops"} <= set(ckpt):
        raise CheckpointError(f"train.resume: {path} is not a Lightning training checkpoint (last.ckpt); "
                              "model.safetensors holds weights only and cannot resume a run")
    return ckpt


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def first_config_difference(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """``"key: saved value vs current value"`` for the first differing key a resume must keep, else None."""
    a, b = flatten(saved), flatten(current)
    for key in sorted(set(a) | set(b)):
        if any(key == f or key.startswith(f + ".") for f in FREE_ON_RESUME):
            continue
        if a.get(key) != b.get(key):
            return f"{key}: {a.get(key, '(absent)')!r} in the checkpoint, {b.get(key, '(absent)')!r} now"
    return None


def first_tensor_mismatch(saved: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str | None:
    """The first tensor (in the model's order) that is missing, extra or of another shape, with both shapes."""
    for key, tensor in expected.items():
        if key not in saved:
            return f"{key} is missing from the checkpoint (this config: shape {tuple(tensor.shape)})"
        if tuple(saved[key].shape) != tuple(tensor.shape):
            return f"{key} has shape {tuple(saved[key].shape)} in the checkpoint, {tuple(tensor.shape)} in this config"
    for key, tensor in saved.items():
        if key not in expected:
            return f"{key} (shape {tuple(tensor.shape)}) is in the checkpoint but not in this config's model"
    return None


def check_resume_fits(ckpt: Mapping[str, Any], path: str | Path, expected: Mapping[str, torch.Tensor],
                      config: Mapping[str, Any]) -> None:
    """Refuse a checkpoint of another model (first differing tensor and both shapes) or another run config."""
    saved_config = (ckpt.get("rsmoe") or {}).get("config")
    difference = first_config_difference(saved_config, config) if saved_config else None
    mismatch = first_tensor_mismatch(ckpt["state_dict"], expected)
    if mismatch:
        hint = f" (the configs differ first at {difference})" if difference else ""
        raise CheckpointError(f"train.resume: {path} belongs to another model: {mismatch}{hint}")
    if difference:
        raise CheckpointError(f"train.resume: {path} was made with another config, {difference}; a resumed run "
                              "continues the same run, so give the same config (or train from scratch)")


__all__ = ["FREE_ON_RESUME", "RandomStates", "check_resume_fits", "collect_rng_states", "first_config_difference",
           "first_tensor_mismatch", "flatten", "read_resume_checkpoint", "restore_rng_states"]
