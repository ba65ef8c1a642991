"""``rsmoe convert`` argument parsing and dispatch, and the stand-alone ``python -m rsmoe.convert`` entry point."""
from __future__ import annotations

import argparse
import os
import sys

from . import __doc__ as _PACKAGE_DOC
from .depth_anything import convert_depth_anything_original
from .dinov3 import convert_dinov3_original
from .dofa import convert_dofa
from .registry import FORMATS
from .spectralmoe_official import convert_spectralmoe_official


# ================================================================================================================
# CLI
# ================================================================================================================
def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``rsmoe convert`` (the CLI module wires ``run_convert_from_args``)."""
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
                   help="check the result with this kernel layout (legacy: pre-Aug-2024 TorchGeo weights)")
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
    g.add_argument("--mean", type=float, nargs="+", help="per-band normalisation mean")
    g.add_argument("--std", type=float, nargs="+", help="per-band normalisation std")
    g.add_argument("--ignore-index", type=int, help="label of ignored pixels (default 255)")


def _format_list() -> str:
    width = max(len(n) for n in FORMATS)
    return "\n".join(f"{f.name:<{width}}  {f.input} → {f.output}" for f in FORMATS.values())


def run_convert_from_args(args: argparse.Namespace) -> int:
    """Run ``rsmoe convert`` from parsed arguments; prints the written path. Errors raise ValueError /
    FileNotFoundError (the CLI prints them on one line)."""
    if getattr(args, "list", False):
        print(_format_list())
        return 0
    if not args.format or not args.input or not args.output:
        raise ValueError("usage: rsmoe convert FORMAT IN OUT (rsmoe convert --list for the formats)")
    fmt, src, out = args.format, args.input, args.output
    try:
        if fmt == "dinov3-original":
            written = convert_dinov3_original(src, out, arch=args.arch, force=args.force)
        elif fmt in ("depth-anything-original", "prompt-depth-anything-original"):
            written = convert_depth_anything_original(
                src, out, prompt=fmt.startswith("prompt"), variant=args.variant, encoder_only=args.encoder_only,
                depth_type=args.depth_type, max_depth=args.max_depth, force=args.force)
        elif fmt in ("dofa-original", "dofa-torchgeo"):
            written = convert_dofa(src, out, source=fmt.split("-", 1)[1], kernel_layout=args.kernel_layout,
                                   size=args.dofa_size, force=args.force)
        elif fmt == "spectralmoe-official":
            from ..config import load_config

            if not args.config:
                raise ValueError("spectralmoe-official needs --config (the rsmoe model config the checkpoint fits)")
            cfg = load_config(args.config, args.overrides)
            written = convert_spectralmoe_official(
                src, out, cfg, classes_file=args.classes, num_classes=args.num_classes, data_root=args.data,
                sensor=args.sensor, wavelengths=args.wavelengths, mean=args.mean, std=args.std,
                ignore_index=args.ignore_index, force=args.force)
        else:  # argparse's choices make this unreachable
            raise ValueError(f"unknown format {fmt!r}; known: {', '.join(sorted(FORMATS))}")
    except FileExistsError as exc:
        raise ValueError(str(exc)) from None
    print(written)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m rsmoe.convert``) until the CLI wires the subcommand."""
    parser = argparse.ArgumentParser(prog="rsmoe convert", description=_PACKAGE_DOC.split("\n\n")[0])
    add_convert_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_convert_from_args(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        if os.environ.get("RSMOE_DEBUG"):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"rsmoe convert: error: {msg}", file=sys.stderr)
        return 2
