"""What a training run writes, and when: periodic checkpoints, the final weights, and the checks before each write.

* Every ``train.checkpoint_every`` iterations and at the last one, Lightning's ``last.ckpt`` (trainable tensors,
  optimiser, schedule, loops, training-stream position, random states) is written to the run folder;
  ``model.safetensors`` (the trained weights a user evaluates and predicts with) only at the end, and first,
  before anything optional (metrics, reports, plots).
* Every file is written atomically (:class:`AtomicCheckpointIO`; :func:`rsmoe.io.atomic.atomic_path`: temporary
  file, fsync, rename), so a kill or a full disk at any moment leaves the previous complete checkpoint.
* Nothing is saved from non-finite weights (:func:`check_finite`): the last good checkpoint stays.
* Before training, :func:`prepare_run_folder` makes the folder, writes and removes a probe file and compares the
  free space with what the run will write (:func:`bytes_needed`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO

from ..errors import OutputError, TrainingError
from ..io.atomic import atomic_path
from ..io.writable import MIB, describe, writable_folder

LAST_NAME = "last.ckpt"
#: files of an earlier run that died while writing them (their temporary names end in -<pid>)
STALE_PATTERNS = (".last.ckpt.tmp-*", ".model.safetensors.tmp-*", ".metrics.json.tmp-*", ".metrics.md.tmp-*",
                  ".train_log.csv.tmp-*", ".loss_curve.png.tmp-*")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written through :func:`atomic_path`; a failed write is one line and the previous file
    stays."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        try:
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)
        except OSError as exc:
            raise OutputError(f"could not write the checkpoint {path}: {describe(exc)}; the previous checkpoint is "
                              "kept") from None


def check_finite(tensors: Mapping[str, torch.Tensor], step: int) -> None:
    """A one-line :class:`TrainingError` naming the first trainable tensor holding NaN or inf."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise TrainingError(f"step {step}: the trainable tensor {name} holds NaN/inf values; nothing was saved "
                                "from these weights (lower train.lr)")


def bytes_needed(tensors: Mapping[str, torch.Tensor]) -> int:
    """Free space a run needs in its folder: ``last.ckpt`` (weights + two AdamW moments) twice (the new one is
    complete before the old one goes), ``model.safetensors``, and 2 MiB for logs, metrics and the plot."""
    weights = sum(t.numel() * t.element_size() for t in tensors.values())
    return 2 * 3 * weights + weights + 2 * MIB


def prepare_run_folder(out: Path, need_bytes: int) -> None:
    """Make the run folder, probe it (writable, ``need_bytes`` free) and delete temporary files of a killed run."""
    writable_folder(out, need_bytes, what="output_dir")
    for pattern in STALE_PATTERNS:
        for stale in out.glob(pattern):
            with contextlib.suppress(OSError):
                stale.unlink()


class PeriodicCheckpoint(L.Callback):
    """``last.ckpt`` every ``every`` steps and at the last step; at the last step ``write_weights(step)`` (the
    final ``model.safetensors``, first process only) runs before it. ``weights_written`` tells whether it ran."""

    def __init__(self, out: Path, every: int, trainable: Callable[[], Mapping[str, torch.Tensor]],
                 write_weights: Callable[[int], Any]):
        self.path = Path(out) / LAST_NAME
        self.every = int(every)
        self.trainable = trainable
        self.write_weights = write_weights
        self.weights_written = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        final = trainer.max_steps > 0 and step >= trainer.max_steps
        if step % self.every and not final:
            return
        check_finite(self.trainable(), step)
        if final and trainer.is_global_zero:
            self.write_weights(step)
            self.weights_written = True
        trainer.save_checkpoint(self.path)


__all__ = ["AtomicCheckpointIO", "LAST_NAME", "PeriodicCheckpoint", "bytes_needed", "check_finite",
           "prepare_run_folder"]
