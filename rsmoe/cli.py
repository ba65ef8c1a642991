"""The `rsmoe` command. ``rsmoe --help`` lists the commands; ``rsmoe COMMAND --help`` documents one.

Each command's module is imported only when that command runs (so ``rsmoe --help`` answers at once and imports
neither torch nor a model). A problem the user can fix (:class:`rsmoe.errors.RsmoeError`) is printed as one line,
``rsmoe COMMAND: error: …``, with exit status 2; anything else is a bug and keeps its traceback
(``RSMOE_DEBUG=1`` shows the traceback of user errors too).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: command → (one-line help, "module:function" adding its arguments, "module:function" running it)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("synthesise the benchmark, train frozen / Rein / SpectralMoE / MPerS, write a report",
             "rsmoe.commands:add_demo_arguments", "rsmoe.commands:run_demo"),
    "synth": ("write the synthetic spectral-shift benchmark (prepared format)",
              "rsmoe.commands:add_synth_arguments", "rsmoe.commands:run_synth"),
    "prepare": ("turn an official dataset release into the prepared format",
                "rsmoe.prepare_cli:add_prepare_arguments", "rsmoe.prepare_cli:run_prepare"),
    "train": ("train a config; writes model.safetensors, last.ckpt, metrics.json",
              "rsmoe.commands:add_train_arguments", "rsmoe.commands:run_train"),
    "eval": ("evaluate a checkpoint on every domain of its config",
             "rsmoe.commands:add_eval_arguments", "rsmoe.commands:run_eval"),
    "params": ("trainable parameters per module (no weights allocated)",
               "rsmoe.commands:add_params_arguments", "rsmoe.commands:run_params"),
    "captions": ("caption a prepared dataset with MLLMs / statistics into a SQLite store",
                 "rsmoe.text.pipeline:add_captions_arguments", "rsmoe.text.pipeline:run_captions_from_args"),
    "convert": ("convert public checkpoints to rsmoe / transformers formats (--list)",
                "rsmoe.convert.cli:add_convert_arguments", "rsmoe.convert.cli:run_convert_from_args"),
    "sweep": ("list / count / train the points of an ablation grid",
              "rsmoe.sweep:add_sweep_arguments", "rsmoe.sweep:run_sweep_from_args"),
    "study": ("a seeded study: comparisons over several seeds, mean ± std, plots, a Markdown report",
              "rsmoe.study:add_study_arguments", "rsmoe.study:run_study_from_args"),
    "predict": ("map whole GeoTIFF scenes with a checkpoint",
                "rsmoe.predict.cli:add_predict_arguments", "rsmoe.commands:run_predict"),
}


def resolve(target: str) -> Callable:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s own arguments are added (importing that command's module)."""
    parser = argparse.ArgumentParser(prog="rsmoe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            resolve(add_arguments)(p)
            p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import RsmoeError

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    try:
        return resolve(args.run)(args) or 0
    except RsmoeError as exc:
        if os.environ.get("RSMOE_DEBUG"):
            raise
        print(f"rsmoe {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rsmoe {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
