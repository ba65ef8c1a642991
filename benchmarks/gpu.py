"""One-command GPU benchmark for a lent GPU (``make bench-gpu``): what a user with a real GPU meets.

1. the whole training step (:mod:`bench_train_step`: the ViT-L config, random weights, 512² 4-band crops, AdamW)
   in bfloat16 autocast, at batch 2, 4 and 8, then doubling while it fits: images per second, peak memory
   (``torch.cuda.max_memory_allocated``; peak RSS on a CPU) and the largest batch that fits, for each variant
   (default frozen, rein, SpectralMoE ``official``, and ``official`` with activation checkpointing), with
   ``torch.compile`` off and on (each frozen block of both encoders and the plug-in compiled; the plug-in's
   expert grouping is data-dependent and runs between graphs);
2. the depth encoder's share of the step: its forward alone (inference mode, same precision) ÷ the step;
3. ``rsmoe predict`` throughput on an 8192² 4-band scene with the SpectralMoE ViT-L model (512² windows, overlap
   128), float32 as the command runs it and under bfloat16 autocast.

Each (variant, compile) pair runs in a fresh subprocess, so memory figures and out-of-memory errors stay separate.

    python benchmarks/gpu.py                     # on the GPU (defaults to cuda)
    python benchmarks/gpu.py --device cpu --quick   # the same code paths at tiny sizes (the test suite runs this)

Writes benchmarks/results/gpu.json (``--out``) and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_train_step as ts  # noqa: E402

from rsmoe.io.atomic import atomic_write_json  # noqa: E402

DEFAULT_VARIANTS = ["frozen", "rein", "spectralmoe/official", "spectralmoe/official+ac"]


def compile_model(model, backend: str) -> None:
    """``torch.compile`` every frozen block (vision and depth encoder) and the plug-in, in place."""
    for block in model.backbone.model.model.layer:
        block.compile(backend=backend)
    if model.depth is not None:
        for block in model.depth.layers:
            block.compile(backend=backend)
    if model.adapter is not None:
        model.adapter.compile(backend=backend)


def out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def reset_peak(device: torch.device) -> float:
    """Reset the peak mark; returns the memory held now (MiB)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    ts.reset_peak_rss()
    return ts.rss_mib("VmRSS")


def peak(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else ts.rss_mib("VmHWM")


def depth_seconds(model, batch: dict, repeats: int, device: torch.device) -> float | None:
    """Median time of the depth encoder's forward alone (as the step runs it: inference mode, bf16 autocast)."""
    if model.depth is None:
        return None
    grid = tuple(s // model.backbone.patch_size for s in batch["image"].shape[-2:])
    times = []
    for _ in range(repeats + 1):
        ts.sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            model.depth(batch["image"], batch["wavelengths"], grid)
        ts.sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[len(times[1:]) // 2]


def measure_batch(model, optimizer, run, batch_size: int, args) -> dict:
    device = torch.device(args.device)
    batch = ts.make_batch(batch_size, args.image, device)
    before = reset_peak(device)
    times = []
    for i in range(args.warmup + args.steps):
        ts.sync(device)
        t0 = time.perf_counter()
        ts.train_step(model, optimizer, batch, run)
        ts.sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step = sorted(times)[len(times) // 2]
    depth = depth_seconds(model, batch, args.steps, device)
    return {"batch": batch_size, "seconds": step, "images_per_second": batch_size / step, "peak_mib": peak(device),
            "before_step_mib": before, "depth_seconds": depth, "depth_share": depth / step if depth else None}


def child(run_name: str, compiled: bool, args) -> dict:
    """Fresh process: one variant, compile on/off, batches ascending until one does not fit."""
    run, device = ts.Run.parse(run_name), torch.device(args.device)
    run = ts.Run(run.variant, run.checkpointing, bf16=True)
    torch.manual_seed(0)
    model, cfg = ts.build_model(run.variant, args.layers)
    model = model.to(device).train()
    if compiled:
        compile_model(model, args.compile_backend)
    optimizer = ts.make_optimizer(model, cfg)
    ts.allocate_optimizer_state(model, optimizer)
    rows, largest, batch_size = [], None, args.batches[0]
    while batch_size <= args.max_batch:
        try:
            rows.append(measure_batch(model, optimizer, run, batch_size, args))
            largest = batch_size
        except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError
            if not out_of_memory(exc):
                raise
            rows.append({"batch": batch_size, "out_of_memory": True})
            break
        later = [b for b in args.batches if b > batch_size]
        batch_size = later[0] if later else batch_size * 2
    return {"run": run.name, "compile": compiled, "rows": rows, "largest_batch_that_fits": largest,
            "largest_batch_probed": args.max_batch}


def run_child(run_name: str, compiled: bool, args) -> dict:
    cmd = [sys.executable, __file__, "--child", run_name, "--compile", "on" if compiled else "off",
           "--device", args.device, "--image", str(args.image), "--warmup", str(args.warmup), "--steps",
           str(args.steps), "--max-batch", str(args.max_batch), "--compile-backend", args.compile_backend,
           "--batches", *map(str, args.batches)] + (["--layers", str(args.layers)] if args.layers else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"run": run_name, "compile": compiled, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------- predict
class Bf16Forward(torch.nn.Module):
    """The model's forward under bfloat16 autocast, float32 scores out (what a precision flag of predict would do)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image, wavelengths):
        with torch.autocast(image.device.type, dtype=torch.bfloat16):
            return self.model(image, wavelengths).float()


def prediction_model(model):
    """The SpectralMoE model with what ``rsmoe predict`` needs (classes, palette, normalisation, bands)."""
    from rsmoe.data.normalize import Normalize
    from rsmoe.predict import PredictionModel

    names = [f"class {k}" for k in range(ts.NUM_CLASSES)]
    palette = [((37 * k) % 256, (91 * k) % 256, (151 * k) % 256) for k in range(ts.NUM_CLASSES)]
    return PredictionModel(model=model, class_names=names, palette=palette,
                           normalize=Normalize([2500.0, 1200.0, 1100.0, 1000.0], [800.0, 400.0, 300.0, 300.0]),
                           wavelengths=list(ts.WAVELENGTHS), band_names=["NIR", "R", "G", "B"], sensor=None,
                           multiple_of=model.backbone.patch_size)


def predict_throughput(args) -> list[dict]:
    """``rsmoe predict`` (in process, the checkpoint loader returning the model) on a synthetic scene."""
    from bench_predict import write_scene

    from rsmoe.predict import add_predict_arguments, output_paths, run_predict_from_args

    torch.manual_seed(0)
    model, _ = ts.build_model("spectralmoe/official", args.layers)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rsmoe-bench-gpu-") as tmp:
        scene = write_scene(Path(tmp) / "scene.tif", args.scene)
        for precision, net in (("float32", model), ("bfloat16 autocast", Bf16Forward(model))):
            out = Path(tmp) / precision.split()[0]
            cli = add_predict_arguments(argparse.ArgumentParser()).parse_args(
                ["--checkpoint", "bench", "--input", str(scene), "--out", str(out), "--tile", str(args.tile),
                 "--overlap", str(args.tile // 4), "--batch-size", str(args.predict_batch), "--device",
                 args.device, "--no-progress"])
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                run_predict_from_args(cli, lambda _checkpoint, net=net: prediction_model_for(net, model))
            s = json.loads(output_paths(out, scene)["summary"].read_text())
            rows.append({"precision": precision, "scene": args.scene, "tile": args.tile, "windows": s["windows"],
                         "batch_size": args.predict_batch, "seconds": time.perf_counter() - t0,
                         "forward_seconds": s["forward_seconds"], "pixels_per_second": s["pixels_per_second"],
                         "windows_per_second": s["windows"] / s["predict_seconds"]})
    return rows


def prediction_model_for(net, model):
    pm = prediction_model(model)
    pm.model = net
    return pm


# ----------------------------------------------------------------------------------------------------- reporting
def markdown(result: dict) -> str:
    lines = ["| run | compile | batch | images/s | s / step | peak MiB | depth share |", "|---|---|---|---|---|---|---|"]
    fits = ["", "| run | compile | largest batch that fits (probed up to) |", "|---|---|---|"]
    for r in result["steps"]:
        if "error" in r:
            lines.append(f"| {r['run']} | {'on' if r['compile'] else 'off'} | error: {r['error']} | | | | |")
            continue
        for row in r["rows"]:
            if row.get("out_of_memory"):
                lines.append(f"| {r['run']} | {'on' if r['compile'] else 'off'} | {row['batch']} | out of memory | | | |")
                continue
            share = "–" if row["depth_share"] is None else f"{row['depth_share']:.2f}"
            lines.append(f"| {r['run']} | {'on' if r['compile'] else 'off'} | {row['batch']} | "
                         f"{row['images_per_second']:.2f} | {row['seconds']:.3f} | {row['peak_mib']:.0f} | {share} |")
        fits.append(f"| {r['run']} | {'on' if r['compile'] else 'off'} | {r['largest_batch_that_fits']} "
                    f"({r['largest_batch_probed']}) |")
    pred = ["", "| `rsmoe predict` | scene | windows | windows/s | Mpixel/s |", "|---|---|---|---|---|"]
    for p in result.get("predict", []):
        pred.append(f"| {p['precision']} | {p['scene']}² | {p['windows']} | {p['windows_per_second']:.2f} | "
                    f"{p['pixels_per_second'] / 1e6:.2f} |")
    return "\n".join(lines + fits + pred)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (4 blocks, 64² crops, 256² scene): a smoke run")
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    ap.add_argument("--compile", choices=["off", "on", "both"], default="both")
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument("--batches", nargs="+", type=int, default=[2, 4, 8])
    ap.add_argument("--max-batch", type=int, default=64, help="doubling past the last batch stops here")
    ap.add_argument("--image", type=int, default=512)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--scene", type=int, default=8192, help="side of the predicted scene (0: skip predict)")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--predict-batch", type=int, default=16)
    ap.add_argument("--out", default=str(HERE / "results" / "gpu.json"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:  # the same code paths at sizes a CPU runs in seconds
        args.image, args.layers, args.batches, args.max_batch = 64, 4, [1, 2], 2
        args.warmup, args.steps, args.scene, args.tile, args.predict_batch = 1, 1, 256, 64, 4
        if args.compile_backend == "inductor":
            args.compile_backend = "eager"  # tracing without code generation
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.compile == "on", args)))
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; run with --device cpu (add --quick for a smoke run)")
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    result = {"benchmark": "gpu", "machine": ts.machine(device), "image": args.image, "layers": args.layers or 24,
              "precision": "bfloat16 autocast", "compile_backend": args.compile_backend, "quick": args.quick,
              "steps": []}
    for variant in args.variants:
        for compiled in modes:
            t0 = time.perf_counter()
            result["steps"].append(run_child(variant, compiled, args))
            print(f"  {variant} compile {'on' if compiled else 'off'}: {time.perf_counter() - t0:.0f} s", flush=True)
    if args.scene:
        result["predict"] = predict_throughput(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print("\n" + markdown(result) + f"\n\nwritten {args.out}")


if __name__ == "__main__":
    main()
