"""The quality figures of the shipped models' cards, measured the way a user would measure them.

* Backbone (:func:`frozen_fpn_miou`): ``rsmoe train`` of the demo config (``rsmoe/resources/demo.yaml``: FPN head,
  :data:`QUALITY_ITERATIONS` on the synthetic GF-2 domain) with ``adapter.type=none``, once with the pretrained folder and once
  with random weights of the same shape (same head, iterations, seeds); mIoU on GF-2 ``val`` (source) and on the
  target sensors' ``test`` tiles.
* Depth (:func:`height_rmse`): RMSE in metres on held-out tiles against predicting the training mean everywhere.
* CLIP (:func:`caption_top1`): for held-out tiles in groups of 16, how often the tile's own caption scores highest
  among the group's 16 captions (chance: 1/16).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

DEMO_DATA_SEED = 0
QUALITY_ITERATIONS = 600  # the backbone card's FPN training length (the demo itself trains fewer, to fit 5 min)
FPN_OVERRIDES = ("adapter.type=none",)


def frozen_fpn_miou(backbone: str | Path | dict[str, Any], data_root: str | Path, out_dir: str | Path,
                    band_init: str = "cyclic", iterations: int | None = None,
                    overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Train frozen backbone + FPN with the demo config and return ``{"source": mIoU, "targets": {domain: mIoU},
    "target_mean": mIoU, "seconds": wall time}`` (mIoU as fractions).

    ``backbone``: a pretrained folder, or a dict of DINOv3 config fields for random weights (``backbone.seed`` of
    the demo config draws them). ``data_root``: the synthetic ``multispectral`` prepared folder.
    """
    import time

    from ..config import load_config
    from ..demo import demo_config_path
    from ..engine.runner import train

    sets = [f"data.root={data_root}", f"output_dir={out_dir}", f"backbone.band_init={band_init}", *FPN_OVERRIDES]
    if isinstance(backbone, dict):
        fields = ", ".join(f"{k}: {'null' if v is None else v}" for k, v in backbone.items())
        sets += ["backbone.pretrained=null", f"backbone.config={{{fields}}}"]
    else:
        sets += [f"backbone.pretrained={backbone}", "backbone.config={}"]
    if iterations is not None:
        sets.append(f"train.iterations={int(iterations)}")
    cfg = load_config(demo_config_path(), [*sets, *overrides])
    start = time.perf_counter()
    metrics = train(cfg, progress=False)
    domains = metrics["domains"]
    source = cfg.data.source_domains[0]
    return {"source": float(domains[source]["mIoU"]),
            "targets": {d: float(domains[d]["mIoU"]) for d in cfg.data.target_domains if d in domains},
            "target_mean": float(metrics["target_mean"]["mIoU"]), "seconds": time.perf_counter() - start,
            "iterations": cfg.train.iterations, "band_init": band_init}


def rmse(pred: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray) -> float:
    """Root mean squared difference over the finite pixels of ``truth``."""
    p, t = torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(truth, dtype=torch.float64)
    valid = torch.isfinite(t)
    return float(((p - t)[valid] ** 2).mean().sqrt())


def height_rmse(model: Any, images: torch.Tensor, heights: torch.Tensor, train_mean: float) -> dict[str, float]:
    """RMSE (m) of ``model``'s heights on (images, heights) and of the constant ``train_mean`` baseline."""
    from .depth import predict_heights

    pred = predict_heights(model, images)
    return {"rmse_m": rmse(pred, heights), "mean_baseline_rmse_m": rmse(torch.full_like(heights, train_mean),
                                                                      heights), "tiles": int(images.shape[0])}


def caption_top1(scorer: Any, renderings: np.ndarray, captions: list[list[str]], group: int = 16) -> dict[str, Any]:
    """Top-1 accuracy of matching each tile to its own caption among the ``group`` captions of its group of tiles,
    per prompt (1, 2, 3) and their mean, scored by a :class:`rsmoe.text.quality.ClipScorer` (the loader and the
    scoring path of the caption check). A pick counts as right when its text equals the tile's own caption (two
    tiles of a group can have the same caption, e.g. the same class list)."""
    n = (len(captions) // group) * group
    if n == 0:
        raise ValueError(f"caption_top1: need at least {group} tiles, got {len(captions)}")
    image_emb = torch.stack([scorer.image_embedding(r) for r in renderings[:n]])
    result: dict[str, Any] = {"tiles": n, "group": group, "chance": 1.0 / group}
    for p in range(len(captions[0])):
        texts = [caps[p] for caps in captions[:n]]
        text_emb = scorer.text_embeddings(texts)
        right = 0
        for start in range(0, n, group):
            sim = torch.nn.functional.cosine_similarity(image_emb[start:start + group, None],
                                                        text_emb[None, start:start + group], dim=-1)
            picks = sim.argmax(1).tolist()
            right += sum(texts[start + k] == texts[start + j] for j, k in enumerate(picks))
        result[f"prompt{p + 1}"] = right / n
    result["mean"] = float(np.mean([result[f"prompt{p + 1}"] for p in range(len(captions[0]))]))
    return result


def percent(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100.0 * x:.1f}"


__all__ = ["caption_top1", "frozen_fpn_miou", "height_rmse", "percent", "rmse"]
