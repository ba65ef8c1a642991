"""`rsmoe sweep --grid configs/ablations/X.yaml`: run (or list, or count) every point of an ablation grid.

A grid file names one or more base configs and the axes to vary; the points are the Cartesian product of the
axes, for every base::

    name: spectralmoe_rank                     # runs go to <output_root>/<name>/<point>
    output_root: runs/ablations                # optional (default runs/ablations)
    bases: [../models/spectralmoe_dinov3_vitl.yaml]   # relative to this file; `base:` for a single one
    set: {train.iterations: 78760}             # optional overrides for every point
    grid:
      adapter.rank: [4, 8, 16, 32, 64]         # scalar values: one dotted key
      gating:                                  # mapping values: a labelled axis, each entry a set of overrides
        - {adapter.gating: softmax}
        - {adapter.gating: laplace, adapter.distance_p: 1.0}

Point names are ``<base stem>/<key>=<value>[,…]`` (the last part of each overridden key).

Modes: the default trains every point (``rsmoe train`` semantics, one after the other; points whose
``model.safetensors`` already exists are skipped unless ``--rerun``); ``--list`` prints the points and their
overrides; ``--commands`` prints one ``rsmoe train`` command line per point (to run elsewhere, e.g. on a cluster);
``--params`` prints the trainable parameter counts of every point (no weights allocated) — for the rank grid this
is supplementary Table 7. ``--only SUBSTRING`` keeps the points whose name contains it; ``--set`` adds overrides
on top of every point (e.g. ``data.root=…``).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, apply_override, config_from_dict, config_sections, read_yaml
from .errors import MissingFileError, RsmoeError


@dataclass
class SweepPoint:
    name: str
    base: Path
    overrides: list[str]  # KEY=VALUE, the value JSON (valid YAML)


def _assignment(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"


def _label(key: str, value: Any) -> str:
    short = key.split(".")[-1]
    return f"{short}={value}"


def load_grid(path: str | Path) -> tuple[dict, list[SweepPoint]]:
    """Parse a grid file → (its top-level mapping, the points)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"grid file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the grid ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    known = {"name", "description", "output_root", "base", "bases", "set", "grid"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; known: {sorted(known)}")
    bases = data.get("bases") or ([data["base"]] if data.get("base") else [])
    if not bases:
        raise ConfigError(f"{path}: needs `base:` or `bases:`")
    grid = data.get("grid") or {}
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{path}: `grid:` must be a non-empty mapping of axis → list of values")
    fixed = data.get("set") or {}
    if not isinstance(fixed, dict):
        raise ConfigError(f"{path}: `set:` must be a mapping of dotted keys to values")

    axes: list[list[tuple[str, list[str]]]] = []  # per axis: (label, overrides) per value
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid axis {axis!r} must be a non-empty list")
        entries = []
        for value in values:
            if isinstance(value, dict):
                label = ",".join(_label(k, v) for k, v in value.items())
                entries.append((label, [_assignment(k, v) for k, v in value.items()]))
            else:
                entries.append((_label(axis, value), [_assignment(axis, value)]))
        axes.append(entries)

    name = str(data.get("name") or path.stem)
    root = Path(data.get("output_root") or "runs/ablations")
    points = []
    for base in bases:
        base_path = (path.parent / base).resolve()
        if not base_path.is_file():
            raise ConfigError(f"{path}: base config not found: {base_path}")
        for combo in itertools.product(*axes):
            label = ",".join(lbl for lbl, _ in combo)
            point_name = f"{base_path.stem}/{label}"
            overrides = [_assignment(k, v) for k, v in fixed.items()]
            for _, ov in combo:
                overrides.extend(ov)
            safe = point_name.replace("/", "__").replace(",", "_").replace("=", "-")
            overrides += [_assignment("name", f"{name}/{point_name}"),
                          _assignment("output_dir", str(root / name / safe))]
            points.append(SweepPoint(point_name, base_path, overrides))
    return data, points


def point_config(point: SweepPoint, extra: list[str] | tuple[str, ...] = ()):
    """The validated :class:`rsmoe.config.Config` of one point (base + grid overrides + ``extra``); a problem is
    one line naming the point."""
    try:
        data = read_yaml(point.base)
        for assignment in [*point.overrides, *extra]:
            apply_override(data, assignment, config_sections())
        return config_from_dict(data).validate()
    except ConfigError as exc:
        raise ConfigError(f"point {point.name}: {exc}") from None


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grid", required=True, help="grid YAML (configs/ablations/…)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true", help="print the points and their overrides")
    mode.add_argument("--commands", action="store_true", help="print one `rsmoe train` command per point")
    mode.add_argument("--params", action="store_true", help="trainable parameter counts per point (Table 7)")
    parser.add_argument("--only", help="keep the points whose name contains this")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value for every point (repeatable)")
    parser.add_argument("--num-classes", type=int, default=24, help="classes for --params")
    parser.add_argument("--rerun", action="store_true", help="train points that already have a checkpoint")
    parser.add_argument("--no-progress", action="store_true")


def run_sweep_from_args(args: argparse.Namespace) -> int:
    _, points = load_grid(args.grid)
    if args.only:
        points = [p for p in points if args.only in p.name]
        if not points:
            raise ConfigError(f"--only {args.only!r}: no point of {args.grid} matches; points: "
                              f"{[p.name for p in load_grid(args.grid)[1]][:10]}")
    extra = list(args.overrides)
    configs = [point_config(p, extra) for p in points]  # validates every point before anything runs

    if args.list:
        for p in points:
            print(f"{p.name}\n    " + " ".join(o for o in p.overrides + extra))
        return 0
    if args.commands:
        for p in points:
            sets = " ".join(f"--set {shlex.quote(o)}" for o in p.overrides + extra)
            print(f"rsmoe train --config {shlex.quote(os.path.relpath(p.base))} {sets}")
        return 0
    if args.params:
        from .params import count_parameters

        width = max(len(p.name) for p in points)
        print(f"{'point':<{width}} {'excl. head':>14} {'head':>14} {'total':>14}")
        for p, cfg in zip(points, configs):
            c = count_parameters(cfg, num_classes=args.num_classes)
            print(f"{p.name:<{width}} {c['total_excluding_head']:>14,} {c['head']:>14,} {c['total']:>14,}")
        return 0

    from .engine.runner import train

    for i, (p, cfg) in enumerate(zip(points, configs), 1):
        done = Path(cfg.output_dir) / "model.safetensors"
        if done.exists() and not args.rerun:
            print(f"[{i}/{len(points)}] {p.name}: done ({done}), skipped")
            continue
        print(f"[{i}/{len(points)}] {p.name} → {cfg.output_dir}", flush=True)
        metrics = train(cfg, progress=not args.no_progress)
        mean = (metrics.get("target_mean") or {}).get("mIoU")
        print(f"[{i}/{len(points)}] {p.name}: target mean mIoU {mean}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rsmoe sweep", description=__doc__.split("\n\n")[0])
    add_sweep_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_sweep_from_args(args)
    except RsmoeError as exc:
        print(f"rsmoe sweep: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
