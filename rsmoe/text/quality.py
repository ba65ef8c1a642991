"""CLIP quality check of captions and the regeneration loop (docs/mpers.md §3, supplementary eq. 2).

``similarity(f_v, Φ_t) = cos(f_v, Φ_t) / 2 + 1/2`` maps the cosine between the CLIP image embedding of the image and
the CLIP text embedding of a caption to ``[0, 1]``. A caption scoring below ``tau`` (0.55 in the paper) is
regenerated with :func:`rsmoe.text.prompts.refined_prompt`, up to ``max_attempts`` generations in all; the
best-scoring caption is kept, with ``passed=False`` when none reached ``tau``.

Captions longer than CLIP's 77-token context are scored with the mean of their sentence embeddings
(:func:`rsmoe.text.encoders.encode_chunked`), the same rule the text encoder uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from rsmoe.hf_logging import quiet_transformers
from rsmoe.seeding import seeded
from rsmoe.text.encoders import (
    check_tokenizer, encode_chunked, load_tokenizer, model_folder, tiny_clip_tokenizer,
)

DEFAULT_TAU = 0.55
DEFAULT_MAX_ATTEMPTS = 3


def similarity(image_emb: Any, text_emb: Any) -> torch.Tensor:
    """``cos(image_emb, text_emb) / 2 + 1/2`` along the last dimension (broadcasting), in ``[0, 1]``."""
    v = torch.as_tensor(np.asarray(image_emb) if not isinstance(image_emb, torch.Tensor) else image_emb).double()
    t = torch.as_tensor(np.asarray(text_emb) if not isinstance(text_emb, torch.Tensor) else text_emb).double()
    cos = torch.nn.functional.cosine_similarity(v, t, dim=-1, eps=1e-12)
    return (cos / 2.0 + 0.5).clamp(0.0, 1.0)


@dataclass
class CheckedCaption:
    """The kept caption of a regeneration loop.

    ``score`` and ``passed`` are ``None`` when no scorer was used; ``attempts`` counts generations (1 = no
    regeneration); ``history`` holds ``(prompt, text, score)`` of every generation; ``error`` the error of a
    failed later attempt (the best earlier caption is still kept)."""

    text: str
    prompt: str
    score: float | None
    passed: bool | None
    attempts: int
    history: list[tuple[str, str, float | None]] = field(default_factory=list)
    error: str | None = None


def regenerate_until_passing(
    generate: Callable[[int], tuple[str, str]],
    score: Callable[[str], float] | None,
    tau: float = DEFAULT_TAU,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> CheckedCaption:
    """Generate, score, regenerate while below ``tau``, at most ``max_attempts`` generations; keep the best.

    ``generate(attempt)`` (attempt counts from 1) returns ``(prompt used, caption)``; the caller picks the base
    prompt for attempt 1 and a refined prompt after. ``score(caption)`` returns the similarity, or ``score=None``
    disables the check (one generation, ``passed=None``). An exception of the first generation propagates; one of
    a later generation ends the loop with the best caption so far and its message in ``error``.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    best: CheckedCaption | None = None
    history: list[tuple[str, str, float | None]] = []
    for attempt in range(1, max_attempts + 1):
        try:
            prompt, text = generate(attempt)
        except Exception as e:  # noqa: BLE001 - any backend failure; the first one is the caller's to record
            if best is None:
                raise
            best.error = f"attempt {attempt}: {e}"
            break
        value = None if score is None else float(score(text))
        history.append((prompt, text, value))
        if best is None or (value is not None and best.score is not None and value > best.score):
            best = CheckedCaption(text=text, prompt=prompt, score=value, passed=None, attempts=attempt)
        if value is None or value >= tau:
            break
    assert best is not None
    best.attempts = len(history) + (1 if best.error else 0)
    best.history = history
    best.passed = None if best.score is None else bool(best.score >= tau)
    return best


class ClipScorer:
    """CLIP image and text embeddings and their :func:`similarity`.

    ``model`` is any transformers model with ``get_image_features`` and ``get_text_features`` (``CLIPModel``,
    ``SiglipModel``, …), ``tokenizer`` its tokenizer, ``image_processor`` its image processor. Build with
    :meth:`from_pretrained` (a local folder), :meth:`tiny` (random, tests) or :meth:`from_config`.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, image_processor: Any, name: str = "clip",
                 max_length: int | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = check_tokenizer(tokenizer, f"ClipScorer {name}")
        self.image_processor = image_processor
        self.name = name
        limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
        text_cfg = getattr(model.config, "text_config", model.config)
        self.max_length = int(max_length or (limit if 0 < limit < 100_000 else text_cfg.max_position_embeddings))

    @classmethod
    def tiny(cls, seed: int = 0, image_size: int = 32, dim: int = 16) -> "ClipScorer":
        """A random tiny ``CLIPModel`` (weights from ``seed``), the in-memory tokenizer and a PIL image processor."""
        from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

        tok = tiny_clip_tokenizer(77)
        text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, projection_dim=dim)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      image_size=image_size, patch_size=max(1, image_size // 4), projection_dim=dim)
        cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=dim)
        with seeded(seed):
            model = CLIPModel(cfg)
        proc = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                     crop_size={"height": image_size, "width": image_size})
        return cls(model, tok, proc, name=f"tiny-clip-s{seed}")

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "ClipScorer":
        """Load model, tokenizer and image processor from a local folder (never the hub)."""
        folder, _ = model_folder(path, "ClipScorer")
        tok = load_tokenizer(folder, "ClipScorer")
        from transformers import AutoImageProcessor, AutoModel

        with quiet_transformers():
            try:
                proc = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
            except (OSError, ValueError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ValueError(f"ClipScorer: no image processor config in {folder} ({first})") from None
            model, info = AutoModel.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise ValueError(f"ClipScorer: {folder} holds a {type(model).__name__}, not an image-text model with "
                             "get_image_features/get_text_features (e.g. CLIPModel)")
        missing = sorted(info.get("missing_keys") or [])
        if missing:
            raise ValueError(f"ClipScorer: {folder} lacks weights {missing[:3]}; they would be random")
        return cls(model.to(device), tok, proc, name=folder.resolve().name)

    @classmethod
    def from_config(cls, value: str | dict | None) -> "ClipScorer | None":
        """``None``/``''`` -> no check; ``'tiny'`` or ``{tiny: true, seed}`` -> :meth:`tiny`; else a folder."""
        if value in (None, "", False):
            return None
        if isinstance(value, dict):
            if value.get("path") in (None, "tiny"):
                return cls.tiny(seed=int(value.get("seed", 0)))
            return cls.from_pretrained(value["path"])
        if value == "tiny":
            return cls.tiny()
        return cls.from_pretrained(value)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write model, tokenizer and image processor so that :meth:`from_pretrained` reads them back."""
        folder = Path(folder)
        with quiet_transformers():
            self.model.save_pretrained(str(folder))
            self.tokenizer.save_pretrained(str(folder))
            self.image_processor.save_pretrained(str(folder))
        return folder

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def image_embedding(self, image: np.ndarray) -> torch.Tensor:
        """CLIP embedding (d,) of an H×W×3 uint8 image."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"ClipScorer: expected an H×W×3 uint8 image, got shape {image.shape} {image.dtype}")
        pixels = self.image_processor(images=[image], return_tensors="pt")["pixel_values"].to(self.device)
        with torch.inference_mode():
            out = self.model.get_image_features(pixel_values=pixels)
        out = out if isinstance(out, torch.Tensor) else out.pooler_output
        return out[0].float().cpu().clone()

    def _text_forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model.get_text_features(**batch)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """CLIP embeddings n×d of ``texts`` (long ones: mean over sentences)."""
        return encode_chunked(texts, self.tokenizer, self._text_forward, self.max_length, self.device)

    def scores(self, image: np.ndarray | torch.Tensor, texts: Sequence[str]) -> list[float]:
        """:func:`similarity` of each text with ``image`` (an H×W×3 uint8 image or its precomputed embedding)."""
        emb = image if isinstance(image, torch.Tensor) else self.image_embedding(image)
        return [float(s) for s in similarity(emb.unsqueeze(0), self.text_embeddings(list(texts)))]

    def score(self, image: np.ndarray | torch.Tensor, text: str) -> float:
        return self.scores(image, [text])[0]


__all__ = ["similarity", "ClipScorer", "CheckedCaption", "regenerate_until_passing", "DEFAULT_TAU",
           "DEFAULT_MAX_ATTEMPTS"]
