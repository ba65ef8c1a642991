"""``rsmoe pretrain backbone|depth|clip``: reproduce the shipped models (:mod:`rsmoe.pretrained`) from their recipes.

Every default below is the shipped recipe; the model card (``README.md`` in the output folder) records the exact
command, the seeds, steps, wall time, SHA-256 of the weights and the measured quality. No torch import at module
level: ``rsmoe --help`` stays fast.
"""
from __future__ import annotations

import argparse
from typing import Any

#: the shipped recipes (every flag's default); the cards quote them
RECIPES: dict[str, dict[str, Any]] = {
    "backbone": dict(method="xsensor", steps=550, batch=32, lr=5e-4, warmup=50, seed=0, corpus_seed=0,
                     acquisitions=512),
    "depth": dict(steps=1200, batch=16, lr=1e-3, warmup=100, seed=0, corpus_seed=0, acquisitions=512),
    "clip": dict(steps=1200, batch=64, lr=5e-4, warmup=100, seed=0, corpus_seed=0, acquisitions=512),
}
HELD_OUT_ACQUISITIONS = 16

_HELP = {
    "backbone": "self-supervised DINOv3-architecture ViT (no labels; RGB corpus)",
    "depth": "Depth Anything-architecture height model (regresses the corpus height field from RGB)",
    "clip": "CLIP pair trained on corpus tiles and their statistics captions",
}
_DESCRIPTIONS = {
    "backbone": """Self-supervised pretraining (no labels) of the shipped DINOv3-architecture ViT (DINOv3ViTModel: patch 4,
width 96, 4 blocks, 4 heads, MLP 384, 4 registers, 2-D RoPE; 16x16 tokens on a 64-px tile) on the RGB corpus.
Data: --acquisitions x 16 tiles of 64 px from corpus --corpus-seed (randomised cameras, regions, light; RGB
only, never NIR), standardised per acquisition and band. Method (--method): xsensor = DINO + iBOT
self-distillation with an EMA teacher where the two views of a tile are the same ground through two cameras
under two lights and every patch learns the teacher's patch of the other rendering; distill = the same with two
crops of one rendering; mim = masked image modelling (50 % of the patches replaced by the mask token, an MLP
decoder regresses their pixels). AdamW (betas 0.9/0.95, weight decay 0.05), --warmup linear warm-up then cosine
to 5 % of --lr, gradient clipping at 1, --steps steps of --batch tiles (dihedral transforms, mild photometric
changes), weights and batches drawn from --seed. Output: --out, a save_pretrained folder (config.json,
model.safetensors) for `backbone.kind: dinov3` + `backbone.pretrained: <folder>`, with README.md (model card)
and recipe.json. Quality (unless --no-eval): frozen + FPN mIoU of the demo config on the synthetic GF-2 domain
and the target sensors, against random weights of the same shape, for band_init cyclic and wavelength.""",
    "depth": """Supervised height regression of the shipped Depth Anything-architecture model
(DepthAnythingForDepthEstimation: a DINOv2 encoder exactly as wide and deep as the shipped backbone, patch 4, a
DPT neck and a metric head up to 80 m) from standardised RGB corpus tiles to the corpus height field (metres
above the tile's lowest ground: buildings 3-40 m, trees 5-25 m, terrain relief up to 20 m). Loss: MSE in units
of 10 m. Data, optimiser and seeds as for `rsmoe pretrain backbone` (no class labels). Output: --out, a
save_pretrained folder for `depth.pretrained: <folder>` (DepthEncoder.from_pretrained), with README.md and
recipe.json. Quality: height RMSE on held-out corpus acquisitions and on the synthetic GF-2 val tiles, against
predicting the training mean.""",
    "clip": """Contrastive pretraining of the shipped CLIP pair (CLIPModel: vision and text towers of width 96, 4 blocks,
projections to 64; vision on 64-px tiles with patch 8; text context 128) on corpus tiles rendered as uint8 RGB
(2-98 % stretch, as `rsmoe captions` renders tiles) and their three statistics captions (labels are used only
to write captions). Tokenizer: CLIP byte-level BPE with merges learned from the training captions, saved in the
folder. Loss: symmetric InfoNCE with a learnable temperature; identical captions in a batch are not negatives.
Optimiser and seeds as for `rsmoe pretrain backbone`. Output: --out, a save_pretrained folder with tokenizer and
image processor for `mpers.text_encoder: <folder>` (TextEncoder.from_pretrained) and the caption check
(ClipScorer.from_pretrained), with README.md and recipe.json. Quality: top-1 accuracy of picking a held-out
tile's own caption among 16.""",
}


def add_pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``backbone``, ``depth`` and ``clip`` subcommands (defaults = the shipped recipes)."""
    sub = parser.add_subparsers(dest="model", required=True, metavar="{backbone,depth,clip}")
    for name, recipe in RECIPES.items():
        p = sub.add_parser(name, help=_HELP[name],
                           description=_DESCRIPTIONS[name], formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--out", required=True, help="output folder (replaced atomically when the run succeeds)")
        if name == "backbone":
            p.add_argument("--method", choices=("mim", "distill", "xsensor"), default=recipe["method"],
                           help="self-supervised objective (default %(default)s)")
        p.add_argument("--steps", type=int, default=recipe["steps"], help="optimiser steps (default %(default)s)")
        p.add_argument("--batch", type=int, default=recipe["batch"], help="tiles per step (default %(default)s)")
        p.add_argument("--lr", type=float, default=recipe["lr"], help="peak learning rate (default %(default)s)")
        p.add_argument("--warmup", type=int, default=recipe["warmup"], help="warm-up steps (default %(default)s)")
        p.add_argument("--seed", type=int, default=recipe["seed"],
                       help="seed of the weights, batches and augmentations (default %(default)s)")
        p.add_argument("--corpus-seed", type=int, default=recipe["corpus_seed"],
                       help="seed of the pretraining corpus (default %(default)s)")
        p.add_argument("--acquisitions", type=int, default=recipe["acquisitions"],
                       help="corpus acquisitions of 16 tiles (default %(default)s); the next "
                            f"{HELD_OUT_ACQUISITIONS} are held out for the quality figures")
        p.add_argument("--threads", type=int, default=1,
                       help="torch CPU threads (default %(default)s; results are bitwise reproducible for a given "
                            "thread count)")
        p.add_argument("--no-eval", action="store_true", help="skip the quality measurements")
        p.add_argument("--eval-data", default="data/synthetic",
                       help="where the synthetic benchmark is (or is written) for the quality figures "
                            "(default %(default)s)")
        p.add_argument("--quiet", action="store_true", help="no progress lines")


def run_pretrain_from_args(args: argparse.Namespace) -> int:
    """Run the chosen recipe, write the folder with its model card; returns the exit status."""
    import torch

    from .recipes import run_recipe

    torch.set_num_threads(max(1, int(args.threads)))
    folder = run_recipe(args)
    print(f"{args.model}: {folder}")
    return 0


__all__ = ["HELD_OUT_ACQUISITIONS", "RECIPES", "add_pretrain_arguments", "run_pretrain_from_args"]
