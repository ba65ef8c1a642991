"""Human-readable results: Markdown tables of per-domain metrics and PNG panels (image / truth / predictions)."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OutputError
from .io.atomic import atomic_path, atomic_write_text
from .io.writable import describe

SUMMARY_KEYS = ("mIoU", "mAcc", "mF1", "OA")
LOSS_CURVE_NAME = "loss_curve.png"


def _pct(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def metrics_table(results: dict[str, dict], key: str = "mIoU") -> str:
    """Rows = methods, columns = domains (+ mean over targets) for one summary metric, in percent."""
    domains: list[str] = []
    for res in results.values():
        for d in res["domains"]:
            if d not in domains:
                domains.append(d)
    head = f"| method | {' | '.join(domains)} | target mean |"
    lines = [head, "|" + "---|" * (len(domains) + 2)]
    for method, res in results.items():
        cells = [_pct(res["domains"].get(d, {}).get(key, math.nan)) for d in domains]
        lines.append(f"| {method} | {' | '.join(cells)} | {_pct(res.get('target_mean', {}).get(key, math.nan))} |")
    return "\n".join(lines)


def per_class_table(result: dict, domain: str) -> str:
    per_class = result["domains"][domain]["per_class"]
    lines = ["| class | IoU | Acc | F1 |", "|---|---|---|---|"]
    for name, vals in per_class.items():
        lines.append(f"| {name} | {_pct(vals['IoU'])} | {_pct(vals['Acc'])} | {_pct(vals['F1'])} |")
    return "\n".join(lines)


def eval_report_markdown(metrics: dict, title: str = "Evaluation") -> str:
    """Markdown of one run's metrics (the dict of ``rsmoe.engine.runner.evaluate``): mIoU, mAcc, mF1, OA per domain
    (+ the mean over target domains), then per-class IoU with one column per domain, in percent."""
    domains = metrics["domains"]
    lines = [f"# {title}", "", "| domain | mIoU | mAcc | mF1 | OA |", "|---|---|---|---|---|"]
    for name, m in domains.items():
        lines.append(f"| {name} | " + " | ".join(_pct(m.get(k, math.nan)) for k in SUMMARY_KEYS) + " |")
    if metrics.get("target_mean"):
        t = metrics["target_mean"]
        lines.append("| target mean | " + " | ".join(_pct(t.get(k, math.nan)) for k in SUMMARY_KEYS) + " |")
    excluded: list[str] = []
    for m in domains.values():
        excluded += [c for c in m.get("excluded_from_means", []) if c not in excluded]
    if excluded:
        lines += ["", f"mIoU, mAcc and mF1 leave out {', '.join(excluded)}; OA counts every class."]
    classes: list[str] = []
    for m in domains.values():
        classes += [c for c in m.get("per_class", {}) if c not in classes]
    if classes:
        names = list(domains)
        lines += ["", "## IoU per class", "", f"| class | {' | '.join(names)} |", "|" + "---|" * (len(names) + 1)]
        for c in classes:
            cells = [_pct(domains[d].get("per_class", {}).get(c, {}).get("IoU", math.nan)) for d in names]
            label = f"{c} (excluded)" if c in excluded else c
            lines.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def write_eval_report(path: str | Path, metrics: dict, title: str = "Evaluation") -> Path:
    """Write :func:`eval_report_markdown` to ``path`` atomically."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, eval_report_markdown(metrics, title))
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {describe(exc)}") from None


def save_png(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write a matplotlib figure as a PNG atomically (temporary name, then rename) and close it; an unwritable
    ``path`` is a one-line :class:`OutputError`."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {describe(exc)}") from None
    finally:
        plt.close(fig)
    return path


def read_loss_log(path: str | Path) -> dict[str, list[float]]:
    """The columns of a ``train_log.csv`` (``step``, ``loss…``, ``lr``) as float lists; rows that do not parse
    (a line torn by a kill) end the read."""
    columns: dict[str, list[float]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                values = {k: float(v) for k, v in row.items()}
            except (TypeError, ValueError):
                break
            for k, v in values.items():
                columns.setdefault(k, []).append(v)
    return columns


def save_loss_curve(log: str | Path, path: str | Path, title: str = "training losses") -> Path | None:
    """Plot every ``loss*`` column of a ``train_log.csv`` against the step (log scale when positive), with the
    learning rate on a second axis; written atomically. None when the log has no rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log, path = Path(log), Path(path)
    columns = read_loss_log(log) if log.is_file() else {}
    if not columns.get("step"):
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in [k for k in columns if k.startswith("loss")]:
        ax.plot(columns["step"], columns[name], label=name, linewidth=1)
    if all(v > 0 for k in columns if k.startswith("loss") for v in columns[k]):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if "lr" in columns:
        ax2 = ax.twinx()
        ax2.plot(columns["step"], columns["lr"], color="grey", linestyle=":", linewidth=1, label="lr")
        ax2.set_ylabel("learning rate")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def colourise(mask: np.ndarray, palette: list[list[int]], ignore_index: int = 255) -> np.ndarray:
    """H×W class indices → H×W×3 uint8 using the palette; ignore pixels black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    lut[ignore_index] = 0
    return lut[mask.astype(np.int64).clip(0, 255)]


def rgb_composite(image: np.ndarray, rgb_bands: list[int]) -> np.ndarray:
    """C×H×W array → H×W×3 in [0, 1], 2–98 % stretch per band."""
    out = []
    for b in rgb_bands:
        band = image[b].astype(np.float64)
        lo, hi = np.percentile(band, [2, 98])
        out.append(np.clip((band - lo) / (hi - lo + 1e-12), 0, 1))
    return np.stack(out, axis=-1)


def save_panel(path: Path, image_rgb: np.ndarray, truth: np.ndarray, predictions: dict[str, np.ndarray],
               palette: list[list[int]], title: str, ignore_index: int = 255,
               classes: list[str] | None = None) -> Path:
    """One row per sample: image, truth, one column per method's prediction; with ``classes`` a legend of the
    class colours (and the ignore colour) under the panels. Written via a temporary file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = image_rgb if image_rgb.ndim == 4 else image_rgb[None]
    truths = truth if truth.ndim == 3 else truth[None]
    rows, cols = len(images), 2 + len(predictions)
    legend_height = 0.6 if classes else 0.0  # inches under the panels for the class legend
    height = 2.2 * rows + 0.4 + legend_height
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, height), squeeze=False)
    for r in range(rows):
        panels = [("image", images[r]), ("truth", colourise(truths[r], palette, ignore_index))]
        panels += [(name, colourise(pred[r] if pred.ndim == 3 else pred, palette, ignore_index))
                   for name, pred in predictions.items()]
        for c, (name, arr) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(arr, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if classes:
        from matplotlib.patches import Patch

        handles = [Patch(facecolor=np.asarray(palette[i]) / 255.0, edgecolor="black", linewidth=0.5, label=name)
                   for i, name in enumerate(classes)]
        handles.append(Patch(facecolor="black", edgecolor="black", label=f"ignore ({ignore_index})"))
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=8, frameon=False)
        fig.subplots_adjust(bottom=legend_height / height)
    return save_png(fig, path)
