"""The report of a seeded study (:mod:`rsmoe.study`): mean ± standard deviation tables per group, bar plots with
error bars, and a Markdown page that states how the figures were made."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .io.atomic import atomic_write_json, atomic_write_text
from .report import save_png


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1), NaN-free values only; std NaN for fewer than two values."""
    v = np.array([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan


def aggregate(runs: dict[str, dict[Any, dict]]) -> dict[str, dict[str, Any]]:
    """Per point: ``{"domains": {d: (mean, std)}, "target_mean": (mean, std), "seconds": mean, "n": seeds}`` of
    mIoU (fractions) over the seeds."""
    out = {}
    for label, by_seed in runs.items():
        metrics = list(by_seed.values())
        domains = list(dict.fromkeys(d for m in metrics for d in m["domains"]))
        out[label] = {
            "domains": {d: mean_std([m["domains"].get(d, {}).get("mIoU", math.nan) for m in metrics]) for d in domains},
            "target_mean": mean_std([m.get("target_mean", {}).get("mIoU", math.nan) for m in metrics]),
            "seconds": float(np.mean([m.get("seconds", math.nan) for m in metrics])),
            "n": len(metrics),
        }
    return out


def cell(stat: tuple[float, float]) -> str:
    mean, std = stat
    if math.isnan(mean):
        return "–"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if not math.isnan(std) else f"{100 * mean:.2f}"


def group_table(stats: dict[str, dict], labels: list[str]) -> str:
    """Markdown: one row per point, one column per domain (mIoU %, mean ± std), the target mean last."""
    domains = list(dict.fromkeys(d for label in labels for d in stats[label]["domains"]))
    lines = [f"| point | {' | '.join(domains)} | target mean | s/run |", "|" + "---|" * (len(domains) + 3)]
    for label in labels:
        s = stats[label]
        cells = [cell(s["domains"].get(d, (math.nan, math.nan))) for d in domains]
        lines.append(f"| {label} | {' | '.join(cells)} | **{cell(s['target_mean'])}** | {s['seconds']:.0f} |")
    return "\n".join(lines)


def bar_plot(path: Path, stats: dict[str, dict], labels: list[str], title: str) -> Path:
    """Grouped bars of mIoU per domain (mean, error bar = std) for the points ``labels``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(dict.fromkeys(d for label in labels for d in stats[label]["domains"])) + ["target mean"]
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(domains), 3.6))
    for i, label in enumerate(labels):
        s = stats[label]
        values = [s["domains"].get(d, (math.nan, math.nan)) for d in domains[:-1]] + [s["target_mean"]]
        x = np.arange(len(domains)) + (i - (len(labels) - 1) / 2) * width
        ax.bar(x, [100 * m for m, _ in values], width, yerr=[100 * (0 if math.isnan(e) else e) for _, e in values],
               capsize=2, label=label)
    ax.set_xticks(np.arange(len(domains)), domains)
    ax.set_ylabel("mIoU (%)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=min(len(labels), 4), loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path, dpi=110)


def write_report(study: Any, result: dict[str, Any], report: Path, command: str, env: dict[str, Any],
                 provenance: list[str]) -> Path:
    """``report`` (Markdown) + ``<stem>.json`` + one PNG per group beside it."""
    stats = aggregate(result["runs"])
    report.parent.mkdir(parents=True, exist_ok=True)
    points = result["points"]
    lines = [f"# Seeded study: {study.name}", "", study.description.strip(), "",
             f"- Command: `{command}`",
             f"- Seeds: {study.seeds} (synthetic world seed s, training seed {42}+s); {len(points)} distinct "
             f"points, {sum(s['n'] for s in stats.values())} runs",
             f"- Base config: `{study.base.name}`; overrides for every point: `{study.fixed}`",
             f"- Hardware: {env['processor']}, {env['cpus']} CPUs, torch {env['torch']} ({env['torch_threads']} "
             f"threads), Python {env['python']}, {env['date']}",
             f"- Wall time: {result['seconds'] / 60:.1f} min (runs already finished in an earlier call are read, "
             "not retrained; their time is in the s/run column)",
             *[f"- {p}" for p in provenance], "",
             "Cells: mIoU in %, mean ± sample standard deviation over the seeds.", ""]
    for group in study.groups:
        labels = [p["label"] for p in points if group in p["groups"]]
        if not labels:
            continue
        png = bar_plot(report.with_name(f"{report.stem}_{group}.png"), stats, labels, f"{study.name}: {group}")
        lines += [f"## {group}", "", group_table(stats, labels), "", f"![{group}]({png.name})", ""]
    atomic_write_json(report.with_suffix(".json"), {"study": study.name, "environment": env, "command": command,
                                                    "stats": stats, **result})
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report


__all__ = ["aggregate", "bar_plot", "group_table", "mean_std", "write_report"]
