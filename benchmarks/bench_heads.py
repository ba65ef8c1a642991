"""Cost of the decode heads at ViT-L tap sizes, side by side in one run: Mask2Former vs the simple FPN head.

Input: the four pyramid maps a ViT-L/16 gives for a 512² image — 1024 channels at 128², 64², 32², 16² (strides
4, 8, 16, 32) — batch B (default 1). One step = forward + training loss + backward, with a random 512² mask over
K = 24 classes (Five-Billion-Pixels). Mask2Former is configured as the public code (256 channels, 100 queries,
6 deformable encoder layers, 9 decoder layers, 12,544 loss points, deep supervision over 10 predictions, Hungarian
matching); FPN is rsmoe's light head (256 channels, pixel cross-entropy). Forward-only time (no grad) is reported
too. Ratios are relative to the FPN head, measured in the same process, rounds interleaved; each number is the
minimum over the repeats.

    python benchmarks/bench_heads.py [--repeats 2] [--batch 1] [--device cpu|cuda]

Writes benchmarks/results/heads.json and heads.md (a markdown table).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from rsmoe.models.heads.fpn import FPNHead
from rsmoe.models.heads.mask2former import Mask2FormerHead

D, IMAGE, K = 1024, 512, 24
SIZES = [IMAGE // 4, IMAGE // 8, IMAGE // 16, IMAGE // 32]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "heads.json"))
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    heads = {
        "fpn": FPNHead([D] * 4, K, channels=256),
        "mask2former": Mask2FormerHead([D] * 4, K),
    }
    feats = [torch.randn(args.batch, D, s, s, device=device) for s in SIZES]
    # a blocky random label map: ~6 classes per image, like a land-cover tile
    coarse = torch.randint(0, K, (args.batch, 1, 8, 8), generator=torch.Generator().manual_seed(1)).float()
    mask = torch.nn.functional.interpolate(coarse, size=(IMAGE, IMAGE), mode="nearest")[:, 0].long().to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step(head):
        inputs = [f.detach().requires_grad_(True) for f in feats]  # as when the plug-in below trains
        out = head(inputs)
        loss = head.loss(out, mask)["loss"]
        loss.backward()
        head.zero_grad(set_to_none=True)

    def forward_only(head):
        with torch.no_grad():
            head.predict(head(feats), (IMAGE, IMAGE))

    for head in heads.values():
        head.to(device).train()
    peaks: dict[str, float | None] = {}
    for name, head in heads.items():  # warm-up (and peak memory on CUDA)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        train_step(head)
        forward_only(head)
        sync()
        peaks[name] = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    times = {name: {"train": [], "forward": []} for name in heads}
    for _ in range(args.repeats):
        for name, head in heads.items():
            for kind, fn in (("train", train_step), ("forward", forward_only)):
                t0 = time.perf_counter()
                fn(head)
                sync()
                times[name][kind].append(time.perf_counter() - t0)
    rows = []
    for name, head in heads.items():
        rows.append({
            "variant": name,
            "params": sum(p.numel() for p in head.parameters()),
            "seconds": min(times[name]["train"]),
            "all_seconds": times[name]["train"],
            "forward_seconds": min(times[name]["forward"]),
            "peak_mib": peaks[name],
        })
    base = rows[0]
    for r in rows:
        r["ratio_vs_fpn"] = r["seconds"] / base["seconds"]
        r["forward_ratio_vs_fpn"] = r["forward_seconds"] / base["forward_seconds"]
        r["params_ratio_vs_fpn"] = r["params"] / base["params"]
    cpu = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    result = {
        "benchmark": "heads",
        "what": "decode head at ViT-L/16 tap sizes for a 512² image: forward + loss + backward (seconds) and "
                "forward only, min over repeats",
        "sizes": {"in_channels": D, "maps": SIZES, "batch": args.batch, "classes": K, "image": IMAGE},
        "device": torch.cuda.get_device_name() if device.type == "cuda" else cpu,
        "dtype": "float32",
        "torch": torch.__version__,
        "repeats": args.repeats,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    table = ["| head | params | fwd+loss+bwd (s) | × FPN | forward (s) | × FPN |", "|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['variant']} | {r['params']:,} | {r['seconds']:.3f} | {r['ratio_vs_fpn']:.2f} | "
                     f"{r['forward_seconds']:.3f} | {r['forward_ratio_vs_fpn']:.2f} |")
    md = (f"Decode heads at ViT-L/16 tap sizes (1024 ch at {', '.join(f'{s}²' for s in SIZES)}; {IMAGE}² image, "
          f"batch {args.batch}, K = {K}) on {result['device']}, torch {torch.__version__}; min of {args.repeats}.\n\n"
          + "\n".join(table) + "\n")
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
