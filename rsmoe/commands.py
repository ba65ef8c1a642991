"""The arguments and the run functions of the commands that live in no package of their own (demo, synth, train,
eval, params, predict's checkpoint loading). Imported only when one of them runs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_config_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", required=required, help="YAML run config (configs/…)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set adapter.rank=32 (repeatable; see the README's merge "
                        "rule)")


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic benchmark")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--random-weights", action="store_true",
                   help="random frozen models of the same shapes instead of the shipped pretrained ones (the same as "
                        "--set backbone.pretrained=null --set depth.pretrained=null --set mpers.text_encoder=tiny)")
    p.add_argument("--no-progress", action="store_true")


def run_demo(args: argparse.Namespace) -> int:
    from .demo import RANDOM_WEIGHTS
    from .demo import run_demo as demo

    overrides = [*(RANDOM_WEIGHTS if args.random_weights else ()), *args.overrides]
    demo(out=args.out, data_dir=args.data, overrides=overrides, seed=args.seed, progress=not args.no_progress)
    return 0


def add_synth_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--no-progress", action="store_true")


def run_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import synthesize
    from .errors import ConfigError
    from .io.writable import writable_folder

    if args.tile < 16:
        raise ConfigError(f"--tile: must be at least 16 pixels, got {args.tile}")
    writable_folder(args.out, what="--out")
    for name, path in synthesize(args.out, seed=args.seed, tile=args.tile, show_progress=not args.no_progress).items():
        print(f"{name}: {path}")
    return 0


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--no-progress", action="store_true")


def run_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .engine.runner import CHECKPOINT_NAME, train

    cfg = load_config(args.config, args.overrides)
    metrics = train(cfg, progress=not args.no_progress)
    if "domains" in metrics:  # only the first of several DDP processes evaluates
        print_metrics(metrics)
        print(f"checkpoint: {Path(cfg.output_dir) / CHECKPOINT_NAME}")
    return 0


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True)
    add_config_arguments(p, required=False)
    p.add_argument("--out", help="write the metrics as JSON here (and a Markdown table beside it, .md)")
    p.add_argument("--no-progress", action="store_true")


def run_eval(args: argparse.Namespace) -> int:
    from .config import load_config
    from .engine.runner import evaluate_checkpoint
    from .errors import ConfigError

    if args.overrides and not args.config:
        raise ConfigError("--set needs --config (the config whose data and eval sections replace the checkpoint's)")
    cfg = load_config(args.config, args.overrides) if args.config else None
    out = eval_outputs(args.out) if args.out else None  # checked before the (long) evaluation
    metrics = evaluate_checkpoint(args.checkpoint, cfg, progress=not args.no_progress)
    print_metrics(metrics)
    if out:
        write_eval_outputs(out, metrics, title=f"Evaluation of {args.checkpoint}")
    return 0


def eval_outputs(out: str) -> tuple[Path, Path]:
    """``--out`` (JSON) and the Markdown table beside it, checked writable before anything is evaluated."""
    from .io.writable import writable_file

    path = writable_file(out, what="--out")
    table = path.with_suffix(".md") if path.suffix != ".md" else path.with_name(path.name + ".md")
    writable_file(table, what="the Markdown table of --out")
    return path, table


def write_eval_outputs(paths: tuple[Path, Path], metrics: dict, title: str) -> None:
    from .errors import OutputError
    from .io.atomic import atomic_write_json
    from .io.writable import describe
    from .report import write_eval_report

    try:
        atomic_write_json(paths[0], metrics)
    except OSError as exc:
        raise OutputError(f"cannot write {paths[0]}: {describe(exc)}") from None
    write_eval_report(paths[1], metrics, title=title)


def add_params_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--num-classes", type=int, default=24)
    p.add_argument("--json", action="store_true")


def run_params(args: argparse.Namespace) -> int:
    from .config import load_config
    from .errors import ConfigError
    from .params import count_parameters, format_counts

    if args.num_classes < 1:
        raise ConfigError(f"--num-classes: must be ≥ 1, got {args.num_classes}")
    counts = count_parameters(load_config(args.config, args.overrides), num_classes=args.num_classes)
    print(json.dumps(counts) if args.json else format_counts(counts))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from .engine.checkpoints import load_prediction_model
    from .predict import run_predict_from_args

    return run_predict_from_args(args, load_prediction_model) or 0


def print_metrics(metrics: dict) -> None:
    from .report import eval_report_markdown

    print(eval_report_markdown(metrics), end="")
