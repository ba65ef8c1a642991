"""The `rsmoe` command: demo, synth, train, eval, params, predict, pretrain."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", required=required, help="YAML run config (configs/…)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set adapter.rank=32 (repeatable)")


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(out=args.out, data_dir=args.data, overrides=args.overrides, seed=args.seed,
             progress=not args.no_progress)
    return 0


def cmd_synth(args) -> int:
    from .data.synthetic import synthesize

    written = synthesize(args.out, seed=args.seed, tile=args.tile, show_progress=not args.no_progress)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def cmd_train(args) -> int:
    from .config import load_config
    from .engine.runner import train

    cfg = load_config(args.config, args.overrides)
    metrics = train(cfg, progress=not args.no_progress)
    if "domains" in metrics:  # only the first of several DDP processes evaluates
        _print_metrics(metrics)
        print(f"checkpoint: {Path(cfg.output_dir) / 'model.safetensors'}")
    return 0


def cmd_eval(args) -> int:
    from .config import load_config
    from .engine.runner import evaluate_checkpoint, write_json

    cfg = load_config(args.config, args.overrides) if args.config else None
    metrics = evaluate_checkpoint(args.checkpoint, cfg, progress=not args.no_progress)
    _print_metrics(metrics)
    if args.out:
        from .report import write_eval_report

        out = Path(args.out)
        write_json(out, metrics)
        table = out.with_suffix(".md") if out.suffix != ".md" else out.with_name(out.name + ".md")
        write_eval_report(table, metrics, title=f"Evaluation of {args.checkpoint}")
    return 0


def cmd_params(args) -> int:
    from .config import load_config
    from .params import count_parameters, format_counts

    counts = count_parameters(load_config(args.config, args.overrides), num_classes=args.num_classes)
    print(json.dumps(counts) if args.json else format_counts(counts))
    return 0


def cmd_predict(args) -> int:
    from .engine.checkpoints import load_prediction_model
    from .predict import run_predict_from_args

    return run_predict_from_args(args, load_prediction_model) or 0


def _print_metrics(metrics: dict) -> None:
    from .report import eval_report_markdown

    print(eval_report_markdown(metrics), end="")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsmoe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="synthesise the benchmark, train frozen/Rein/SpectralMoE, write a report")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic benchmark")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("synth", help="write the synthetic spectral-shift benchmark (prepared format)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("prepare", help="turn an official dataset release into the prepared format")
    from .prepare_cli import add_prepare_arguments, run_prepare

    add_prepare_arguments(p)
    p.set_defaults(func=run_prepare)

    p = sub.add_parser("train", help="train a config; writes model.safetensors, last.ckpt, metrics.json")
    _add_config_args(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on every domain of its config")
    p.add_argument("--checkpoint", required=True)
    _add_config_args(p, required=False)
    p.add_argument("--out", help="write the metrics as JSON here (and a Markdown table beside it, .md)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("params", help="trainable parameters per module (no weights allocated)")
    _add_config_args(p)
    p.add_argument("--num-classes", type=int, default=24)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("captions", help="caption a prepared dataset with MLLMs / statistics into a SQLite store")
    from .text.pipeline import add_captions_arguments, run_captions_from_args

    add_captions_arguments(p)
    p.set_defaults(func=run_captions_from_args)

    p = sub.add_parser("convert", help="convert public checkpoints to rsmoe / transformers formats (--list)")
    from .convert import add_convert_arguments, run_convert_from_args

    add_convert_arguments(p)
    p.set_defaults(func=run_convert_from_args)

    p = sub.add_parser("sweep", help="list / count / train the points of an ablation grid")
    from .sweep import add_sweep_arguments, run_sweep_from_args

    add_sweep_arguments(p)
    p.set_defaults(func=run_sweep_from_args)

    p = sub.add_parser("pretrain", help="reproduce the shipped pretrained backbone / depth / CLIP models")
    from .pretrain.cli import add_pretrain_arguments, run_pretrain_from_args

    add_pretrain_arguments(p)
    p.set_defaults(func=run_pretrain_from_args)

    p = sub.add_parser("predict", help="map whole GeoTIFF scenes with a checkpoint")
    try:
        from .predict import add_predict_arguments

        add_predict_arguments(p)
    except ImportError:  # pragma: no cover - predict module missing
        pass
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, KeyError) as exc:
        if os.environ.get("RSMOE_DEBUG"):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"rsmoe {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
