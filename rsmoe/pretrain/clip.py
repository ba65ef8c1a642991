"""``rsmoe pretrain clip``: the shipped CLIP pair, trained contrastively on corpus tiles and their statistics captions.

* **Tokenizer** (:func:`caption_tokenizer`): a CLIP byte-level BPE tokenizer whose merges are learned (classic BPE,
  arXiv 1508.07909, §3.2: repeatedly merge the most frequent adjacent pair) from the training captions, on top of
  every byte-level character and its end-of-word form, so any text tokenises and caption words are one token.
  Saved in the folder (``vocab.json``, ``merges.txt``); nothing is downloaded.
* **Images**: the corpus tile's R, G, B bands as H×W×3 uint8 with a 2–98 % stretch per band
  (:func:`rsmoe.text.pipeline.tile_rgb`, the rendering ``rsmoe captions`` scores), then the folder's
  ``CLIPImageProcessor`` (mean/std of the training renderings).
* **Captions**: the three statistics captions of the tile's label map (:func:`rsmoe.text.statistics.statistics_captions`;
  labels are used for nothing else). Each step pairs each image with one of its three captions, drawn at random.
* **Loss**: symmetric InfoNCE with CLIP's learnable temperature (arXiv 2103.00020, §2.3), with soft targets that
  spread a row's target over every caption in the batch identical to its own (two tiles with the same class list
  are not negatives of each other).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.synthetic import CLASSES
from ..seeding import seeded
from ..sensors import RGB_CENTRES_UM
from .augment import dihedral
from .corpus import build_corpus
from .loop import Schedule, TrainResult, train

CONTEXT = 128
PROJECTION_DIM = 64
CLIP_ARCH: dict[str, Any] = dict(hidden_size=96, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                                 image_size=64, patch_size=8)
"""Both towers' width and depth, the vision tower's input and patch size (it is not paired with the backbone)."""
END = "</w>"


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------------------------

def _words(texts: Sequence[str], tokenizer: Any) -> Counter:
    """Word counts of ``texts`` as the CLIP tokenizer splits them (its own normaliser and pre-tokeniser)."""
    backend = tokenizer.backend_tokenizer
    counts: Counter = Counter()
    for text in texts:
        for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)):
            counts[word] += 1
    return counts


def learn_merges(counts: Counter, max_merges: int = 2000) -> list[tuple[str, str]]:
    """Classic BPE: merge the most frequent adjacent symbol pair (ties: the lexicographically smallest) until every
    word is one symbol or ``max_merges`` merges are learned. Symbols start as characters, the last with ``</w>``."""
    words = {tuple(w[:-1]) + (w[-1] + END,): n for w, n in counts.items()}
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        pairs: Counter = Counter()
        for symbols, n in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = {}
        for symbols, n in words.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        words = merged
    return merges


def caption_tokenizer(texts: Sequence[str], context: int = CONTEXT) -> Any:
    """A CLIP tokenizer with every byte-level character and the merges :func:`learn_merges` finds in ``texts``."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from ..text.encoders import check_tokenizer, tiny_clip_tokenizer

    merges = learn_merges(_words(texts, tiny_clip_tokenizer(context)))
    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in chars + [c + END for c in chars] + [a + b for a, b in merges]:
        vocab.setdefault(token, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=context)
    return check_tokenizer(tok, "caption_tokenizer")


# ----------------------------------------------------------------------------------------------------------------
# Model, images and captions
# ----------------------------------------------------------------------------------------------------------------

def clip_config(tokenizer: Any, context: int = CONTEXT, **overrides: Any) -> Any:
    """A ``CLIPConfig`` with the towers of :data:`CLIP_ARCH` (``overrides`` replace fields, e.g. for tests) and
    projections to :data:`PROJECTION_DIM`; the text context and vocabulary follow the tokenizer."""
    from transformers import CLIPConfig

    a = {**CLIP_ARCH, **overrides}
    tower = dict(hidden_size=a["hidden_size"], intermediate_size=a["intermediate_size"],
                 num_hidden_layers=a["num_hidden_layers"], num_attention_heads=a["num_attention_heads"],
                 projection_dim=PROJECTION_DIM)
    text = dict(tower, vocab_size=len(tokenizer), max_position_embeddings=context,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = dict(tower, image_size=a["image_size"], patch_size=a["patch_size"])
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=PROJECTION_DIM)


def corpus_renderings(images: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) standardised corpus tiles (R, G, B) → (N, H, W, 3) uint8 as ``rsmoe captions`` renders tiles
    (a per-band 2–98 % stretch is invariant to the per-band standardisation, so this equals rendering the DNs)."""
    from ..text.pipeline import tile_rgb

    return np.stack([tile_rgb(img, list(RGB_CENTRES_UM)) for img in images])


def image_processor(renderings: np.ndarray, size: int) -> Any:
    """A ``CLIPImageProcessorPil`` that keeps ``size``-pixel tiles as they are (no resize, no crop) and normalises
    with the per-channel mean/std of ``renderings`` (N, H, W, 3 uint8) after rescaling to [0, 1]."""
    from transformers import CLIPImageProcessorPil

    x = renderings.astype(np.float64) / 255.0
    mean = [round(float(v), 4) for v in x.mean(axis=(0, 1, 2))]
    std = [round(float(v), 4) for v in x.std(axis=(0, 1, 2))]
    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                 image_mean=mean, image_std=std)


def tile_captions(labels: np.ndarray) -> list[list[str]]:
    """The three statistics captions of each label map (N, H, W)."""
    from ..text.statistics import statistics_captions

    return [statistics_captions(lm, CLASSES) for lm in labels]


class ContrastiveCaptions(nn.Module):
    """CLIP's contrastive objective on precomputed pixels (N, 3, H, W) and tokenised captions (N, P, L) with their
    attention masks; see the module docstring."""

    def __init__(self, model: nn.Module, pixels: Tensor, input_ids: Tensor, attention: Tensor, batch: int = 128):
        super().__init__()
        self.model = model
        self.pixels, self.input_ids, self.attention = pixels, input_ids, attention
        self.batch = int(batch)

    def loss(self, step: int, g: torch.Generator) -> tuple[Tensor, dict]:
        n, prompts = self.input_ids.shape[:2]
        index = torch.randint(0, n, (self.batch,), generator=g)
        which = torch.randint(0, prompts, (self.batch,), generator=g)
        (pixels,) = dihedral([self.pixels[index]], g)
        ids, mask = self.input_ids[index, which], self.attention[index, which]
        length = int(mask.sum(1).max())  # pad to the batch's longest caption (the EOS pooling is unaffected)
        ids, mask = ids[:, :length], mask[:, :length]
        img = F.normalize(_features(self.model.get_image_features(pixel_values=pixels)), dim=-1)
        txt = F.normalize(_features(self.model.get_text_features(input_ids=ids, attention_mask=mask)), dim=-1)
        logits = self.model.logit_scale.exp().clamp(max=100.0) * img @ txt.T
        same = (ids[:, None] == ids[None]).all(-1).float()
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                      + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean())
        hits = (logits.argmax(1) == torch.arange(self.batch)) | (same[torch.arange(self.batch), logits.argmax(1)] > 0)
        return loss, {"batch_top1": float(hits.float().mean()), "scale": float(self.model.logit_scale.exp())}


def _features(output: Any) -> Tensor:
    return output if isinstance(output, Tensor) else output.pooler_output


def processed_pixels(processor: Any, renderings: np.ndarray, batch: int = 256) -> Tensor:
    """(N, H, W, 3) uint8 renderings → (N, 3, H, W) float32 pixel values through ``processor``."""
    return torch.cat([processor(images=list(renderings[i:i + batch]), return_tensors="pt")["pixel_values"]
                      for i in range(0, len(renderings), batch)])


def tokenize_captions(tokenizer: Any, captions: list[list[str]], context: int = CONTEXT) -> tuple[Tensor, Tensor]:
    """(N, P, context) token ids and attention masks of N tiles' P captions (padded, truncated to ``context``)."""
    flat = [c for caps in captions for c in caps]
    enc = tokenizer(flat, padding="max_length", truncation=True, max_length=context, return_tensors="pt")
    shape = (len(captions), len(captions[0]), context)
    return enc["input_ids"].reshape(shape), enc["attention_mask"].reshape(shape)


def pretrain_clip(steps: int, batch: int, lr: float, seed: int, corpus_seed: int, acquisitions: int,
                  warmup: int = 100, tower: dict[str, Any] | None = None,
                  log: Callable[[str], None] | None = print) -> tuple[nn.Module, Any, Any, TrainResult]:
    """Train the CLIP pair on ``acquisitions`` corpus acquisitions of ``corpus_seed``; weights from ``seed``.

    Returns the ``CLIPModel`` (eval mode), its tokenizer, its image processor and the run's result.
    """
    from transformers import CLIPModel

    corpus = build_corpus(corpus_seed, acquisitions, progress=log is not None)
    renderings = corpus_renderings(corpus.images)
    processor = image_processor(renderings, corpus.images.shape[-1])
    captions = tile_captions(corpus.labels)
    tokenizer = caption_tokenizer([c for caps in captions for c in caps])
    ids, attention = tokenize_captions(tokenizer, captions)
    with seeded(seed):
        model = CLIPModel(clip_config(tokenizer, **(tower or {})))
    objective = ContrastiveCaptions(model, processed_pixels(processor, renderings), ids, attention, batch)
    result = train(objective, Schedule(steps=steps, lr=lr, warmup=warmup), seed=seed, log=log)
    return model.eval(), tokenizer, processor, result


__all__ = ["CLIP_ARCH", "CONTEXT", "PROJECTION_DIM", "ContrastiveCaptions", "caption_tokenizer", "clip_config",
           "corpus_renderings", "image_processor", "learn_merges", "pretrain_clip", "processed_pixels",
           "tile_captions", "tokenize_captions"]
