"""Cost of the SpectralMoE plug-in at ViT-L sizes, side by side in one run.

One frozen DINOv3 ViT-L block (d = 1024, 16 heads, N = 1024 patch tokens = a 512² image at patch 16, batch 2)
followed by the plug-in, forward + backward (the input requires grad, as it does when earlier plug-ins train).
Variants: no adapter (the block alone), Rein (E = 1, dot logits), SpectralMoE (E = 6, m = 100, r = 16, k = 1) with
each fusion mode. Ratios are times relative to the block alone, measured in the same process.

    python benchmarks/bench_spectralmoe_layer.py [--repeats 3] [--device cpu|cuda] [--dtype float32|bfloat16]

Writes benchmarks/results/spectralmoe_layer.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from transformers import DINOv3ViTConfig
from transformers.models.dinov3_vit.modeling_dinov3_vit import DINOv3ViTLayer, DINOv3ViTRopePositionEmbedding

from rsmoe.models.adapters.rein import build_rein
from rsmoe.models.adapters.spectralmoe import SpectralMoE

D, N, B, HEADS, PREFIX = 1024, 1024, 2, 16, 5


def variants():
    yield "no adapter", None
    yield "rein", build_rein(num_layers=1, dim=D)
    for fusion in ("official", "cross_attention", "add"):
        yield f"spectralmoe/{fusion}", SpectralMoE(num_layers=1, dim=D, num_experts=6, num_tokens=100, rank=16,
                                                    fusion=fusion)


def make_step(block, pos, adapter, x0, depth):
    """One forward + backward of the frozen block followed by the plug-in (or not)."""

    def step():
        x = x0.clone().requires_grad_(True)
        out = block(x, position_embeddings=pos)
        loss_moe = 0.0
        if adapter is not None:
            res = adapter(0, out[:, PREFIX:], depth if adapter.use_depth else None)
            out = torch.cat([out[:, :PREFIX], res.tokens], 1)
            loss_moe = res.loss
        (out.float().square().mean() + loss_moe).backward()

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "spectralmoe_layer.json"))
    args = ap.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    cfg = DINOv3ViTConfig(hidden_size=D, num_attention_heads=HEADS, intermediate_size=4 * D, patch_size=16,
                          num_register_tokens=4, image_size=512)
    cfg._attn_implementation = "sdpa"
    block = DINOv3ViTLayer(cfg).to(device, dtype).eval().requires_grad_(False)
    rope = DINOv3ViTRopePositionEmbedding(cfg).to(device).eval()
    cos, sin = rope(torch.zeros(1, 3, 512, 512, device=device))
    pos = (cos.to(dtype), sin.to(dtype))
    x0 = torch.randn(B, PREFIX + N, D, device=device, dtype=dtype)
    depth = torch.randn(B, N, D, device=device, dtype=dtype)

    steps = {}
    for name, adapter in variants():
        if adapter is not None:
            adapter = adapter.to(device, dtype).train()
            with torch.no_grad():  # non-zero experts so the refinement path does real work
                adapter.experts.experts_b.normal_(0, 0.02)
        steps[name] = make_step(block, pos, adapter, x0, depth)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {name: [] for name in steps}
    peaks: dict[str, float | None] = {}
    for name, step in steps.items():  # warm-up and peak memory, one variant at a time
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step()
        sync()
        peaks[name] = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    for _ in range(args.repeats):  # interleaved rounds, so a slow moment of the machine hits every variant
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - t0)
    rows = [{"variant": n, "seconds": min(t), "all_seconds": t, "peak_mib": peaks[n]} for n, t in times.items()]
    base = rows[0]["seconds"]
    for r in rows:
        r["ratio_vs_block"] = r["seconds"] / base
    result = {
        "benchmark": "spectralmoe_layer",
        "what": "one frozen DINOv3 ViT-L block + plug-in, forward+backward, min over repeats",
        "sizes": {"d": D, "N": N, "batch": B, "experts": 6, "tokens": 100, "rank": 16, "top_k": 1},
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "dtype": args.dtype,
        "torch": torch.__version__,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("\n| variant | seconds | × block alone |\n|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['seconds']:.3f} | {r['ratio_vs_block']:.2f} |")


if __name__ == "__main__":
    main()
