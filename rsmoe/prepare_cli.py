"""``rsmoe prepare``: an official dataset release → the prepared format, with a summary.

    rsmoe prepare <dataset> --root RAW --out PREPARED [--tile 512 --stride 512] [--classes CSV]
                  [--regions CSV --target-regions A,B] [--continents CSV] [--variant 8bit|16bit]
                  [--labels eroded|full|fine|coarse] [--splits FILE] [--split-set official|mpers]
                  [--megacities-root DIR --megacities-map CSV] [--targets Urban] [--protocol transfer|official]
                  [--unknown-labels error|ignore] [--color-tolerance N] [--nodata VALUE|none]
                  [--nonfinite nodata|error] [--option KEY=VALUE ...] [--no-progress]
    rsmoe prepare --list

``--root`` is the release as downloaded: a folder, or for loveda, potsdam, vaihingen and potsdam-vaihingen also the
zip archives themselves (read directly). The dataset names and what each option means are in
:mod:`rsmoe.data.datasets` (and each release module's docstring; ``docs/datasets.md`` describes the releases). A flag
that the chosen preparer does not take is an error naming it. ``--option KEY=VALUE`` passes any other keyword option
of the preparer (the value is parsed as YAML: ``--option merge=false``). Every problem with the release or the
options is one line on stderr (``rsmoe prepare: error: …``) and exit status 2; nothing is left at ``--out``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

# CLI flag -> preparer keyword (flags given on the command line are passed only when not None)
_FLAGS: dict[str, str] = {
    "tile": "tile",
    "stride": "stride",
    "classes": "classes",
    "regions": "regions",
    "target_regions": "target_regions",
    "continents": "continents",
    "target_continents": "target_continents",
    "variant": "variant",
    "task": "task",
    "labels": "labels",
    "splits": "splits",
    "split_set": "split_set",
    "megacities_root": "megacities_root",
    "megacities_map": "megacities_map",
    "targets": "targets",
    "protocol": "protocol",
    "nonfinite": "nonfinite",
    "unknown_labels": "unknown_labels",
    "color_tolerance": "color_tolerance",
    "nodata": "nodata",
}


def add_prepare_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``rsmoe prepare``'s arguments to ``parser`` (a sub-command parser)."""
    parser.add_argument("dataset", nargs="?", help="release to prepare (rsmoe prepare --list shows them)")
    parser.add_argument("--list", action="store_true", help="list the releases and their options, then exit")
    parser.add_argument("--root", help="folder holding the official release")
    parser.add_argument("--out", help="prepared folder to write (replaced atomically on success)")
    parser.add_argument("--tile", type=int, help="tile size in pixels (default: the release's, usually 512)")
    parser.add_argument("--stride", type=int, help="tile stride in pixels (default: the tile size)")
    parser.add_argument("--classes", help="class-table CSV replacing the shipped one (value,name,class[,color])")
    parser.add_argument("--regions", help="image → region CSV (image,region): FBP cross-regional, WHU-OHS")
    parser.add_argument("--target-regions", help="comma-separated target regions (FBP: default the 12 cities)")
    parser.add_argument("--continents", help="OpenEarthMap region → continent CSV overriding shipped entries")
    parser.add_argument("--target-continents", help="OpenEarthMap target continents (default Europe)")
    parser.add_argument("--task", help="FBP task: cross-sensor | cross-regional")
    parser.add_argument("--variant", help="FBP image folder: 8bit (NIR,R,G,B; default) | 16bit (B,G,R,NIR)")
    parser.add_argument("--labels", help="ISPRS: eroded | full; SynDrone: fine | coarse")
    parser.add_argument("--splits", help="ISPRS split-list YAML replacing rsmoe/resources/isprs_splits.yaml")
    parser.add_argument("--split-set", help="ISPRS split set: official | mpers")
    parser.add_argument("--megacities-root", help="FBP five-megacities release folder (cross-sensor targets)")
    parser.add_argument("--megacities-map", help="CSV city,sensor,images,labels[,band_order] for that release")
    parser.add_argument("--targets", help="LoveDA target domains (default Urban; 'none' mirrors the folders)")
    parser.add_argument("--protocol", help="WHU-OHS domains: transfer (source/target images; default) | official")
    parser.add_argument("--unknown-labels", choices=["error", "ignore"], help="label values outside the table")
    parser.add_argument("--color-tolerance", type=int,
                        help="colour labels: a colour within N per channel of a table colour takes its class "
                             "(ISPRS default 64)")
    parser.add_argument("--nonfinite", choices=["nodata", "error"],
                        help="NaN/inf image values: written as no-data (default) or refused")
    parser.add_argument("--nodata", help="no-data value of the images (a number, 'none', or 'file')")
    parser.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                        help="any other keyword option of the preparer (value parsed as YAML); repeatable")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def parse_nodata(text: str) -> Any:
    """``--nodata``: a number, ``none`` or ``file``."""
    from .data.datasets import PrepareError

    t = text.strip().lower()
    if t in ("none", "null", ""):
        return None
    if t == "file":
        return "file"
    try:
        return float(text)
    except ValueError:
        raise PrepareError(f"--nodata: expected a number, 'none' or 'file', got {text!r}") from None


def parse_option_value(key: str, text: str) -> Any:
    """An ``--option KEY=VALUE`` value, parsed as YAML."""
    import yaml

    from .data.datasets import PrepareError

    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise PrepareError(f"--option {key}: {text!r} is not a YAML value ({str(e).splitlines()[0]})") from None


def collect_options(args: argparse.Namespace, known: dict[str, Any]) -> dict[str, Any]:
    """The preparer keyword options given by ``args``; a flag the preparer does not take is an error."""
    from .data.datasets import PrepareError

    options: dict[str, Any] = {}
    for attr, key in _FLAGS.items():
        value = getattr(args, attr, None)
        if value is None:
            continue
        if key not in known:
            flag = "--" + attr.replace("_", "-")
            raise PrepareError(f"{flag} does not apply to {args.dataset} (its options: {', '.join(known)})")
        options[key] = parse_nodata(value) if key == "nodata" else value
    for item in args.options or []:
        if "=" not in item:
            raise PrepareError(f"--option {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        if k not in known:
            raise PrepareError(f"--option {k}: not an option of {args.dataset} (its options: {', '.join(known)})")
        options[k] = parse_option_value(k, v)
    if "progress" in known:
        options["progress"] = not args.no_progress
    return options


def check_out(out: str) -> None:
    """``--out`` must be a folder (or not exist yet) whose parent can be written: checked before reading the
    release, so a file there is never replaced."""
    from pathlib import Path

    from .errors import OutputError
    from .io.writable import probe_folder

    path = Path(out).absolute()
    if path.exists() and not path.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder")
    ancestor = path.parent
    while not ancestor.exists():  # the folders the writer will create
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"--out {out}: {ancestor} is a file, not a folder")
    probe_folder(ancestor, what="--out's folder")


def run_prepare(args: argparse.Namespace) -> int:
    """Run ``rsmoe prepare``; print the summary. Returns 0, or 2 after a one-line error on stderr."""
    from .data.datasets import RELEASES, PrepareError, available, options_of, prepare, summarize
    from .errors import RsmoeError, one_line

    if args.list:
        for name in available():
            opts = ", ".join(f"{k}={v!r}" for k, v in options_of(name).items() if k != "progress")
            print(f"{name:<20} {RELEASES[name].description}\n{'':<20} options: {opts}")
        return 0
    try:
        if not args.dataset:
            raise PrepareError(f"name a dataset: one of {', '.join(available())}")
        if not args.root or not args.out:
            raise PrepareError("--root (the official release) and --out (the prepared folder) are required")
        options = collect_options(args, options_of(args.dataset))
        check_out(args.out)
        out = prepare(args.dataset, args.root, args.out, **options)
    except RsmoeError as e:  # PrepareError and the prepared format's own DataError; anything else is a bug
        print(f"rsmoe prepare: error: {one_line(e)}", file=sys.stderr)
        return 2
    print(summarize(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m rsmoe.prepare_cli``); ``rsmoe prepare`` is the same command."""
    parser = argparse.ArgumentParser(prog="rsmoe prepare", description=__doc__.split("\n\n")[0])
    add_prepare_arguments(parser)
    return run_prepare(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
