"""Captions as batch fields: what an MPerS-style model reads arrives with the batch, built by the data pipeline.

:class:`CaptionFields` runs on a collated batch (after the training augmentation, so captions describe the crop
the model sees) and adds

* ``text``: B×M×P×d_t float32 — the caption embeddings of the M caption sources (``mpers.captioners``, one DMTE
  expert each) under the P prompts, zeros where missing;
* ``text_mask``: B×M×P bool — which of them are present.

Where the vectors come from, per slot:

* an MLLM source (every captioner but ``statistics``): the cached embeddings of the caption store
  (``mpers.caption_store``, written by ``rsmoe captions``), looked up by the tile's manifest path (``batch["tile"]``);
  a caption missing from the store leaves its slot masked;
* the ``statistics`` slot: ``live`` — the statistics captions (:mod:`rsmoe.text.statistics`) of the batch's
  *ground-truth* mask, embedded by the frozen text encoder (training only); ``store`` — the store's statistics
  captions; ``none`` — masked. Evaluation batches always use ``none``: the model fills that slot from its own
  first-pass prediction (``eval_captions: statistics-self``), so ground truth never reaches an evaluated model.

:class:`CachedTextEncoder` memoises the frozen, deterministic encoder (statistics captions repeat), and
:func:`statistics_slot` is the one function that turns label maps into a slot's vectors — used here on ground
truth and by MPerS on its own predictions.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from . import statistics

STATISTICS = "statistics"
STATISTICS_SOURCES = ("live", "store", "none")
CACHE_SIZE = 16384


class CachedTextEncoder:
    """A frozen text encoder (``encode(texts) -> n×d``, ``name``, ``dim``) behind an LRU cache of ``size``
    captions. The cache is exact: the encoder is frozen and deterministic."""

    def __init__(self, encoder: Any, size: int = CACHE_SIZE):
        self.encoder = encoder
        self.size = int(size)
        self._cache: OrderedDict[str, Tensor] = OrderedDict()

    @property
    def name(self) -> str:
        return str(self.encoder.name)

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    @torch.no_grad()
    def encode(self, sentences: Sequence[str]) -> Tensor:
        """n×d float32 CPU vectors of ``sentences`` (the new ones encoded together in one call)."""
        missing = [t for t in dict.fromkeys(sentences) if t not in self._cache]
        if missing:
            for t, vec in zip(missing, torch.as_tensor(self.encoder.encode(missing)).float().cpu()):
                self._cache[t] = vec
        out = []
        for t in sentences:
            self._cache.move_to_end(t)
            out.append(self._cache[t])
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return torch.stack(out)


def statistics_slot(labels: Tensor | np.ndarray, class_names: Sequence[str], ignore_index: int,
                    encoder: CachedTextEncoder, num_prompts: int) -> Tensor:
    """B×P×d vectors of the statistics captions of B×H×W label maps (P = ``num_prompts`` captions each)."""
    labels_np = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    sentences: list[str] = []
    for label_map in labels_np:
        captions = list(statistics.statistics_captions(label_map, list(class_names), ignore_index))
        if len(captions) != num_prompts:
            raise ConfigError(f"the statistics captioner writes {len(captions)} captions per image, the model "
                              f"expects mpers.num_prompts = {num_prompts}")
        sentences += captions
    emb = encoder.encode(sentences)
    return emb.reshape(len(labels_np), num_prompts, emb.shape[-1])


class CaptionFields:
    """Adds ``text`` / ``text_mask`` to a collated batch (see the module docstring).

    Args:
        captioners: the M caption sources, in slot order. num_prompts: P. text_dim: d_t.
        statistics: ``live`` | ``store`` | ``none`` — the source of the ``statistics`` slot.
        store: a :class:`~rsmoe.text.store.CaptionStore` (opened read-only) or None; encoder_name: the store's
            embedding key. encoder: a :class:`CachedTextEncoder` (needed for ``live``).
        class_names, ignore_index: the dataset's classes, for statistics captions.
    """

    def __init__(self, captioners: Sequence[str], num_prompts: int, text_dim: int, *, statistics: str = "none",
                 store: Any = None, encoder_name: str | None = None, encoder: CachedTextEncoder | None = None,
                 class_names: Sequence[str] = (), ignore_index: int = 255):
        if statistics not in STATISTICS_SOURCES:
            raise ConfigError(f"statistics captions: got {statistics!r}, expected one of {list(STATISTICS_SOURCES)}")
        self.captioners = list(captioners)
        self.slot = self.captioners.index(STATISTICS) if STATISTICS in self.captioners else None
        self.num_prompts, self.text_dim = int(num_prompts), int(text_dim)
        self.statistics = statistics if self.slot is not None else "none"
        self.store, self.encoder_name, self.encoder = store, encoder_name, encoder
        self.class_names, self.ignore_index = list(class_names), int(ignore_index)
        if self.statistics == "live" and encoder is None:
            raise ConfigError("live statistics captions need the frozen text encoder (mpers.text_encoder)")
        if store is not None and not encoder_name:
            raise ConfigError("mpers.caption_store needs the text encoder's name (mpers.text_encoder_name)")

    def _from_store(self, tiles: Sequence[str]) -> tuple[Tensor, Tensor]:
        b, m, p = len(tiles), len(self.captioners), self.num_prompts
        if self.store is None:
            return torch.zeros(b, m, p, self.text_dim), torch.zeros(b, m, p, dtype=torch.bool)
        text, mask = self.store.embeddings_for(list(tiles), self.captioners, self.encoder_name, per_prompt=True)
        if text.shape[-1] != self.text_dim:
            raise ConfigError(f"{self.store.path}: embeddings of {self.encoder_name!r} have dim {text.shape[-1]}, "
                              f"the model expects {self.text_dim}")
        return text, mask

    def __call__(self, batch: dict) -> dict:
        if "tile" not in batch:
            raise ValueError("caption fields need the batch's 'tile' ids (rsmoe.engine.data.collate)")
        text, mask = self._from_store(batch["tile"])
        if self.slot is not None and self.statistics != "store":
            text[:, self.slot], mask[:, self.slot] = 0.0, False
        if self.statistics == "live":
            text[:, self.slot] = statistics_slot(batch["mask"], self.class_names, self.ignore_index, self.encoder,
                                                 self.num_prompts)
            mask[:, self.slot] = True
        batch["text"], batch["text_mask"] = text, mask
        return batch



def caption_fields_for(cfg: Any, info: Any, training: bool) -> CaptionFields | None:
    """The caption fields a run's batches need: None unless the model reads captions (``model: mpers`` with
    guided stages). ``info``: the dataset's :class:`~rsmoe.data.prepared.DatasetInfo`; ``training`` selects the
    statistics slot's source (``mpers.train_statistics`` in training, never ground truth in evaluation)."""
    m = cfg.mpers
    if cfg.model != "mpers" or not m.lqga_stages:
        return None
    from .encoders import text_encoder_for
    from .store import CaptionStore

    live = training and m.train_statistics == "live" and STATISTICS in m.captioners
    encoder = text_encoder_for(m) if live else None
    if not m.caption_store and not live and training:
        raise ConfigError(f"MPerS: no caption source for captioners {m.captioners}: set mpers.caption_store "
                          "(MLLM captions from `rsmoe captions`) or use the 'statistics' captioner with "
                          "train_statistics: live")
    store = CaptionStore(m.caption_store, readonly=True) if m.caption_store else None
    text_dim = m.text_dim or text_encoder_for(m).dim
    return CaptionFields(m.captioners, m.num_prompts, text_dim, statistics=m.train_statistics if training else "none",
                         store=store, encoder_name=m.text_encoder_name or text_encoder_for(m).name, encoder=encoder,
                         class_names=info.classes, ignore_index=info.ignore_index)


__all__ = ["CACHE_SIZE", "STATISTICS", "STATISTICS_SOURCES", "CachedTextEncoder", "CaptionFields", "caption_fields_for",
           "statistics_slot"]
