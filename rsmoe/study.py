"""`rsmoe study`: a seeded study — every point of a set of comparisons, trained over several seeds, summarised as
mean ± standard deviation per domain, with bar plots, in one Markdown report.

A study file (``configs/studies/*.yaml``)::

    name: synthetic
    base: ../tasks/synthetic_cross_sensor.yaml     # the run config every point starts from
    output_root: runs/studies                      # runs go to <output_root>/<name>/<point>/seed<s>
    seeds: [0, 1, 2]                               # seed s: synthetic world seed s, training seed 42 + s
    world: {dataset: multispectral, tile: 64}      # each seed's own synthetic world (rsmoe.data.synthetic;
                                                   # optional tiles: {domain: {split: count}})
    set: {train.iterations: 600}                   # overrides for every point
    quick: {set: {train.iterations: 200}, groups: [methods]}   # what --quick changes
    groups:                                        # group → point label → overrides
      methods:
        frozen: {adapter.type: none}
        spectralmoe: {adapter.type: spectralmoe, depth.enabled: true}

A point that appears in several groups with the same overrides is trained once. A run whose ``metrics.json``
exists is not trained again (kill and rerun to continue a study). Each seed changes both the data (a new
synthetic world: other scenes, other parcels, other noise) and the training (initialisation of the trainable
parts, sampling, augmentation), so the spread measures both.

Statistics: per domain, the mean and the sample standard deviation (n − 1 in the denominator) of mIoU over the
seeds; the same for the mean over the target domains.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .io.atomic import atomic_write_json

TRAIN_SEED_OFFSET = 42


@dataclass
class StudyPoint:
    """One configuration of the study: its label, the groups that list it and its overrides (``key=json``)."""

    label: str
    groups: list[str]
    overrides: list[str]

    @property
    def slug(self) -> str:
        return self.label.replace("/", "_").replace(" ", "_")


@dataclass
class Study:
    name: str
    path: Path
    base: Path
    output_root: Path
    seeds: list[int]
    world: dict[str, Any]
    fixed: dict[str, Any]
    groups: dict[str, dict[str, dict[str, Any]]]
    description: str = ""
    quick: dict[str, Any] = field(default_factory=dict)

    def points(self, groups: list[str] | None = None) -> list[StudyPoint]:
        """The distinct points of the chosen groups (all by default), in file order."""
        chosen = groups or list(self.groups)
        unknown = [g for g in chosen if g not in self.groups]
        if unknown:
            raise ConfigError(f"{self.path}: unknown group(s) {unknown}; groups: {list(self.groups)}")
        by_key: dict[str, StudyPoint] = {}
        for group in chosen:
            for label, overrides in self.groups[group].items():
                assignments = [f"{k}={json.dumps(v)}" for k, v in {**self.fixed, **overrides}.items()]
                key = json.dumps(sorted(assignments))
                if key in by_key:
                    by_key[key].groups.append(group)
                else:
                    by_key[key] = StudyPoint(label, [group], assignments)
        return list(by_key.values())


def load_study(path: str | Path, quick: bool = False) -> Study:
    """Read a study file (``quick`` applies its ``quick:`` section: other seeds/overrides/groups)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    known = {"name", "description", "base", "output_root", "seeds", "world", "set", "quick", "groups"}
    if not isinstance(data, dict) or set(data) - known:
        raise ConfigError(f"{path}: expected a mapping with keys among {sorted(known)}")
    groups = data.get("groups") or {}
    if not isinstance(groups, dict) or not groups or not all(isinstance(g, dict) and g for g in groups.values()):
        raise ConfigError(f"{path}: `groups:` must map group names to non-empty mappings of point → overrides")
    study = Study(name=str(data.get("name") or path.stem), path=path, base=(path.parent / data["base"]).resolve(),
                  output_root=Path(data.get("output_root", "runs/studies")), seeds=[int(s) for s in data["seeds"]],
                  world=dict(data.get("world") or {}), fixed=dict(data.get("set") or {}), groups=groups,
                  description=str(data.get("description", "")), quick=dict(data.get("quick") or {}))
    if not study.base.is_file():
        raise ConfigError(f"{path}: base config not found: {study.base}")
    if quick:
        study.name += "-quick"
        study.seeds = [int(s) for s in study.quick.get("seeds", study.seeds)]
        study.fixed = {**study.fixed, **study.quick.get("set", {})}
        study.groups = {g: study.groups[g] for g in study.quick.get("groups", list(study.groups))}
    if len(study.seeds) < 2:
        raise ConfigError(f"{path}: a study needs at least 2 seeds for a standard deviation, got {study.seeds}")
    return study


def world_root(study: Study, seed: int, progress: bool) -> Path:
    """The prepared dataset of seed ``seed``'s synthetic world (written on first use)."""
    from .data.synthetic import synthesize

    dataset = study.world.get("dataset", "multispectral")
    root = study.output_root / "worlds" / f"seed{seed}"
    synthesize(root, seed=seed, tile=int(study.world.get("tile", 64)), show_progress=progress, datasets=(dataset,),
               tiles_per_domain=study.world.get("tiles"))
    return root / dataset


def run_point(study: Study, point: StudyPoint, seed: int, root: Path, progress: bool) -> dict[str, Any]:
    """Train and evaluate one point at one seed on the prepared world ``root`` (or read the finished run's
    metrics)."""
    from .config import load_config
    from .engine.runner import train

    out = study.output_root / study.name / point.slug / f"seed{seed}"
    done = out / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    overrides = [*point.overrides, f"data.root={root}", f"output_dir={out}",
                 f"train.seed={TRAIN_SEED_OFFSET + seed}", f"name={study.name}/{point.label}/seed{seed}"]
    start = time.perf_counter()
    metrics = train(load_config(study.base, overrides), progress=progress)
    metrics["seconds"] = time.perf_counter() - start
    atomic_write_json(done, metrics)  # after model.safetensors: its presence marks a finished run
    return metrics


def run_study(study: Study, groups: list[str] | None = None, progress: bool = True,
              shard: tuple[int, int] = (1, 1)) -> dict[str, Any]:
    """Every point × seed; returns ``{"points": [...], "runs": {label: {seed: metrics}}, "seconds": …}``.

    ``shard`` (k, n): only every n-th (point, seed) run starting at the k-th (1-based), so n processes or machines
    can share a study; a last call without a shard then reads every finished run and writes the report."""
    start = time.perf_counter()
    points = study.points(groups)
    # every world before any run, so that shards never write the same world
    roots = {seed: world_root(study, seed, progress) for seed in study.seeds}
    runs: dict[str, dict[int, dict]] = {}
    k, n = shard
    jobs = [(i, point, seed) for i, point in enumerate(points, 1) for seed in study.seeds]
    for j, (i, point, seed) in enumerate(jobs):
        if j % n != k - 1:
            continue
        print(f"[study] {i}/{len(points)} {point.label} seed {seed}", flush=True)
        runs.setdefault(point.label, {})[seed] = run_point(study, point, seed, roots[seed], progress)
    return {"points": [p.__dict__ for p in points], "runs": runs, "seconds": time.perf_counter() - start}


def environment() -> dict[str, Any]:
    import os

    import torch

    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}





def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` → (K, N) with 1 ≤ K ≤ N; anything else is a one-line :class:`ConfigError`."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected K/N, e.g. 1/2") from None
    if not 1 <= k <= n:
        raise ConfigError(f"--shard {text!r}: K must be between 1 and N")
    return k, n


def add_study_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", required=True, help="study file (configs/studies/…)")
    p.add_argument("--quick", action="store_true", help="the study's quick variant (its `quick:` section)")
    p.add_argument("--groups", help="comma-separated groups to run (default: all)")
    p.add_argument("--list", action="store_true", help="print the points and their overrides, train nothing")
    p.add_argument("--shard", metavar="K/N", help="train only the K-th of every N runs (N processes or machines "
                   "share a study); then run once without --shard to write the report")
    p.add_argument("--report", help="Markdown report to write (default docs/results/<name>.md)")
    p.add_argument("--no-progress", action="store_true")


def run_study_from_args(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from .study_report import write_report

    study = load_study(args.study, quick=args.quick)
    groups = args.groups.split(",") if args.groups else None
    if args.list:
        for p in study.points(groups):
            print(f"{p.label} [{', '.join(p.groups)}]\n    {' '.join(p.overrides)}")
        return 0
    shard = parse_shard(args.shard) if args.shard else (1, 1)
    result = run_study(study, groups, progress=not args.no_progress, shard=shard)
    if shard != (1, 1):
        print(f"[study] shard {shard[0]}/{shard[1]} done; run without --shard to write the report")
        return 0
    report = Path(args.report or f"docs/results/{study.name}.md")
    command = "rsmoe " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["study"] else \
        f"rsmoe study --study {args.study}{' --quick' if args.quick else ''}"
    write_report(study, result, report, command, environment(), provenance(study, groups))
    print(f"[study] report: {report}")
    return 0


def provenance(study: Study, groups: list[str] | None = None) -> list[str]:
    """Where the frozen weights of the study's points come from (path and SHA-256 of local weights, or the seed of
    random weights), one line per distinct frozen model."""
    from .config import load_config
    from .provenance import weights_provenance

    lines: list[str] = []
    for point in study.points(groups):
        for line in weights_provenance(load_config(study.base, point.overrides)):
            if line not in lines:
                lines.append(line)
    return lines


__all__ = ["Study", "StudyPoint", "add_study_arguments", "environment", "load_study", "run_point", "run_study",
           "run_study_from_args", "world_root"]
