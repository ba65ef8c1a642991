"""Model cards of the shipped models: ``README.md`` (for people) and ``recipe.json`` (the same facts for programs).

A card records what the model is and is not, the architecture, the exact reproducing command with its seeds,
steps and batch, the wall and CPU time, the environment, the size and SHA-256 of the weights, and the quality
figures measured by :mod:`rsmoe.pretrain.quality`.
"""
from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write_json, atomic_write_text

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


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
        "weights": {"file": WEIGHTS, "bytes": weights.stat().st_size, "sha256": sha256(weights)},
        "environment": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "python": platform.python_version(), "cpu_count": os.cpu_count(),
                        "threads": torch.get_num_threads()},
        "quality": run["quality"], "architecture": run["arch"],
    }
    atomic_write_json(folder / "recipe.json", record)
    atomic_write_text(folder / "README.md", card_markdown(kind, record, notes))
    return record


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
        "## Use", "", "```yaml", usage.format(folder=f"<this folder>"), "```", "",
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


__all__ = ["WEIGHTS", "card_markdown", "quality_lines", "sha256", "write_card"]
