"""Cost of the SpectralMoE plug-in at ViT-L sizes, side by side in one run.

One frozen DINOv3 ViT-L block (d = 1024, 16 heads, N = 1024 patch tokens = a 512² image at patch 16, batch 2)
followed by the plug-in, forward + backward (the input requires grad, as it does when earlier plug-ins train).
Variants: no adapter (the block alone), Rein (E = 1, dot logits), SpectralMoE (E = 6, m = 100, r = 16, k = 1,
Laplace gating as in the ViT-L config) with each fusion mode. Ratios are times relative to the block alone,
measured in the same process.

    python benchmarks/bench_spectralmoe_layer.py [--repeats 3] [--device cpu|cuda] [--dtype float32|bfloat16]
        [--against GIT_REF]

``--against REF`` also times the plug-in as it was at git commit REF (``rsmoe/models/adapters`` read with
``git show`` into a temporary package), with the same weights, interleaved with today's, and checks that both give
the same tokens and loss in evaluation mode.

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


def variants(spectralmoe_cls=SpectralMoE, rein_builder=build_rein, suffix=""):
    if not suffix:
        yield "no adapter", None
    yield "rein" + suffix, rein_builder(num_layers=1, dim=D)
    for fusion in ("official", "cross_attention", "add"):
        yield f"spectralmoe/{fusion}{suffix}", spectralmoe_cls(num_layers=1, dim=D, num_experts=6, num_tokens=100,
                                                               rank=16, gating="laplace", fusion=fusion)


def adapters_at(ref: str):
    """(SpectralMoE, build_rein) of ``rsmoe/models/adapters`` at git commit ``ref``, imported from a temporary copy."""
    import importlib
    import subprocess
    import sys
    import tempfile

    repo = Path(__file__).resolve().parents[1]
    folder = "rsmoe/models/adapters"
    names = subprocess.run(["git", "-C", str(repo), "ls-tree", "--name-only", f"{ref}:{folder}"], check=True,
                           capture_output=True, text=True).stdout.split()
    root = Path(tempfile.mkdtemp(prefix="rsmoe-adapters-"))
    package = root / f"adapters_{ref.replace('-', '_')}"
    package.mkdir()
    for name in names:
        text = subprocess.run(["git", "-C", str(repo), "show", f"{ref}:{folder}/{name}"], check=True,
                              capture_output=True, text=True).stdout
        (package / name).write_text(text)
    sys.path.insert(0, str(root))
    return (importlib.import_module(f"{package.name}.spectralmoe").SpectralMoE,
            importlib.import_module(f"{package.name}.rein").build_rein)


def same_results(new, old, depth) -> bool:
    """Today's and the older plug-in (same weights) agree in evaluation mode on one input."""
    x = torch.randn(B, N, D, device=depth.device, dtype=depth.dtype)
    with torch.no_grad():
        a = new.eval()(0, x, depth if new.use_depth else None)
        b = old.eval()(0, x, depth if old.use_depth else None)
    new.train(), old.train()
    tol = 1e-4 if x.dtype == torch.float32 else 5e-2
    return bool(torch.allclose(a.tokens, b.tokens, rtol=tol, atol=tol) and torch.allclose(a.loss, b.loss, rtol=tol,
                                                                                        atol=tol))


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
    ap.add_argument("--against", default=None, metavar="GIT_REF", help="also time the plug-in as it was at this commit")
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

    steps, adapters, agree = {}, {}, {}
    for name, adapter in variants():
        if adapter is not None:
            adapter = adapter.to(device, dtype).train()
            with torch.no_grad():  # non-zero experts and routers so the refinement path does real work
                adapter.experts.experts_b.normal_(0, 0.02)
                if adapter.routing:
                    adapter.w_gate.normal_(0, 0.02)
                    adapter.w_noise.normal_(0, 0.02)
        adapters[name] = adapter
        steps[name] = make_step(block, pos, adapter, x0, depth)
    if args.against:
        suffix = f" @{args.against}"
        for name, old in variants(*adapters_at(args.against), suffix=suffix):
            old = old.to(device, dtype).train()
            old.load_state_dict(adapters[name[: -len(suffix)]].state_dict())
            agree[name] = same_results(adapters[name[: -len(suffix)]], old, depth)
            steps[name] = make_step(block, pos, old, x0, depth)

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
    rows = [{"variant": n, "seconds": min(t), "all_seconds": t, "peak_mib": peaks[n]} | (
        {"same_results_as_today": agree[n]} if n in agree else {}) for n, t in times.items()]
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
        "against": args.against,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("\n| variant | seconds | × block alone |\n|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['seconds']:.3f} | {r['ratio_vs_block']:.2f} |")


if __name__ == "__main__":
    main()
