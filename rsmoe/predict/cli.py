"""Inputs and command line: :func:`collect_inputs` and the ``rsmoe predict`` wiring."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Sequence

from .bands import check_sensor
from .memory import limit_heap_growth
from .model import PredictError, PredictionModel
from .outputs import check_output_dir
from .scenes import predict_scenes

_RASTER_SUFFIXES = (".tif", ".tiff")


def collect_inputs(
    input: str | Path | Sequence[str | Path] | None = None,  # noqa: A002 - mirrors --input
    input_dir: str | Path | None = None,
    input_list: str | Path | None = None,
) -> list[Path]:
    """The scenes named by ``--input`` (one or more files), ``--input-dir`` (its ``*.tif`` / ``*.tiff``, sorted, not
    recursive; hidden files and rsmoe's own outputs skipped) and ``--input-list`` (a text file, one path per line,
    ``#`` comments, relative paths relative to the list). Order kept, duplicates dropped; missing files are an error.
    """
    found: list[Path] = []
    if input is not None:
        items = [input] if isinstance(input, (str, Path)) else list(input)
        found += [Path(p) for p in items]
    if input_dir is not None:
        d = Path(input_dir)
        if not d.is_dir():
            raise PredictError(f"--input-dir {d} is not a folder")
        for p in sorted(d.iterdir()):
            if not p.is_file() or p.name.startswith(".") or p.suffix.lower() not in _RASTER_SUFFIXES:
                continue
            stem = p.stem
            for tail in ("_classes", "_probabilities"):
                if stem.endswith(tail) and (d / f"{stem[: -len(tail)]}_summary.json").is_file():
                    break
            else:
                found.append(p)
    if input_list is not None:
        lp = Path(input_list)
        if not lp.is_file():
            raise PredictError(f"--input-list {lp} not found")
        for line in lp.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                p = Path(line).expanduser()
                found.append(p if p.is_absolute() else lp.parent / p)
    if input is None and input_dir is None and input_list is None:
        raise PredictError("no input: give --input, --input-dir or --input-list")
    seen: set[Path] = set()
    out: list[Path] = []
    for p in found:
        key = p.resolve()
        if key in seen:
            continue
        seen.add(key)
        if not p.is_file():
            raise PredictError(f"input not found: {p}")
        out.append(p)
    if not out:
        raise PredictError("no input scenes found")
    return out


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected band numbers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected wavelengths in µm, got {text!r}") from None


def _flatten(values):
    if values is None:
        return None
    return [v for part in values for v in part]


def add_predict_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``rsmoe predict`` options to ``parser``."""
    parser.add_argument("--checkpoint", required=True, help="trained checkpoint")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", metavar="SCENE", help="one or more GeoTIFF scenes")
    src.add_argument("--input-dir", metavar="DIR", help="every *.tif / *.tiff in DIR")
    src.add_argument("--input-list", metavar="FILE", help="text file with one scene path per line")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    claim = parser.add_mutually_exclusive_group()
    claim.add_argument("--sensor", metavar="NAME",
                       help="the input's sensor (a name from rsmoe.sensors, e.g. Sentinel-2, GF-2, RGB), "
                            "checked against the checkpoint's wavelengths")
    claim.add_argument("--wavelengths", nargs="+", type=_float_list, metavar="UM",
                       help="the input's band wavelengths in µm, checked against the checkpoint")
    parser.add_argument("--bands", nargs="+", type=_int_list, metavar="N",
                        help="1-based input bands to use, in the checkpoint's order (e.g. --bands 4 3 2 8)")
    parser.add_argument("--tile", type=int, default=512, help="window side in pixels (default 512)")
    parser.add_argument("--overlap", type=int, default=128, help="overlap between windows in pixels (default 128)")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    parser.add_argument("--probabilities", action="store_true", help="also write a float32 probability raster")
    parser.add_argument("--resume", action="store_true",
                        help="skip scenes whose outputs this checkpoint already finished and that are intact "
                             "(a missing, corrupt or truncated map, or one made by another checkpoint, is redone)")
    parser.add_argument("--devices", type=int, default=1, help="processes / GPUs to split the scenes over")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run_predict_from_args(
    args: argparse.Namespace,
    pm_loader: Callable[[str], PredictionModel],
    sensors: dict[str, Sequence[float]] | None = None,
) -> int:
    """Run ``rsmoe predict`` from parsed arguments (see :func:`add_predict_arguments`); returns the exit status 0.

    User errors raise an :class:`~rsmoe.errors.RsmoeError` (:class:`PredictError`, or the checkpoint loader's
    ``CheckpointError`` / ``MissingFileError``) with a one-line message, which ``rsmoe``'s ``main`` prints as
    ``rsmoe predict: error: …`` (exit status 2). The inputs and the output folder are checked before the checkpoint is
    loaded, the ``--sensor`` / ``--wavelengths`` claim and every scene's bands before any scene is processed;
    ``sensors`` overrides the :mod:`rsmoe.sensors` registry.
    """
    bands = _flatten(getattr(args, "bands", None))
    wavelengths = _flatten(getattr(args, "wavelengths", None))
    inputs = collect_inputs(getattr(args, "input", None), getattr(args, "input_dir", None),
                            getattr(args, "input_list", None))
    check_output_dir(Path(args.out))
    pm = pm_loader(args.checkpoint)
    check_sensor(pm, getattr(args, "sensor", None), wavelengths, bands, sensors)
    limit_heap_growth()
    summaries = predict_scenes(
        pm, inputs, Path(args.out), tile=args.tile, overlap=args.overlap, batch_size=args.batch_size,
        bands=bands, probabilities=args.probabilities, resume=args.resume, devices=args.devices,
        device=getattr(args, "device", "cpu"), show_progress=not getattr(args, "no_progress", False),
    )
    for s in summaries:
        if s.get("status") == "skipped":
            print(f"{Path(s['input']).name}: skipped (done before by the same checkpoint)")
        else:
            rate = s.get("pixels_per_second") or 0.0
            print(f"{Path(s['input']).name}: {s['classes']}  ({s['seconds']:.1f} s, {rate / 1e6:.2f} Mpx/s)")
    return 0
