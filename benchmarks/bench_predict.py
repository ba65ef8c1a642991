"""Benchmark of whole-scene prediction (rsmoe.predict).

(a) throughput: ``rsmoe predict`` (``run_predict_from_args``, in process, the checkpoint loader returning the model)
    on a synthetic 2048² 4-band scene ÷ the raw model forward on the same number of 512² windows already in memory
    (same batch size), measured in one run. Goal ≥ 0.8.
(b) memory: peak RSS (VmHWM) of a fresh subprocess predicting a 2048², 8192² and 16384² scene. Goal: flat (within
    20 %) rather than growing with the area. Nothing in the pipeline scales with the scene height; what scales with
    its width (the blender's overlap-row carry strip, the class map's pending block rows, GDAL's overview build) is
    recorded per size. Each scene is measured 2–3 times and the median kept (the allocator adds some noise).

Both parts run on a possibly shared machine: (a) interleaves raw and pipeline runs and keeps the best of each; the
load average is recorded.

Writes ``benchmarks/results/predict.json`` and prints a Markdown table. Usage::

    python benchmarks/bench_predict.py              # both parts
    python benchmarks/bench_predict.py --sizes 2048 8192   # (b) on fewer sizes
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rsmoe.data.normalize import Normalize  # noqa: E402
from rsmoe.predict import (  # noqa: E402
    PredictionModel,
    add_predict_arguments,
    output_paths,
    plan_windows,
    run_predict_from_args,
)

WAVELENGTHS = [0.490, 0.560, 0.665, 0.842]
CLASSES = ["water", "trees", "low vegetation", "building", "road", "bare"]
PALETTE = [(0, 0, 255), (0, 128, 0), (128, 255, 0), (255, 0, 0), (128, 128, 128), (200, 180, 120)]


class SmallConvNet(torch.nn.Module):
    """(a): a small fully-convolutional segmenter, 4 → 32 → 32 → 6 channels (3×3, 3×3, 1×1)."""

    def __init__(self, bands: int = 4, hidden: int = 32, classes: int = 6):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(bands, hidden, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(hidden, hidden, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(hidden, classes, 1),
        )

    def forward(self, image, wavelengths):
        return self.net(image)


class CheapModel(torch.nn.Module):
    """(b): a per-pixel linear map 4 → 6 classes (as a matmul: torch's 1×1 conv is ~7× slower on CPU), so the memory
    and time of the pipeline, not of the model, are measured."""

    def __init__(self, bands: int = 4, classes: int = 6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(classes, bands))
        self.bias = torch.nn.Parameter(torch.zeros(classes))

    def forward(self, image, wavelengths):
        b, _, h, w = image.shape
        return (self.weight @ image.flatten(2)).view(b, -1, h, w) + self.bias[:, None, None]


def make_pm(model: torch.nn.Module) -> PredictionModel:
    torch.manual_seed(0)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return PredictionModel(model=model.eval(), class_names=CLASSES, palette=PALETTE,
                           normalize=Normalize([1000.0, 1100.0, 1200.0, 2500.0], [300.0, 300.0, 400.0, 800.0]),
                           wavelengths=WAVELENGTHS, band_names=["B2", "B3", "B4", "B8"], sensor="sentinel2_10m")


def write_scene(path: Path, size: int, nodata_corner: bool = True) -> Path:
    """A size² 4-band uint16 scene (EPSG:32633, 10 m), tiled 512 + deflate, written block by block."""
    import rasterio
    from rasterio.transform import Affine
    from rasterio.windows import Window

    block = 512
    profile = dict(driver="GTiff", width=size, height=size, count=4, dtype="uint16", crs="EPSG:32633",
                   transform=Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0), nodata=0, tiled=True,
                   blockxsize=block, blockysize=block, compress="deflate", predictor=2, BIGTIFF="IF_SAFER")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:block, 0:block].astype(np.float32)
    base = np.array([1000, 1100, 1200, 2500], np.float32)[:, None, None]
    with rasterio.Env(GDAL_CACHEMAX=64 * 2**20), rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size, block):
            for c in range(0, size, block):
                h, w = min(block, size - r), min(block, size - c)
                y, x = (yy[:h, :w] + r) / 700.0, (xx[:h, :w] + c) / 900.0
                field = np.sin(y) * np.cos(x) + 0.5 * np.sin(3.1 * x + 1.7 * y)
                data = base[:, :1, :1] * (1 + 0.3 * field[None]) + rng.normal(0, 20, (4, h, w))
                data = np.clip(data, 1, 65535).astype(np.uint16)
                if nodata_corner and r == 0 and c == 0:
                    data[:, :100, :100] = 0  # a no-data corner
                dst.write(data, window=Window(c, r, w, h))
    return path


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rsmoe_predict(pm: PredictionModel, scene: Path, out: Path, batch_size: int = 4) -> dict:
    """``rsmoe predict --input SCENE --out OUT --device cpu --no-progress`` with ``pm`` as the loaded checkpoint
    (the same code path as the command: argument parsing, checks, process set-up, prediction); returns the summary."""
    args = add_predict_arguments(argparse.ArgumentParser()).parse_args(
        ["--checkpoint", "bench", "--input", str(scene), "--out", str(out), "--tile", "512", "--overlap", "128",
         "--batch-size", str(batch_size), "--device", "cpu", "--no-progress"])
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        run_predict_from_args(args, lambda _checkpoint: pm)
    return json.loads(output_paths(out, scene)["summary"].read_text())


def child(scene: str, out: str) -> None:
    """(b) in a fresh process: predict one scene, print peak RSS and timings as JSON."""
    torch.set_num_threads(2)
    pm = make_pm(CheapModel())
    t0 = time.perf_counter()
    s = rsmoe_predict(pm, Path(scene), Path(out))
    print(json.dumps({"peak_rss_mb": _vm_hwm_mb(), "seconds": time.perf_counter() - t0,
                      "predict_seconds": s["predict_seconds"], "windows": s["windows"],
                      "pixels_per_second": s["pixels_per_second"]}))


def bench_throughput(tmp: Path, size: int = 2048, batch_size: int = 4, repeats: int = 2) -> dict:
    torch.set_num_threads(2)
    pm = make_pm(SmallConvNet())
    scene = write_scene(tmp / f"thr_{size}.tif", size)
    plan = plan_windows(size, size, 512, 128)
    n = plan.num_windows
    wl = torch.tensor(WAVELENGTHS)
    rng = np.random.default_rng(1)
    windows = torch.from_numpy(rng.normal(size=(n, 4, 512, 512)).astype(np.float32))
    with torch.inference_mode():  # warm-up
        pm.model(windows[:batch_size], wl)

    def raw() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for k in range(0, n, batch_size):
                pm.model(windows[k : k + batch_size], wl)
        return time.perf_counter() - t0

    def pipeline() -> tuple[float, dict]:
        out = tmp / f"thr_out_{time.monotonic_ns()}"
        t0 = time.perf_counter()
        s = rsmoe_predict(pm, scene, out, batch_size)
        return time.perf_counter() - t0, s

    raws, pipes, summaries = [], [], []
    for _ in range(repeats):  # interleaved, best of each
        raws.append(raw())
        t, s = pipeline()
        pipes.append(t)
        summaries.append(s)
    t_raw, t_pipe = min(raws), min(pipes)
    s = summaries[int(np.argmin(pipes))]
    return {
        "scene": f"{size}x{size}x4 uint16 (deflate, 512 tiles)",
        "model": "SmallConvNet 4-32-32-6 (3x3, 3x3, 1x1)",
        "tile": 512, "overlap": 128, "batch_size": batch_size, "windows": n,
        "raw_forward_seconds": t_raw,
        "predict_seconds": t_pipe,
        "predict_seconds_without_preview_and_summary": s["predict_seconds"],
        "forward_seconds_inside_predict": s["forward_seconds"],
        "ratio": t_raw / t_pipe,
        "ratio_without_preview": t_raw / s["predict_seconds"],
        "goal": ">= 0.8",
    }


def bench_memory(tmp: Path, sizes: list[int]) -> list[dict]:
    """Peak RSS of a fresh process per run; each scene is run several times (3 up to 4096², else 2) and the median
    is reported, with the range."""
    rows = []
    for size in sizes:
        t0 = time.perf_counter()
        scene = write_scene(tmp / f"mem_{size}.tif", size)
        t_write = time.perf_counter() - t0
        runs = []
        for rep in range(3 if size <= 4096 else 2):
            proc = subprocess.run([sys.executable, __file__, "--child", str(scene), str(tmp / f"mem_out_{size}_{rep}")],
                                  capture_output=True, text=True, check=True)
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        peaks = [r["peak_rss_mb"] for r in runs]
        plan = plan_windows(size, size, 512, 128)
        classes = len(CLASSES)
        res = {**runs[int(np.argsort(peaks)[len(peaks) // 2])], "peak_rss_mb": float(np.median(peaks)),
               "peak_rss_mb_runs": peaks, "size": size, "write_scene_seconds": t_write,
               "scene_mb_uncompressed": size * size * 4 * 2 / 2**20,
               # the buffers that scale with the scene width (none scales with its height)
               "carry_strip_mb": plan.carry_rows * size * (classes * 4 + 1) / 2**20,
               "class_pending_rows_mb": (512 + plan.max_emit_rows) * size / 2**20}
        rows.append(res)
        print(f"  {size}²: peak RSS {res['peak_rss_mb']:.0f} MB (runs {[round(p) for p in peaks]}), "
              f"{res['seconds']:.1f} s", flush=True)
        scene.unlink()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=2, metavar=("SCENE", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--sizes", nargs="+", type=int, default=[2048, 8192, 16384])
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="(a): interleaved repeats, best of each is kept")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "predict.json"))
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    result: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                                "python": platform.python_version()},
                    "started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="rsmoe-bench-predict-") as tmp_s:
        tmp = Path(tmp_s)
        if not args.skip_throughput:
            print("(a) throughput …", flush=True)
            result["throughput"] = bench_throughput(tmp, repeats=args.repeats)
        rows = []
        if not args.skip_memory:
            print("(b) peak RSS …", flush=True)
            rows = bench_memory(tmp, args.sizes)
    if rows:
        base = rows[0]["peak_rss_mb"]
        for r in rows:
            r["rss_vs_smallest"] = r["peak_rss_mb"] / base
        result["memory"] = {"model": "CheapModel: per-pixel linear 4->6 (matmul)", "tile": 512, "overlap": 128,
                            "batch_size": 4, "rows": rows,
                            "max_growth": max(r["rss_vs_smallest"] for r in rows) - 1.0, "goal": "flat: within 20 %"}
    result["load_average_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print()
    if "throughput" in result:
        t = result["throughput"]
        print("| (a) throughput, 2048² × 4 bands | value |\n|---|---|")
        print(f"| windows (512², overlap 128, batch {t['batch_size']}) | {t['windows']} |")
        print(f"| raw forward in memory | {t['raw_forward_seconds']:.2f} s |")
        print(f"| `rsmoe predict` end to end | {t['predict_seconds']:.2f} s |")
        print(f"| ratio raw ÷ predict (goal ≥ 0.8) | **{t['ratio']:.2f}** |")
        print(f"| ratio without preview / summary | {t['ratio_without_preview']:.2f} |")
        print()
    if rows:
        print("| (b) scene | windows | peak RSS, median (range) | vs 2048² | predict time |\n|---|---|---|---|---|")
    for r in rows:
        rng = f" ({min(r['peak_rss_mb_runs']):.0f}–{max(r['peak_rss_mb_runs']):.0f})" \
            if len(r["peak_rss_mb_runs"]) > 1 else ""
        print(f"| {r['size']}² | {r['windows']} | {r['peak_rss_mb']:.0f} MB{rng} | {r['rss_vs_smallest']:.2f}× | "
              f"{r['seconds']:.1f} s |")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
