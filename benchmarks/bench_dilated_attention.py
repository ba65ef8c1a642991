"""Sliding-window dilated attention: rsmoe's implementation against the unfold-based reference, in one run.

Stage-4 sizes of MPerS (B = 2, C = 256, 8 heads, k = 3) on 32×32 and 64×64 maps, dilation r = 1, 2, 3, forward +
backward (q, k, v require grad, loss = mean of the output squared). Variants:

* ``shift`` — :func:`rsmoe.models.mpers.dilated_attention` (the implementation: shifted views of the padded
  keys/values, hand-written backward);
* ``unfold`` — :func:`rsmoe.models.mpers.dilated_attention_unfold` (the original DilateFormer gather, autograd);
* ``shift-autograd`` — the same shifted views with autograd's backward (shows what the hand-written one buys).

Repeats are interleaved across variants (A B C A B C …) so that load changes on a shared machine hit every variant
alike; the minimum over repeats is reported. "saved MiB" is the size of the tensors autograd keeps for the backward
(distinct storages, via saved-tensor hooks) — the activation memory a training step holds per call.

    python benchmarks/bench_dilated_attention.py [--repeats 5] [--device cpu|cuda] [--sizes 32 64]

Writes benchmarks/results/dilated_attention.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rsmoe.models.mpers.dilated_attention import dilated_attention, dilated_attention_unfold

B, C, HEADS, KERNEL = 2, 256, 8, 3


def shift_autograd(q, k, v, num_heads, kernel_size=3, dilation=1):
    """Shifted views of the zero-padded keys/values, differentiated by autograd (no hand-written backward)."""
    b, c, h, w = q.shape
    d = c // num_heads
    pad = dilation * (kernel_size - 1) // 2
    qh = (q * d ** -0.5).view(b, num_heads, d, h, w)
    kp = F.pad(k, (pad,) * 4).view(b, num_heads, d, h + 2 * pad, w + 2 * pad)
    vp = F.pad(v, (pad,) * 4).view(b, num_heads, d, h + 2 * pad, w + 2 * pad)
    offsets = [(a * dilation, e * dilation) for a in range(kernel_size) for e in range(kernel_size)]
    scores = torch.stack([(qh * kp[..., r:r + h, s:s + w]).sum(2) for r, s in offsets], 0).softmax(0)
    out = sum(scores[n].unsqueeze(2) * vp[..., r:r + h, s:s + w] for n, (r, s) in enumerate(offsets))
    return out.reshape(b, c, h, w)


VARIANTS = {"shift": dilated_attention, "unfold": dilated_attention_unfold, "shift-autograd": shift_autograd}


def saved_mib(fn, q, k, v, dilation) -> float:
    storages: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    leaves = {x.untyped_storage().data_ptr() for x in (q, k, v)}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(q, k, v, HEADS, KERNEL, dilation)
    del out
    return sum(n for p, n in storages.items() if p not in leaves) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--dilations", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dilated_attention.json"))
    args = ap.parse_args()
    device = torch.device(args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    rows = []
    for size in args.sizes:
        for r in args.dilations:
            g = torch.Generator().manual_seed(0)
            base = [torch.randn(B, C, size, size, generator=g).to(device) for _ in range(3)]
            q, k, v = (t.clone().requires_grad_(True) for t in base)
            # correctness in this run: outputs and gradients of every variant against the reference
            ref_out = dilated_attention_unfold(q, k, v, HEADS, KERNEL, r)
            ref_grads = torch.autograd.grad(ref_out.square().mean(), (q, k, v))
            errors = {}
            for name, fn in VARIANTS.items():
                out = fn(q, k, v, HEADS, KERNEL, r)
                grads = torch.autograd.grad(out.square().mean(), (q, k, v))
                errors[name] = max([(out - ref_out).abs().max().item()]
                                   + [(a - b).abs().max().item() for a, b in zip(grads, ref_grads)])

            def step(fn):
                out = fn(q, k, v, HEADS, KERNEL, r)
                out.square().mean().backward()
                q.grad = k.grad = v.grad = None

            times: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for name, fn in VARIANTS.items():  # warm-up
                step(fn)
            for _ in range(args.repeats):
                for name, fn in VARIANTS.items():
                    sync()
                    t0 = time.perf_counter()
                    step(fn)
                    sync()
                    times[name].append(time.perf_counter() - t0)
            ref = min(times["unfold"])
            for name, fn in VARIANTS.items():
                row = {"size": size, "dilation": r, "variant": name, "seconds": min(times[name]),
                       "all_seconds": times[name], "speedup_vs_unfold": ref / min(times[name]),
                       "saved_mib": saved_mib(fn, q, k, v, r), "max_abs_error_vs_unfold": errors[name]}
                rows.append(row)
                print(f"{size}×{size} r={r} {name:<15} {1e3 * row['seconds']:9.1f} ms  ×{row['speedup_vs_unfold']:.2f}"
                      f"  saved {row['saved_mib']:7.1f} MiB  err {errors[name]:.1e}", flush=True)

    result = {
        "benchmark": "dilated_attention",
        "what": "sliding-window dilated attention, forward+backward, min over interleaved repeats",
        "sizes": {"batch": B, "channels": C, "heads": HEADS, "kernel": KERNEL, "maps": args.sizes,
                  "dilations": args.dilations},
        "device": (torch.cuda.get_device_name() if device.type == "cuda"
                   else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"),
        "dtype": "float32",
        "torch": torch.__version__,
        "repeats": args.repeats,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nDilated attention, B={B}, C={C}, {HEADS} heads, k={KERNEL}, forward+backward, {result['device']}\n")
    print("| map | r | variant | ms | × vs unfold | saved for backward (MiB) |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['size']}×{row['size']} | {row['dilation']} | {row['variant']} | {1e3 * row['seconds']:.1f} | "
              f"{row['speedup_vs_unfold']:.2f} | {row['saved_mib']:.1f} |")


if __name__ == "__main__":
    main()
