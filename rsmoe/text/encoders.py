"""Frozen text encoders that turn captions into vectors (docs/mpers.md §4).

:class:`TextEncoder` wraps a Hugging Face text tower, frozen and in eval mode:

- CLIP (default, ViT-B in the paper): ``CLIPTextModelWithProjection`` when the weights hold ``text_projection``
  (a full ``CLIPModel`` folder or a projected text tower), else ``CLIPTextModel``'s pooled (EOS) output;
- any other text model through ``AutoModel``: ``get_text_features`` when the model has it (SigLIP, BLIP, …),
  else ``pooler_output``, else the attention-masked mean of ``last_hidden_state`` (``pooling`` chooses).

It is deliberately not an ``nn.Module``: the encoder is frozen and referenced by folder, so its weights never end
up in a segmentation checkpoint (docs/architecture.md: checkpoints hold trainable tensors only).

Long captions **[design]**: a caption whose token count (with the special tokens) exceeds the encoder's context
(77 for CLIP) is split into sentences (after ``.``, ``!``, ``?`` or ``;`` followed by white space), each sentence
is encoded on its own and the caption's vector is the plain mean of the sentence vectors. A single sentence still
longer than the context is cut into word windows that fit. A caption that fits is encoded whole.

Tokenizers: a CLIP tokenizer can be built offline in memory (:func:`tiny_clip_tokenizer`); loading one from a
folder is checked, because ``from_pretrained`` can silently return a tokenizer with nothing but its special tokens
(e.g. with ``HF_HUB_OFFLINE=1`` and no cache) — :func:`check_tokenizer` raises a one-line error instead.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..hf_logging import quiet_transformers
from ..seeding import seeded
from ..shipped import resolve_weights

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
_TINY_MERGES = (
    ("t", "h"), ("th", "e</w>"), ("i", "n"), ("in", "g</w>"), ("a", "n"), ("e", "r"), ("o", "n"), ("r", "e"),
    ("a", "t"), ("e", "s</w>"), ("e", "d</w>"), ("o", "f</w>"), ("a", "nd</w>"), ("n", "d</w>"),
)


# ----------------------------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------------------------

def tiny_clip_tokenizer(model_max_length: int = 77):
    """A CLIP BPE tokenizer built in memory: every byte-level character (so any text, after CLIP's lower-casing,
    tokenises without unknown tokens), its end-of-word form, and a few merges of common lower-case English."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in chars + [c + "</w>" for c in chars]:
        vocab[token] = len(vocab)
    for a, b in _TINY_MERGES:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=list(_TINY_MERGES), model_max_length=model_max_length)
    check_tokenizer(tok, "tiny_clip_tokenizer")
    return tok


def check_tokenizer(tokenizer: Any, where: str) -> Any:
    """Raise a one-line ``ValueError`` if ``tokenizer`` knows nothing beyond its special tokens."""
    vocab = tokenizer.get_vocab()
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    ordinary = [t for t in vocab if t not in special]
    if not ordinary:
        raise ValueError(
            f"{where}: the tokenizer loaded empty ({len(vocab)} tokens, all special); the folder lacks its "
            "tokenizer files (tokenizer.json or vocab.json + merges.txt) or a hub name was given offline"
        )
    return tokenizer


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, split after ``.``/``!``/``?``/``;`` followed by white space (punctuation kept)."""
    parts = [p.strip() for p in _SENTENCE_END.split(text.strip())]
    return [p for p in parts if p] or [text.strip()]


def chunk_text(text: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """``[text]`` if it fits ``max_tokens``; else its sentences, over-long sentences cut into fitting word windows."""
    if count_tokens(text) <= max_tokens:
        return [text]
    chunks: list[str] = []
    for sentence in split_sentences(text):
        if count_tokens(sentence) <= max_tokens:
            chunks.append(sentence)
            continue
        window: list[str] = []
        for word in sentence.split():
            if window and count_tokens(" ".join(window + [word])) > max_tokens:
                chunks.append(" ".join(window))
                window = []
            window.append(word)
        if window:
            chunks.append(" ".join(window))  # a single word longer than the context is truncated when encoded
    return chunks


def encode_chunked(
    texts: Sequence[str],
    tokenizer: Any,
    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    max_length: int,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
) -> torch.Tensor:
    """Encode ``texts`` with ``forward`` (tokenized batch -> n×d), long texts as the mean of their sentence chunks."""
    texts = [str(t) for t in texts]
    if not texts:
        raise ValueError("encode: no texts given")

    def count(t: str) -> int:
        return len(tokenizer(t, add_special_tokens=True, verbose=False)["input_ids"])

    pieces: list[str] = []
    owner: list[int] = []
    for i, text in enumerate(texts):
        for chunk in chunk_text(text, count, max_length):
            pieces.append(chunk)
            owner.append(i)
    outs = []
    with torch.inference_mode():
        for start in range(0, len(pieces), batch_size):
            batch = tokenizer(pieces[start:start + batch_size], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
            outs.append(forward(batch).float().cpu())
    emb = torch.cat(outs)
    index = torch.tensor(owner)
    total = torch.zeros(len(texts), emb.shape[1]).index_add_(0, index, emb)
    counts = torch.bincount(index, minlength=len(texts)).clamp_min(1).unsqueeze(1)
    return (total / counts).clone()


# ----------------------------------------------------------------------------------------------------------------
# Loading helpers
# ----------------------------------------------------------------------------------------------------------------

def model_folder(path: str | Path, what: str) -> tuple[Path, dict[str, Any]]:
    """``path`` (or a shipped model, ``rsmoe:clip``) and its ``config.json``; one-line errors when it is not a local
    transformers folder."""
    folder = Path(resolve_weights(str(path))).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{what}: model folder {folder} not found (models load from local folders only; the hub is never "
            "contacted)"
        )
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"{what}: {cfg} not found; expected a transformers model folder (save_pretrained)")
    try:
        return folder, json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{what}: {cfg} is not valid JSON ({e.msg} at line {e.lineno})") from None


def weight_keys(folder: Path) -> set[str] | None:
    """Tensor names of the folder's safetensors weights (single file or sharded); ``None`` when it has none."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text()).get("weight_map", {}))
    single = folder / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as f:
            return set(f.keys())
    return None


def load_tokenizer(folder: Path, what: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{what}: no usable tokenizer in {folder} ({first})") from None
    return check_tokenizer(tok, f"{what} ({folder})")


def _context_length(tokenizer: Any, config: Any) -> int:
    limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
    if 0 < limit < 100_000:
        return limit
    text_cfg = getattr(config, "text_config", None) or config
    return int(getattr(text_cfg, "max_position_embeddings", 512) or 512)


# ----------------------------------------------------------------------------------------------------------------
# The encoder
# ----------------------------------------------------------------------------------------------------------------

class TextEncoder:
    """A frozen text encoder: ``encode(texts) -> n×dim`` float32 (CPU), ``name`` (the embedding-cache key), ``dim``.

    Build it with :meth:`tiny` (random tiny CLIP, tests and demo), :meth:`from_pretrained` (a local folder) or
    :meth:`from_config` (the ``encoder:`` section of a captions config).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        name: str,
        pooling: str = "auto",
        max_length: int | None = None,
        batch_size: int = 64,
    ) -> None:
        if pooling not in ("auto", "projection", "features", "pooler", "mean"):
            raise ValueError(
                f"TextEncoder: pooling {pooling!r} unknown; use auto, projection, features, pooler or mean"
            )
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = check_tokenizer(tokenizer, f"TextEncoder {name}")
        self._name = str(name)
        self.pooling = pooling
        self.max_length = int(max_length or _context_length(tokenizer, model.config))
        self.batch_size = int(batch_size)
        self._dim: int | None = None

    # -- construction -----------------------------------------------------------------------------------------
    @classmethod
    def tiny(cls, seed: int = 0, dim: int = 32, layers: int = 2, context: int = 77,
             name: str | None = None) -> "TextEncoder":
        """A random tiny CLIP text tower with projection to ``dim``, weights drawn from ``seed`` (deterministic),
        and the in-memory tokenizer of :func:`tiny_clip_tokenizer`."""
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        tok = tiny_clip_tokenizer(context)
        cfg = CLIPTextConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
            num_attention_heads=2, max_position_embeddings=context, projection_dim=dim,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
        with seeded(seed):
            model = CLIPTextModelWithProjection(cfg)
        return cls(model, tok, name=name or f"tiny-clip-text-s{seed}-d{dim}", pooling="projection",
                   max_length=context)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        name: str | None = None,
        pooling: str = "auto",
        device: str | torch.device = "cpu",
        max_length: int | None = None,
        batch_size: int = 64,
    ) -> "TextEncoder":
        """Load a text encoder from a local transformers folder (``local_files_only``; the hub is never reached).

        CLIP folders (``model_type`` clip or clip_text_model) load as ``CLIPTextModelWithProjection`` when their
        weights hold ``text_projection.weight`` (unless ``pooling='pooler'``), else as ``CLIPTextModel``; other
        folders load with ``AutoModel``. ``name`` defaults to ``<folder name>:<pooling used>``.
        """
        folder, raw = model_folder(path, "TextEncoder")
        model_type = str(raw.get("model_type", ""))
        tok = load_tokenizer(folder, "TextEncoder")
        with quiet_transformers():
            if model_type in ("clip", "clip_text_model"):
                from transformers import CLIPTextModel, CLIPTextModelWithProjection

                keys = weight_keys(folder)
                has_projection = keys is None or "text_projection.weight" in keys
                use_projection = pooling in ("auto", "projection") and has_projection
                if pooling == "projection" and not has_projection:
                    raise ValueError(f"TextEncoder: {folder} has no text_projection weights; use pooling: pooler")
                model_cls = CLIPTextModelWithProjection if use_projection else CLIPTextModel
                kwargs: dict[str, Any] = {}
                if model_type == "clip":  # a full CLIPModel folder: its text config, with the model's projection
                    from transformers import CLIPConfig

                    text_cfg = CLIPConfig.from_pretrained(str(folder), local_files_only=True).text_config
                    text_cfg.projection_dim = int(raw.get("projection_dim", text_cfg.projection_dim))
                    kwargs["config"] = text_cfg
                model, info = model_cls.from_pretrained(str(folder), local_files_only=True, output_loading_info=True,
                                                        **kwargs)
                used = "projection" if use_projection else ("pooler" if pooling == "auto" else pooling)
            else:
                from transformers import AutoModel

                model, info = AutoModel.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
                used = pooling
        missing = sorted(info.get("missing_keys") or [])
        if missing:
            raise ValueError(
                f"TextEncoder: {folder} lacks weights {missing[:3]}{' …' if len(missing) > 3 else ''}; "
                "they would be random"
            )
        model.to(device)
        label = name or f"{folder.resolve().name}:{used}"
        return cls(model, tok, name=label, pooling=used, max_length=max_length, batch_size=batch_size)

    @classmethod
    def from_config(cls, section: dict[str, Any] | str | None, device: str | torch.device = "cpu") -> "TextEncoder":
        """From a captions-config ``encoder:`` section: ``{path: DIR | tiny, seed, dim, name, pooling, max_length}``
        (a bare string is the path)."""
        if isinstance(section, str):
            section = {"path": section}
        section = dict(section or {})
        path = section.pop("path", None)
        if path in (None, "tiny"):
            unknown = set(section) - {"seed", "dim", "name"}
            if unknown:
                raise ValueError(f"encoder: unknown key(s) {sorted(unknown)} for the tiny encoder; known: seed, dim")
            return cls.tiny(seed=int(section.get("seed", 0)), dim=int(section.get("dim", 32)),
                            name=section.get("name") or None)
        unknown = set(section) - {"name", "pooling", "max_length", "batch_size"}
        if unknown:
            raise ValueError(f"encoder: unknown key(s) {sorted(unknown)}; known: path, name, pooling, max_length, "
                             "batch_size")
        return cls.from_pretrained(path, device=device, **section)

    # -- properties ---------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """Key of this encoder's vectors in the caption store's embedding cache."""
        return self._name

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        """Length of the vectors :meth:`encode` returns."""
        if self._dim is None:
            cfg = self.model.config
            if self.pooling == "projection" and getattr(cfg, "projection_dim", None):
                self._dim = int(cfg.projection_dim)
            else:
                self._dim = int(self.encode(["a"]).shape[1])
        return self._dim

    def to(self, device: str | torch.device) -> "TextEncoder":
        self.model.to(device)
        return self

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write model and tokenizer so that :meth:`from_pretrained` reads them back (e.g. the tiny encoder)."""
        folder = Path(folder)
        with quiet_transformers():
            self.model.save_pretrained(str(folder))
            self.tokenizer.save_pretrained(str(folder))
        return folder

    # -- encoding -----------------------------------------------------------------------------------------------
    def _forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        model = self.model
        if self.pooling == "projection":
            return model(**batch).text_embeds
        if self.pooling in ("auto", "features") and hasattr(model, "get_text_features"):
            out = model.get_text_features(**batch)
            return out if isinstance(out, torch.Tensor) else out.pooler_output
        out = model(**batch)
        if self.pooling in ("auto", "pooler") and getattr(out, "pooler_output", None) is not None:
            return out.pooler_output
        if self.pooling == "pooler":
            raise ValueError(f"TextEncoder {self.name}: the model returns no pooler_output; use pooling: mean")
        hidden = out.last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def chunks(self, text: str) -> list[str]:
        """The pieces ``text`` is encoded as: itself if it fits the context, else its sentences."""
        return chunk_text(text, lambda t: len(self.tokenizer(t, verbose=False)["input_ids"]), self.max_length)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """``len(texts)×dim`` float32 on the CPU; long texts are the mean of their sentence vectors."""
        if isinstance(texts, str):
            raise TypeError("TextEncoder.encode takes a list of texts, got a single string")
        return encode_chunked(texts, self.tokenizer, self._forward, self.max_length, self.device, self.batch_size)

    def __repr__(self) -> str:
        return f"TextEncoder(name={self.name!r}, pooling={self.pooling!r}, max_length={self.max_length})"


_SHARED: dict[tuple, Any] = {}


def text_encoder_for(section: Any) -> "CachedTextEncoder":
    """The frozen text encoder of an ``mpers`` config section (``text_encoder``: ``tiny`` or a local folder;
    ``text_encoder_seed``, ``text_dim``, ``text_encoder_name``), wrapped in an exact LRU cache.

    One object per process and setting: the data pipeline (training captions) and the model (its own first-pass
    captions at evaluation) share it, so it is loaded once."""
    from .fields import CachedTextEncoder

    key = (section.text_encoder, section.text_encoder_seed, section.text_dim, section.text_encoder_name)
    if key not in _SHARED:
        name = section.text_encoder_name or None
        if section.text_encoder == "tiny":
            encoder = TextEncoder.tiny(seed=section.text_encoder_seed, dim=section.text_dim or 32, name=name)
        else:
            encoder = TextEncoder.from_pretrained(section.text_encoder, name=name)
        while len(_SHARED) >= 4:
            _SHARED.pop(next(iter(_SHARED)))
        _SHARED[key] = CachedTextEncoder(encoder)
    return _SHARED[key]



__all__ = ["TextEncoder", "tiny_clip_tokenizer", "check_tokenizer", "split_sentences", "chunk_text",
           "encode_chunked", "text_encoder_for"]
