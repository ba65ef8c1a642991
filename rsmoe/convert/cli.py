"""``rsmoe convert FORMAT IN OUT``: argument parsing and dispatch (:func:`add_convert_arguments`,
:func:`run_convert_from_args`), and the stand-alone entry point ``python -m rsmoe.convert``.

Importing this module does not import torch: each converter is imported when its format runs."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError, RsmoeError
from .registry import DESCRIPTION, FORMATS


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``rsmoe convert`` (the command line wires :func:`run_convert_from_args`)."""
    parser.add_argument("format", nargs="?", choices=sorted(FORMATS), metavar="FORMAT",
                        help=f"one of: {', '.join(sorted(FORMATS))}")
    parser.add_argument("input", nargs="?", help="the checkpoint to convert")
    parser.add_argument("output", nargs="?", help="where to write (a directory for transformers formats, a file "
                                                  "otherwise)")
    parser.add_argument("--list", action="store_true", help="list the formats and exit")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    g = parser.add_argument_group("dinov3-original")
    g.add_argument("--arch", help="DINOv3 preset (vits16, vitb16, vitl16) or a JSON dict of config fields; default: "
                                  "read from the tensor shapes")
    g = parser.add_argument_group("depth-anything-original / prompt-depth-anything-original")
    g.add_argument("--encoder-only", action="store_true", help="write only the DINOv2 encoder (Dinov2Model)")
    g.add_argument("--variant", choices=["v1", "v2"], default="v2", help="Depth Anything release (DPT tap blocks)")
    g.add_argument("--depth-type", choices=["relative", "metric"], help="depth_estimation_type of the config")
    g.add_argument("--max-depth", type=float, help="max_depth of a metric model")
    g = parser.add_argument_group("dofa-original / dofa-torchgeo")
    g.add_argument("--kernel-layout", choices=["band_major", "legacy"],
                   help="patch-kernel layout stored in the output (default: from the file's SHA-256 when it is a "
                        "known release, else band_major; legacy = files released before 2024-09-01)")
    g.add_argument("--dofa-size", choices=["small", "base", "large", "huge"],
                   help="DOFA size (default: inferred from width and depth)")
    g = parser.add_argument_group("spectralmoe-official")
    g.add_argument("--config", help="rsmoe model config YAML (e.g. configs/models/spectralmoe_dinov3_vitl.yaml)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    g.add_argument("--classes", help="class names: .txt (one per line), .json/.yaml (list, or classes + palette)")
    g.add_argument("--num-classes", type=int, help="number of classes when no names are known")
    g.add_argument("--data", help="a prepared dataset (dataset.yaml): classes, palette, mean/std, sensor")
    g.add_argument("--sensor", help="sensor name of the input bands (rsmoe.sensors), e.g. GF-2")
    g.add_argument("--wavelengths", type=float, nargs="+", help="band centre wavelengths in µm, in input order")
    g.add_argument("--mean", type=float, nargs="+", help="per-band normalisation mean, in input order")
    g.add_argument("--std", type=float, nargs="+", help="per-band normalisation std, in input order")
    g.add_argument("--official-wavelengths", type=float, nargs="+", metavar="UM",
                   help="centre wavelengths (µm) of the authors' input bands in their order, when their config does "
                        "not record it (Five-Billion-Pixels / GID models: 0.83 0.665 0.56 0.49 = NIR,R,G,B)")
    g.add_argument("--ignore-index", type=int, help="label of ignored pixels (default 255)")
    g = parser.add_argument_group("dilateformer")
    g.add_argument("--stage", type=int, help="0-based DilateFormer stage whose blocks to take (stages.N)")
    g.add_argument("--blocks", type=int, help="take the first N blocks of the stage (default: all)")
    g.add_argument("--heads", type=int, help="attention heads of the stage (default: 3·2^stage, as in every "
                                             "released DilateFormer)")


def format_list() -> str:
    """The formats, one per line: name, input → output."""
    width = max(len(n) for n in FORMATS)
    return "\n".join(f"{f.name:<{width}}  {f.input} → {f.output}" for f in FORMATS.values())


def _dinov3(args: argparse.Namespace) -> Path:
    from .dinov3 import convert_dinov3_original

    return convert_dinov3_original(args.input, args.output, arch=args.arch, force=args.force)


def _depth_anything(args: argparse.Namespace) -> Path:
    from .depth_anything import convert_depth_anything_original

    return convert_depth_anything_original(
        args.input, args.output, prompt=args.format.startswith("prompt"), variant=args.variant,
        encoder_only=args.encoder_only, depth_type=args.depth_type, max_depth=args.max_depth, force=args.force)


def _dofa(args: argparse.Namespace) -> Path:
    from .dofa import convert_dofa

    return convert_dofa(args.input, args.output, source=args.format.split("-", 1)[1],
                        kernel_layout=args.kernel_layout, size=args.dofa_size, force=args.force)


def _spectralmoe(args: argparse.Namespace) -> Path:
    from ..config import load_config
    from .spectralmoe_official import convert_spectralmoe_official

    if not args.config:
        raise ConfigError("spectralmoe-official needs --config (the rsmoe model config the checkpoint fits)")
    return convert_spectralmoe_official(
        args.input, args.output, load_config(args.config, args.overrides), classes_file=args.classes,
        num_classes=args.num_classes, data_root=args.data, sensor=args.sensor, wavelengths=args.wavelengths,
        mean=args.mean, std=args.std, official_wavelengths=args.official_wavelengths, ignore_index=args.ignore_index,
        force=args.force)


def _dilateformer(args: argparse.Namespace) -> Path:
    from .dilateformer import convert_dilateformer

    if args.stage is None:
        raise ConfigError("dilateformer needs --stage (the 0-based stage whose blocks become the adapter)")
    return convert_dilateformer(args.input, args.output, stage=args.stage, blocks=args.blocks, heads=args.heads,
                                force=args.force)


#: format name → the function that runs it from parsed arguments
RUNNERS: dict[str, Callable[[argparse.Namespace], Path]] = {
    "dinov3-original": _dinov3,
    "depth-anything-original": _depth_anything,
    "prompt-depth-anything-original": _depth_anything,
    "dofa-original": _dofa,
    "dofa-torchgeo": _dofa,
    "spectralmoe-official": _spectralmoe,
    "dilateformer": _dilateformer,
}


def run_convert_from_args(args: argparse.Namespace) -> int:
    """Run ``rsmoe convert`` from parsed arguments; prints the written path. Problems raise a one-line
    :class:`~rsmoe.errors.RsmoeError`."""
    if getattr(args, "list", False):
        print(format_list())
        return 0
    if not args.format or not args.input or not args.output:
        raise ConfigError("usage: rsmoe convert FORMAT IN OUT (rsmoe convert --list for the formats)")
    if args.format not in RUNNERS:  # argparse's choices make this unreachable from the command line
        raise ConfigError(f"unknown format {args.format!r}; known: {', '.join(sorted(FORMATS))}")
    print(RUNNERS[args.format](args))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m rsmoe.convert``: the same command as ``rsmoe convert``; exit status 2 on a user error."""
    parser = argparse.ArgumentParser(prog="rsmoe convert", description=DESCRIPTION)
    add_convert_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_convert_from_args(args)
    except RsmoeError as exc:
        if os.environ.get("RSMOE_DEBUG"):
            raise
        print(f"rsmoe convert: error: {exc}", file=sys.stderr)
        return 2


__all__ = ["RUNNERS", "add_convert_arguments", "format_list", "main", "run_convert_from_args"]
