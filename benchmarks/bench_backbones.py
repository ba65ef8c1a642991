"""Forward cost of the frozen ViT-L backbones, side by side in one run: DOFA-L vs DINOv3-L (and the depth encoder).

Each backbone runs as the Segmentor runs it — ``embed`` then the 24 blocks one by one — on one 512² image with 4
bands (Five-Billion-Pixels NIR, R, G, B; DINOv3 with its cyclic 4-band patch kernel, DOFA generating its kernel
from the wavelengths 0.83 / 0.665 / 0.56 / 0.49 µm), under ``torch.no_grad`` (the backbones are frozen), random
weights (cost does not depend on them). The depth encoder row is the Prompt Depth Anything ViT-L/14 encoder with
its patch kernel resized to 16 (what SpectralMoE runs next to the vision model, on 3 of the bands). DOFA's kernel
generation alone is reported as well. Ratios are relative to DINOv3-L, same process, rounds interleaved, min over
the repeats.

    python benchmarks/bench_backbones.py [--repeats 2] [--batch 1] [--device cpu|cuda] [--no-depth]

Writes benchmarks/results/backbones.json and backbones.md (a markdown table).
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from pathlib import Path

import torch

from rsmoe.models.backbones import DINOV3_PRESETS, build_backbone, build_depth_encoder

IMAGE = 512
WAVELENGTHS = [0.83, 0.665, 0.56, 0.49]
DEPTH_VITL = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
              "patch_size": 14, "image_size": 518}


def build(name: str):
    if name == "dinov3_vitl":
        return build_backbone("dinov3", config=DINOV3_PRESETS["vitl16"], num_bands=4, band_init="cyclic",
                              wavelengths=WAVELENGTHS)
    if name == "dofa_vitl":
        return build_backbone("dofa", config={"size": "large"})
    if name == "depth_vitl":
        return build_depth_encoder(config=DEPTH_VITL, target_patch_size=16)
    raise ValueError(name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-depth", action="store_true", help="skip the depth-encoder row")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "backbones.json"))
    args = ap.parse_args()
    device = torch.device(args.device)
    names = ["dinov3_vitl", "dofa_vitl"] + ([] if args.no_depth else ["depth_vitl"])
    image = torch.randn(args.batch, 4, IMAGE, IMAGE, generator=torch.Generator().manual_seed(0)).to(device)
    wl = torch.tensor(WAVELENGTHS, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    models = {}
    for name in names:
        with torch.random.fork_rng(devices=[]):
            models[name] = build(name).to(device).eval()
        gc.collect()

    @torch.no_grad()
    def run(name):
        model = models[name]
        if name == "depth_vitl":
            return model(image, wl, (IMAGE // 16, IMAGE // 16))
        return model.forward_patch_tokens(image, wl)

    @torch.no_grad()
    def dofa_kernel():
        return models["dofa_vitl"].patch_kernel(WAVELENGTHS)

    peaks: dict[str, float | None] = {}
    for name in names:  # warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        out = run(name)
        sync()
        peaks[name] = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
        assert len(out) == 24 and out[-1].shape == (args.batch, (IMAGE // 16) ** 2, 1024), (name, out[-1].shape)
    dofa_kernel()
    times = {name: [] for name in names}
    kernel_times = []
    for _ in range(args.repeats):
        for name in names:
            t0 = time.perf_counter()
            run(name)
            sync()
            times[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        dofa_kernel()
        sync()
        kernel_times.append(time.perf_counter() - t0)
    rows = []
    for name in names:
        rows.append({
            "variant": name,
            "params": sum(p.numel() for p in models[name].parameters()),
            "seconds": min(times[name]),
            "all_seconds": times[name],
            "peak_mib": peaks[name],
        })
    base = rows[0]["seconds"]
    for r in rows:
        r["ratio_vs_dinov3"] = r["seconds"] / base
    cpu = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    result = {
        "benchmark": "backbones",
        "what": "frozen ViT-L forward (embed + 24 blocks, block by block), no grad, min over repeats",
        "sizes": {"image": IMAGE, "bands": 4, "batch": args.batch, "tokens": (IMAGE // 16) ** 2, "width": 1024},
        "device": torch.cuda.get_device_name() if device.type == "cuda" else cpu,
        "dtype": "float32",
        "torch": torch.__version__,
        "repeats": args.repeats,
        "dofa_kernel_generation_seconds": min(kernel_times),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    table = ["| backbone | params | forward (s) | × DINOv3-L |", "|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['variant']} | {r['params']:,} | {r['seconds']:.3f} | {r['ratio_vs_dinov3']:.2f} |")
    md = (f"Frozen ViT-L forward, {IMAGE}² image with 4 bands, batch {args.batch}, no grad, on {result['device']}, "
          f"torch {torch.__version__}; min of {args.repeats}. DOFA's kernel generation alone: "
          f"{result['dofa_kernel_generation_seconds'] * 1000:.1f} ms.\n\n" + "\n".join(table) + "\n")
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
