"""The three recipes behind ``rsmoe pretrain``: train, save the folder, measure, write the model card.

Each ``run_*`` function trains from the parsed arguments (:mod:`rsmoe.pretrain.cli`), saves the model into a
staging folder and measures its quality; :func:`run_recipe` then writes the card and moves the folder into place
(atomically: the output folder is either the old one or the complete new one).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..hf_logging import quiet_transformers
from ..io.atomic import atomic_directory
from .card import write_card
from .cli import HELD_OUT_ACQUISITIONS, RECIPES

Log = Callable[[str], None] | None


def command_line(args: argparse.Namespace) -> str:
    """The ``rsmoe pretrain`` command that reproduces this run (every recipe flag spelled out)."""
    parts = ["rsmoe", "pretrain", args.model, "--out", str(args.out)]
    keys = list(RECIPES[args.model]) + ["threads"]
    for key in keys:
        parts += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    return " ".join(parts)


def _held_out(args: argparse.Namespace) -> Any:
    from .corpus import build_corpus

    return build_corpus(args.corpus_seed, HELD_OUT_ACQUISITIONS, first_acquisition=args.acquisitions)


def run_backbone(args: argparse.Namespace, folder: Path, log: Log) -> dict[str, Any]:
    """Pretrain, save, and measure frozen + FPN mIoU against random weights of the same shape."""
    from .backbone import BACKBONE_ARCH, pretrain_backbone

    model, result = pretrain_backbone(args.method, args.steps, args.batch, args.lr, args.seed, args.corpus_seed,
                                      args.acquisitions, warmup=args.warmup, log=log)
    with quiet_transformers():
        model.save_pretrained(str(folder))
    quality: dict[str, Any] = {}
    if not args.no_eval:
        from ..data.synthetic import synthesize
        from .quality import DEMO_DATA_SEED, QUALITY_ITERATIONS, frozen_fpn_miou

        data = synthesize(args.eval_data, seed=DEMO_DATA_SEED, show_progress=False,
                          datasets=("multispectral",))["multispectral"]
        with tempfile.TemporaryDirectory(prefix="rsmoe-pretrain-eval-") as runs:
            for band_init in ("cyclic", "wavelength"):
                for name, weights in (("pretrained", folder), ("random", dict(BACKBONE_ARCH))):
                    if log:
                        log(f"[eval] frozen + FPN, {name} backbone, band_init {band_init}")
                    quality[f"{name}/{band_init}"] = frozen_fpn_miou(weights, data, f"{runs}/{name}-{band_init}",
                                                                     band_init=band_init,
                                                                     iterations=QUALITY_ITERATIONS)
    return {"result": result, "quality": quality, "arch": model.config.to_dict()}


def run_depth(args: argparse.Namespace, folder: Path, log: Log) -> dict[str, Any]:
    """Train, save, and measure height RMSE on held-out corpus tiles and on the benchmark's GF-2 val tiles."""
    from .depth import pretrain_depth

    model, result, train_mean = pretrain_depth(args.steps, args.batch, args.lr, args.seed, args.corpus_seed,
                                               args.acquisitions, warmup=args.warmup, log=log)
    with quiet_transformers():
        model.save_pretrained(str(folder))
    quality: dict[str, Any] = {}
    if not args.no_eval:
        from .quality import height_rmse

        held = _held_out(args)
        quality["train_mean_height_m"] = train_mean
        quality["corpus_held_out"] = height_rmse(model, torch.from_numpy(held.images),
                                                 torch.from_numpy(held.heights), train_mean)
        quality["benchmark_gf2_val"] = benchmark_height_rmse(model, args.eval_data, train_mean)
    return {"result": result, "quality": quality, "arch": model.config.to_dict()}


def benchmark_height_rmse(model: Any, eval_data: str, train_mean: float) -> dict[str, float]:
    """Height RMSE on the synthetic GF-2 val tiles (their R, G, B bands, normalised as the dataset does)."""
    from ..data.prepared import PreparedDataset, load_dataset_info
    from ..data.synthetic import synthesize
    from ..sensors import rgb_band_indices
    from .quality import height_rmse

    root = synthesize(eval_data, seed=0, show_progress=False, datasets=("multispectral",))["multispectral"]
    ds = PreparedDataset(root, split="val", domains=["GF-2"], transform=load_dataset_info(root).normalizer())
    samples = [ds[i] for i in range(len(ds))]
    rgb = rgb_band_indices([float(w) for w in samples[0]["wavelengths"]])
    images = torch.stack([s["image"][rgb] for s in samples])
    heights = torch.stack([s["height"] for s in samples])
    return height_rmse(model, images, heights, train_mean)


def run_clip(args: argparse.Namespace, folder: Path, log: Log) -> dict[str, Any]:
    """Train, save (model, tokenizer, image processor), and measure caption top-1 among 16 on held-out tiles."""
    from .clip import corpus_renderings, pretrain_clip, tile_captions

    model, tokenizer, processor, result = pretrain_clip(args.steps, args.batch, args.lr, args.seed,
                                                        args.corpus_seed, args.acquisitions, warmup=args.warmup,
                                                        log=log)
    with quiet_transformers():
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        processor.save_pretrained(str(folder))
    quality: dict[str, Any] = {}
    if not args.no_eval:
        from ..text.quality import ClipScorer
        from .quality import caption_top1

        held = _held_out(args)
        scorer = ClipScorer.from_pretrained(folder)
        quality["held_out"] = caption_top1(scorer, corpus_renderings(held.images), tile_captions(held.labels))
    return {"result": result, "quality": quality, "arch": model.config.to_dict()}


RUNNERS = {"backbone": run_backbone, "depth": run_depth, "clip": run_clip}


def run_recipe(args: argparse.Namespace) -> Path:
    """Train, measure and write ``args.out`` (model files, ``README.md``, ``recipe.json``); returns the folder."""
    log: Log = None if args.quiet else (lambda s: print(f"[pretrain {args.model}] {s}", flush=True))
    start, cpu = time.perf_counter(), time.process_time()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(args.out) as folder:
        run = RUNNERS[args.model](args, folder, log)
        run["total_seconds"] = time.perf_counter() - start
        run["total_cpu_seconds"] = time.process_time() - cpu
        write_card(folder, args.model, command_line(args), vars(args), run)
    return Path(args.out)


__all__ = ["RUNNERS", "command_line", "run_backbone", "run_clip", "run_depth", "run_recipe"]
