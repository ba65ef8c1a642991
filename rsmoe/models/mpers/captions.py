"""Where the captions of an MPerS run come from, batch by batch (used by the Lightning module).

Training batches:

* MLLM slots (every captioner but ``statistics``): cached embeddings from the caption store (``mpers.caption_store``,
  built by ``rsmoe captions``), looked up by the tile's manifest path; a missing caption masks its slot.
* the ``statistics`` slot: ``train_statistics: live`` (default) writes the three statistics captions from the
  *ground-truth* mask of the batch — i.e. of the augmented crop the model actually sees — and embeds them with the
  model's frozen text encoder; ``store`` reads the store's (ground-truth based) statistics captions instead.

Evaluation batches: store embeddings for the MLLM slots only — the ``statistics`` slot is always masked out here,
whatever the store holds, and :meth:`MPerS.predict` fills it from the model's own first pass
(``eval_captions: statistics-self``). The ground-truth mask of an evaluated tile is never read by this module.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from .model import STATISTICS, MPerS


def image_ids(batch: dict, root: str | os.PathLike | None) -> list[str]:
    """The caption store's ids (manifest ``image`` paths, relative to the prepared folder) of a batch's tiles."""
    paths = batch.get("image_path")
    if paths is None:
        raise ValueError("MPerS with a caption store needs batches with 'image_path' (rsmoe.engine.data.collate)")
    if root is None:
        return [str(p) for p in paths]
    return [os.path.relpath(str(p), str(root)).replace(os.sep, "/") for p in paths]


class CaptionInputs:
    """``for_training(batch)`` / ``for_eval(batch)`` → ``{"text": B×M×P×d_t, "text_mask": B×M×P}`` or ``{}``."""

    def __init__(self, model: MPerS, mpers_cfg: Any, data_root: str | os.PathLike | None = None):
        self.model = model
        self.store_path = mpers_cfg.caption_store
        self.train_statistics = mpers_cfg.train_statistics
        encoder = model.text_encoder
        self.encoder_name = mpers_cfg.text_encoder_name or (encoder.name if encoder is not None else None)
        self.root = data_root
        self.slot = model.captioners.index(STATISTICS) if STATISTICS in model.captioners else None
        self._store = None
        if model.dmte is not None and not self.store_path and (self.slot is None or self.train_statistics != "live"):
            raise ValueError(f"MPerS: no caption source for captioners {model.captioners}: set mpers.caption_store "
                             "(MLLM captions from `rsmoe captions`) or use the 'statistics' captioner with "
                             "train_statistics: live")

    @property
    def store(self):
        if self._store is None:
            from ...text.store import CaptionStore

            self._store = CaptionStore(self.store_path, readonly=True)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def _from_store(self, batch: dict, device: torch.device) -> tuple[Tensor | None, Tensor | None]:
        if not self.store_path:
            return None, None
        if self.encoder_name is None:
            raise ValueError("mpers.caption_store needs the text encoder's name (mpers.text_encoder_name)")
        text, mask = self.store.embeddings_for(image_ids(batch, self.root), self.model.captioners, self.encoder_name,
                                               per_prompt=True)
        if text.shape[-1] != self.model.text_dim:
            raise ValueError(f"{self.store_path}: embeddings of {self.encoder_name!r} have dim {text.shape[-1]}, "
                             f"the model expects {self.model.text_dim}")
        return text.to(device), mask.to(device)

    def for_training(self, batch: dict) -> dict[str, Tensor]:
        if self.model.dmte is None:
            return {}
        device = batch["image"].device
        text, mask = self._from_store(batch, device)
        if self.slot is not None and self.train_statistics == "live":
            text, mask = self.model.statistics_text(batch["mask"], text, mask)  # ground truth: training only
        return {} if text is None else {"text": text, "text_mask": mask}

    def for_eval(self, batch: dict) -> dict[str, Tensor]:
        if self.model.dmte is None:
            return {}
        text, mask = self._from_store(batch, batch["image"].device)
        if text is None:
            return {}
        if self.slot is not None:
            mask[:, self.slot] = False  # a stored statistics caption may come from labels: never at evaluation
        return {"text": text, "text_mask": mask}


__all__ = ["CaptionInputs", "image_ids"]
