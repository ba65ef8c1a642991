"""Model cards of the shipped models: ``README.md`` (for people) and ``recipe.json`` (the same facts for programs).

A card records what the model is and is not, the architecture, the exact reproducing command with its seeds,
steps and batch, the wall and CPU time, the environment, the size and SHA-256 of the weights, and the quality
figures measured by :mod:`rsmoe.pretrain.quality`.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write_json, atomic_write_text
from ..io.digest import file_sha256

WEIGHTS = "model.safetensors"

_WHAT = {
    "backbone": ("rsmoe-dinov3-synthetic", "a small ViT in the transformers DINOv3 architecture (DINOv3ViTModel), "
                 "pretrained self-supervised (no labels) on RGB tiles of rsmoe's synthetic world",
                 "backbone:\n  kind: dinov3\n  pretrained: {folder}\n  config: {{}}\n  band_init: cyclic   "
                 "# or wavelength\n  taps: [0, 1, 2, 3]"),
    "depth": ("rsmoe-depth-anything-synthetic", "a small monocular height model in the transformers Depth Anything "
              "architecture (DepthAnythingForDepthEstimation: DINOv2 encoder + DPT head), trained to regress the "
              "synthetic world's height field from RGB",
              "depth:\n  enabled: true\n  pretrained: {folder}\n  config: {{}}"),
    "clip": ("rsmoe-clip-synthetic", "a small CLIP pair (transformers CLIPModel) with its own tokenizer, trained "
             "contrastively on synthetic tiles and their statistics captions",
             "mpers:\n  text_encoder: {folder}\n  text_dim: null\n# caption check: captions config quality.clip: "
             "{folder}"),
}


#: measurements behind each model's design, quoted in its card (how each was measured is stated with it)
NOTES = {
    "backbone": """\
**Why patch 4 (16×16 tokens on a 64-px tile).** The world's roads are 1–3 px wide and its buildings 2.5–8 px,
and the FPN head sees nothing finer than bilinearly upsampled tokens. Measured on the benchmark's GF-2 tiles
(seed 0): an oracle that knows every token's exact class histogram and upsamples it bilinearly reaches 50.5 %
val mIoU at patch 8, 69.6 % at patch 4 and 87.2 % at patch 2; end-to-end *supervised* training of the whole
architecture with the FPN head (backbone unfrozen, labels, 1500 iterations) reaches 51.6 % at patch 8 (width
128) and 75.2 % at patch 4 (width 96). So with patch 8 no backbone, pretrained or not, can reach 60 %.

**Cost** (CPU time per training iteration, batch 8 of 64-px 4-band tiles, one thread, demo heads): width 64 /
patch 8 (the former demo backbone): frozen 66 ms, Rein 78, SpectralMoE + depth 94, MPerS 66; width 128 / patch 8:
65, 95, 152, 86; **width 96 / patch 4 (this model): 223, 346, 416, 239**; width 64 / patch 4: 201, 253, 387, 242.
At patch 4 the FPN's finest level is 64×64, which dominates the frozen variant's cost.

**Choice of the self-supervised method**, at an equal CPU budget of 480 s each (width 96, patch 4, 4096 corpus
tiles), frozen backbone + FPN head trained for 300 iterations on cached features of the 48 GF-2 training tiles,
GF-2 val mIoU (%) averaged over two head seeds:

| backbone | band_init cyclic | band_init wavelength |
|---|---|---|
| random weights (same shape) | 59.2 | 61.3 |
| mim (masked image modelling, 322 steps of 64) | 58.4 | 60.7 |
| distill (DINO + iBOT, 236 steps of 32) | 56.2 | 59.8 |
| **xsensor** (DINO + iBOT across two cameras, 173 steps of 32) | **59.6** | **61.2** |

xsensor is the best of the three objectives (and the one that teaches what domain generalisation needs: the same
ground seen by different cameras and lights gives the same patch features), so the recipe uses it.

**Why pretrained and random are this close here — the measured limit.** Random DINOv3 initialisation (weights
of std 0.02) leaves every token close to a full-rank linear projection of its patch's pixels (48 effective input
values into 96 dimensions), and the classes of this world are decided mostly by local spectra: a linear probe of
a token's majority class (GF-2 train → val, band_init wavelength, best of the four layers) reaches 68.4 % patch
mIoU on random tokens versus 67.4–67.7 % on the three pretrained models above, and an MLP on the raw patch pixels
reaches 73.9 %. The patch-4 oracle above (69.6 %) bounds what even a perfectly
semantic token could add to the random backbone's ~61 %: under 10 points. Moreover `band_init` merges the four
bands into the three RGB kernels (wavelength: R+NIR share the red kernel; cyclic: B+NIR the red one, R the blue
one): a probe on raw patch pixels loses 6.6 (wavelength) and 9.0 (cyclic) points of patch mIoU against the four
separate bands, information no RGB-pretrained frozen backbone can recover. The 60 % target is met (by random
weights of this shape too); a 10-point lead over random weights is not reachable in this world with a frozen
backbone and this head.""",
}


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f}"


def quality_lines(kind: str, q: dict[str, Any]) -> list[str]:
    """Markdown lines with the quality figures of a card."""
    if not q:
        return ["Not measured (the run used `--no-eval`)."]
    if kind == "backbone":
        lines = ["Frozen backbone + FPN head, `rsmoe train` of the demo config (`rsmoe/resources/demo.yaml`, "
                 "`adapter.type=none`, 600 iterations, batch 8, lr 1e-3, train seed 42) on the synthetic GF-2 "
                 "domain (48 train tiles, benchmark seed 0); mIoU (%) on GF-2 val (source) and on the target "
                 "sensors' test tiles. *Random* = the same architecture with random weights (demo `backbone.seed` 0), "
                 "same head, iterations and seeds.", "",
                 "| backbone | band_init | GF-2 (source) | GF-1 | PlanetScope | Sentinel-2 | target mean |",
                 "|---|---|---|---|---|---|---|"]
        for key, m in q.items():
            name, band_init = key.split("/")
            t = m["targets"]
            lines.append(f"| {name} | {band_init} | **{_pct(m['source'])}** | {_pct(t.get('GF-1', float('nan')))} | "
                         f"{_pct(t.get('PlanetScope', float('nan')))} | {_pct(t.get('Sentinel-2', float('nan')))} | "
                         f"{_pct(m['target_mean'])} |")
        return lines
    if kind == "depth":
        lines = ["Height RMSE in metres (surface height above the tile's lowest ground point); the baseline predicts "
                 f"the mean training height ({q['train_mean_height_m']:.2f} m) everywhere.", "",
                 "| tiles | model RMSE (m) | mean baseline RMSE (m) |", "|---|---|---|"]
        names = {"corpus_held_out": "held-out corpus acquisitions (new cameras and scenes)",
                 "benchmark_gf2_val": "synthetic benchmark GF-2 val (R, G, B bands; no shadows or shading)"}
        for key, label in names.items():
            if key in q:
                m = q[key]
                lines.append(f"| {label}, {m['tiles']} tiles | **{m['rmse_m']:.2f}** | {m['mean_baseline_rmse_m']:.2f} |")
        return lines
    m = q["held_out"]
    return ["Top-1 accuracy (%) of picking a held-out tile's own caption among the 16 captions of its group of 16 "
            f"tiles ({m['tiles']} tiles from held-out acquisitions; chance {_pct(m['chance'])} %), scored through "
            "`ClipScorer.from_pretrained` (the caption check's loader and similarity).", "",
            "| prompt 1 (class list) | prompt 2 (class shares) | prompt 3 (paragraph) | mean |", "|---|---|---|---|",
            f"| {_pct(m['prompt1'])} | {_pct(m['prompt2'])} | {_pct(m['prompt3'])} | **{_pct(m['mean'])}** |"]


def write_card(folder: Path, kind: str, command: str, args: dict[str, Any], run: dict[str, Any],
               notes: str = "") -> dict[str, Any]:
    """Write ``README.md`` and ``recipe.json`` into ``folder`` (which already holds the weights); returns the
    recipe record."""
    import torch
    import transformers

    weights = folder / WEIGHTS
    result = run["result"]
    record = {
        "model": kind, "command": command,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items() if k != "func"},
        "steps": result.steps, "train_seconds": round(result.seconds, 1),
        "total_seconds": round(run["total_seconds"], 1), "total_cpu_seconds": round(run["total_cpu_seconds"], 1),
        "final_loss": result.last, "loss_history": result.history,
        "weights": {"file": WEIGHTS, "bytes": weights.stat().st_size, "sha256": file_sha256(weights)},
        "environment": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "python": platform.python_version(), "cpu_count": os.cpu_count(),
                        "threads": torch.get_num_threads()},
        "quality": run["quality"], "architecture": run["arch"],
    }
    atomic_write_json(folder / "recipe.json", record)
    atomic_write_text(folder / "README.md", card_markdown(kind, record, notes or NOTES.get(kind, "")))
    return record


def refresh_card(folder: str | os.PathLike) -> Path:
    """Rewrite ``README.md`` from the folder's ``recipe.json`` (e.g. after the card template changed)."""
    folder = Path(folder)
    record = json.loads((folder / "recipe.json").read_text())
    return atomic_write_text(folder / "README.md", card_markdown(record["model"], record,
                                                                  NOTES.get(record["model"], "")))


def card_markdown(kind: str, record: dict[str, Any], notes: str = "") -> str:
    """The README.md of a model folder from its recipe record."""
    name, what, usage = _WHAT[kind]
    w, env = record["weights"], record["environment"]
    lines = [
        f"# {name}", "",
        f"rsmoe's own stand-in: {what}. It is **not** a released foundation model (not DINOv3, not Depth Anything, "
        "not OpenAI CLIP): it has seen only rsmoe's synthetic world, so it lets the demo, the tests and seeded studies "
        "measure real pretrained-versus-random behaviour on a machine without downloads. For real work, convert "
        "and load the released weights instead (`rsmoe convert --list`).", "",
        "## Use", "", "```yaml", usage.format(folder=f"rsmoe:{kind}   # the installed copy; or this folder's path"),
        "```", "",
        "## Recipe", "", "Reproduce on a CPU (the result is bitwise identical for the same torch build and thread "
        "count):", "", "```bash", record["command"], "```", "",
        f"- steps: {record['steps']}, final training values: "
        + ", ".join(f"{k} {v:.4g}" for k, v in record["final_loss"].items()),
        f"- wall time: {record['train_seconds']:.0f} s training, {record['total_seconds']:.0f} s with corpus "
        f"rendering and the quality measurements ({record['total_cpu_seconds']:.0f} s CPU time), "
        f"{env['threads']} torch thread(s) on a shared {env['cpu_count']}-core machine",
        f"- environment: torch {env['torch']}, transformers {env['transformers']}, Python {env['python']}",
        "- data: the pretraining corpus of `rsmoe.pretrain.corpus` (RGB only; cameras, regions and light randomised "
        "per acquisition/tile; seeds disjoint from the benchmark's); inputs standardised per acquisition and band, "
        "the convention of the fine-tuning datasets (per-band mean/std of the training split)", "",
        "## Weights", "", f"`{w['file']}`: {w['bytes']:,} bytes, SHA-256 `{w['sha256']}`", "",
        "## Quality", "", *quality_lines(kind, record["quality"]), "",
    ]
    if notes:
        lines += ["## Notes", "", notes.strip(), ""]
    return "\n".join(lines)


__all__ = ["NOTES", "WEIGHTS", "card_markdown", "quality_lines", "refresh_card", "write_card"]
