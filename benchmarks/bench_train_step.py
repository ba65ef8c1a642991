"""The whole training step of the full ViT-L configuration, variants side by side, with the memory levers.

One step = ``optimizer.zero_grad(set_to_none=True)``, ``Segmentor.loss(batch)`` (frozen DINOv3 ViT-L/16, the frozen
Prompt Depth Anything ViT-L encoder where the variant has a depth branch, the plug-in after every block, the
Mask2Former head with K = 24 classes and its matching loss), ``loss.backward()`` and an AdamW step with the
training recipe's parameter groups — what a training iteration of ``rsmoe train`` runs, on
``configs/models/spectralmoe_dinov3_vitl.yaml`` with random weights (cost does not depend on them), 4-band images
(NIR, R, G, B) and blocky random masks.

Variants: ``frozen`` (adapter none, only the head trains), ``floor`` (the depth encoder's forward plus a one-scalar
plug-in that makes autograd run back through every frozen block: what any depth-steered plug-in costs before it
computes anything), ``rein``, ``spectralmoe/official``, ``spectralmoe/cross_attention``, ``spectralmoe/add``.
A run is a variant plus levers: ``+ac`` (``train.activation_checkpointing``), ``+bf16`` (the step under
``torch.autocast`` in bfloat16, what ``train.precision: bf16-mixed`` does); ``+nograd`` runs the depth encoder as
rsmoe did before it used inference mode (its blocks under ``torch.no_grad``, views of the block outputs returned),
to measure that change.

* time: all runs of a batch size in one process sharing the frozen weights, one warm-up step each, then rounds
  that interleave the runs (a slow moment of the machine hits every run); the median step is reported, with the
  ratio to the frozen step of the same round set;
* memory: each run in a fresh subprocess; the optimiser state is allocated first, the peak is reset, then one step:
  peak RSS (``VmHWM``) on CPU, ``torch.cuda.max_memory_allocated`` on GPU. ``step_mib`` is the peak minus the
  memory held before the step (weights, optimiser state): what the step itself adds;
* ``--profile RUN``: ``torch.profiler`` on one step after a warm-up: the top operators by self time, and the step's
  time split by part (depth encoder, frozen blocks, plug-in, head, loss, optimiser), forward and backward (a backward
  operator is charged to the part whose forward operator created its autograd node).

    python benchmarks/bench_train_step.py                       # the default runs at 512², batch 1 and 2
    python benchmarks/bench_train_step.py --runs frozen spectralmoe/official+ac --batches 2 --steps 3
    python benchmarks/bench_train_step.py --image 256 --layers 4 --profile spectralmoe/official   # exploration

Writes benchmarks/results/train_step.json (and train_step_profile.{txt,json} with ``--profile``).
"""
from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from rsmoe.io.atomic import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "models" / "spectralmoe_dinov3_vitl.yaml"
RESULTS = REPO / "benchmarks" / "results"
WAVELENGTHS = [0.83, 0.665, 0.56, 0.49]  # NIR, R, G, B
NUM_CLASSES = 24
VARIANTS: dict[str, list[str]] = {
    "frozen": ["adapter.type=none", "depth.enabled=false"],
    "floor": ["adapter.type=none", "depth.enabled=true"],  # + NullPlugin, see build_model
    "rein": ["adapter.type=rein", "depth.enabled=false"],
    "spectralmoe/official": ["adapter.fusion=official"],
    "spectralmoe/cross_attention": ["adapter.fusion=cross_attention"],
    "spectralmoe/add": ["adapter.fusion=add"],
}
LEVERS = ("ac", "bf16", "nograd")
DEFAULT_RUNS = ["frozen", "floor", "rein", "spectralmoe/official", "spectralmoe/cross_attention", "spectralmoe/add",
                "spectralmoe/official+ac", "frozen+bf16", "spectralmoe/official+bf16", "spectralmoe/official+ac+bf16"]


@dataclass(frozen=True)
class Run:
    """A variant and its levers, written ``variant[+ac][+bf16]``."""

    variant: str
    checkpointing: bool = False
    bf16: bool = False
    depth_no_grad: bool = False

    @classmethod
    def parse(cls, text: str) -> "Run":
        variant, *levers = text.split("+")
        if variant not in VARIANTS or any(lever not in LEVERS for lever in levers):
            raise SystemExit(f"unknown run {text!r}: a variant of {list(VARIANTS)} with levers +{' +'.join(LEVERS)}")
        return cls(variant, "ac" in levers, "bf16" in levers, "nograd" in levers)

    @property
    def name(self) -> str:
        levers = [n for n, on in zip(LEVERS, (self.checkpointing, self.bf16, self.depth_no_grad)) if on]
        return "+".join([self.variant, *levers])


def no_grad_depth_forward(depth, image: Tensor, wavelengths: Tensor, grid) -> list[Tensor]:  # noqa: ARG001
    """The depth encoder as rsmoe ran it before inference mode: blocks under ``torch.no_grad``, per-block views of
    the outputs (prefix tokens sliced off)."""
    with torch.no_grad():
        tokens = depth.embeddings(depth.rgb_input(image, wavelengths))
        out = []
        for layer in depth.layers:
            tokens = layer(tokens)
            out.append(tokens[:, depth.num_prefix_tokens:])
    return out


class NullPlugin(nn.Module):
    """The ``floor`` variant's plug-in: SpectralMoE's data flow without its compute. It takes the depth tokens and
    multiplies the patch tokens (B×N×d) by one trainable scalar (1), so that the depth encoder runs and autograd
    goes back through every frozen block, as for any plug-in; no routers, experts or fusion."""

    use_depth = True

    def __init__(self, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, layer: int, visual: Tensor, depth: Tensor | None = None):  # noqa: ARG002
        from rsmoe.models.adapters.spectralmoe import AdapterOutput

        return AdapterOutput(tokens=visual * self.scale, loss=visual.new_zeros(()))

    def query_embeddings(self) -> None:
        return None

    def no_weight_decay_names(self) -> set[str]:
        return {"scale"}


# ------------------------------------------------------------------------------------------------ building blocks
def variant_config(variant: str, layers: int | None = None):
    """The ViT-L config with the variant's overrides; ``layers``: fewer blocks in both encoders (exploration)."""
    from rsmoe.config import load_config

    overrides = list(VARIANTS[variant])
    if layers is not None:
        overrides += [f"backbone.config.num_hidden_layers={layers}", f"depth.config.num_hidden_layers={layers}",
                      "backbone.taps=null"]
    return load_config(CONFIG, overrides)


def build_model(variant: str, layers: int | None = None, backbone=None, depth=None):
    """The Segmentor of a variant (random weights); ``backbone``/``depth``: reuse these frozen encoders."""
    from rsmoe.config import default_taps
    from rsmoe.models.backbones import build_backbone, build_depth_encoder
    from rsmoe.models.segmentor import Segmentor, build_adapter, segmentor_head

    cfg = variant_config(variant, layers)
    if backbone is None:
        b = cfg.backbone
        backbone = build_backbone(b.kind, config=b.config, num_bands=len(WAVELENGTHS), band_init=b.band_init,
                                  wavelengths=WAVELENGTHS, seed=b.seed)
    if cfg.depth.enabled and depth is None:
        depth = build_depth_encoder(config=cfg.depth.config, target_patch_size=backbone.patch_size, seed=cfg.depth.seed)
    num_layers, width = backbone.num_layers, backbone.embed_dim
    adapter = NullPlugin(num_layers) if variant == "floor" else build_adapter(cfg, num_layers, width)
    taps = cfg.backbone.taps if cfg.backbone.taps is not None else default_taps(num_layers)
    head = segmentor_head(cfg, [width] * len(taps), NUM_CLASSES, 255)
    uses_depth = adapter is not None and adapter.use_depth
    model = Segmentor(backbone, head, adapter=adapter, depth=depth if uses_depth else None, taps=taps,
                      router_loss_weight=cfg.adapter.loss_weight)
    return model, cfg


def make_batch(batch: int, image: int, device: torch.device, seed: int = 0) -> dict:
    """B×4×S×S normal images, their wavelengths and B×S×S masks of K classes in 32-pixel blocks."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, NUM_CLASSES, (batch, image // 32, image // 32), generator=g)
    mask = blocks.repeat_interleave(32, 1).repeat_interleave(32, 2)
    return {"image": torch.randn(batch, len(WAVELENGTHS), image, image, generator=g).to(device),
            "wavelengths": torch.tensor(WAVELENGTHS, device=device), "mask": mask.to(device)}


def make_optimizer(model, cfg):
    from rsmoe.engine.optim import build_optimizer

    return build_optimizer(model, cfg.train)[0]


def train_step(model, optimizer, batch: dict, run: Run) -> float:
    """One training iteration; returns the loss."""
    model.activation_checkpointing = run.checkpointing
    optimizer.zero_grad(set_to_none=True)
    device_type = batch["image"].device.type
    if model.depth is not None:  # an instance attribute shadows the class's forward
        model.depth.forward = (lambda *a, depth=model.depth: no_grad_depth_forward(depth, *a)) \
            if run.depth_no_grad else type(model.depth).forward.__get__(model.depth)
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=run.bf16):
        terms = model.loss(batch)
    terms["loss"].backward()
    optimizer.step()
    return float(terms["loss"].detach())


def allocate_optimizer_state(model, optimizer) -> None:
    """Create AdamW's moments (as the first real step would) without a forward pass, so one measured step shows
    the steady-state peak."""
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    lrs = [g["lr"] for g in optimizer.param_groups]
    for g in optimizer.param_groups:
        g["lr"] = 0.0
    optimizer.step()
    for g, lr in zip(optimizer.param_groups, lrs):
        g["lr"] = lr
    optimizer.zero_grad(set_to_none=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def machine(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "load_average": os.getloadavg()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ------------------------------------------------------------------------------------------------------- timing
def time_runs(runs: list[Run], batch_size: int, args) -> list[dict]:
    """Median seconds per step of every run at one batch size, in one process, rounds interleaved."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    models: dict[str, tuple] = {}
    backbone = depth = None
    for variant in dict.fromkeys(r.variant for r in runs):
        model, cfg = build_model(variant, args.layers, backbone, depth)
        backbone, depth = model.backbone, model.depth if model.depth is not None else depth
        model = model.to(device).train()
        models[variant] = (model, make_optimizer(model, cfg))
    batch = make_batch(batch_size, args.image, device)
    times: dict[str, list[float]] = {r.name: [] for r in runs}
    losses: dict[str, float] = {}
    for rnd in range(args.warmup + args.steps):
        for run in runs:
            model, optimizer = models[run.variant]
            sync(device)
            t0 = time.perf_counter()
            losses[run.name] = train_step(model, optimizer, batch, run)
            sync(device)
            if rnd >= args.warmup:
                times[run.name].append(time.perf_counter() - t0)
            print(f"  batch {batch_size} round {rnd} {run.name}: {time.perf_counter() - t0:.2f} s", flush=True)
    rows = [{"run": r.name, "variant": r.variant, "activation_checkpointing": r.checkpointing, "bf16": r.bf16,
             "depth_no_grad": r.depth_no_grad, "batch": batch_size, "seconds": statistics.median(times[r.name]), "all_seconds": times[r.name],
             "loss": losses[r.name]} for r in runs]
    base = next((row["seconds"] for row in rows if row["run"] == "frozen"), None)
    for row in rows:
        row["ratio_vs_frozen"] = row["seconds"] / base if base else None
    return rows


# ------------------------------------------------------------------------------------------------------- memory
def rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (``clear_refs`` 5); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def memory_child(run_name: str, batch_size: int, args) -> dict:
    """In a fresh process: build the run's model, allocate the optimiser state, one measured step."""
    run, device = Run.parse(run_name), torch.device(args.device)
    torch.manual_seed(0)
    model, cfg = build_model(run.variant, args.layers)
    model = model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    allocate_optimizer_state(model, optimizer)
    batch = make_batch(batch_size, args.image, device)
    if device.type == "cuda":
        sync(device)
        before = torch.cuda.memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    else:
        before = rss_mib("VmRSS")
        if not reset_peak_rss():
            print("warning: cannot reset the peak RSS; it includes the model build", file=sys.stderr)
    t0 = time.perf_counter()
    train_step(model, optimizer, batch, run)
    sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss_mib("VmHWM")
    return {"run": run.name, "batch": batch_size, "peak_mib": peak, "before_step_mib": before,
            "step_mib": peak - before, "seconds_single_step": seconds,
            "measure": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM)"}


def measure_memory(run: Run, batch_size: int, args) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", run.name, "--batches", str(batch_size), "--image",
           str(args.image), "--device", args.device] + (["--layers", str(args.layers)] if args.layers else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    if "out of memory" in proc.stderr.lower() or proc.returncode == -9:  # CUDA OOM, or killed by the kernel
        return {"run": run.name, "batch": batch_size, "out_of_memory": True, "returncode": proc.returncode}
    print(proc.stderr[-3000:], file=sys.stderr)
    return {"run": run.name, "batch": batch_size, "error": proc.stderr.strip().splitlines()[-1:]}


# ------------------------------------------------------------------------------------------------------ profiling
PARTS = ("depth encoder", "frozen blocks", "plug-in", "head", "loss", "optimiser")


def scope_hooks(model) -> list:
    """Forward hooks that open a ``record_function`` scope per part (blocks, plug-in, depth, head); the head's loss
    is wrapped the same way. Returns the handles (and the loss wrapper's undo)."""
    from torch.autograd.profiler import record_function

    def wrap(module: nn.Module, label: str) -> list:
        open_scopes: list = []

        def enter(*_):
            open_scopes.append(record_function(label))
            open_scopes[-1].__enter__()

        def leave(*_):
            open_scopes.pop().__exit__(None, None, None)

        return [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]

    handles = []
    for layer in model.backbone.model.model.layer:
        handles += wrap(layer, "frozen blocks")
    if model.adapter is not None:
        handles += wrap(model.adapter, "plug-in")
    if model.depth is not None:
        handles += wrap(model.depth, "depth encoder")
    handles += wrap(model.head, "head")
    real_loss = model.head.loss

    def loss(*a, **k):
        with record_function("loss"):
            return real_loss(*a, **k)

    model.head.loss = loss
    return handles


class Intervals:
    """Non-overlapping labelled time intervals, looked up by a time point (bisect on the starts)."""

    def __init__(self, events, label):
        spans = sorted((e.time_range.start, e.time_range.end, label(e)) for e in events)
        self.starts = [s for s, _, _ in spans]
        self.spans = spans

    def find(self, t: float):
        i = bisect.bisect_right(self.starts, t) - 1
        if i >= 0 and self.spans[i][0] <= t <= self.spans[i][1]:
            return self.spans[i][2]
        return None


def split_by_part(events) -> dict:
    """Self time (s) per part and pass. A forward operator belongs to the part scope around it; a backward operator
    (under ``autograd::engine::evaluate_function``) to the part of the forward operator that recorded its node's
    sequence number; the optimiser step is its own scope."""
    skip = set(PARTS)
    scopes = Intervals([e for e in events if e.name in skip], lambda e: e.name)
    roots = Intervals([e for e in events if e.name.startswith("autograd::engine::evaluate_function")],
                      lambda e: e.sequence_nr)
    owner: dict[int, str] = {}
    out: dict[str, float] = {}
    for e in sorted(events, key=lambda e: e.time_range.start):
        if e.name in skip or e.name.startswith("ProfilerStep"):
            continue
        t = e.time_range.start
        node = roots.find(t)
        if node is not None:
            key = f"{owner.get(node, 'other')} backward"
        else:
            part = scopes.find(t) or "other"
            if e.sequence_nr >= 0:  # ops that create no node peek at the next number: the last op to see it wins
                owner[e.sequence_nr] = part
            key = "optimiser step" if part == "optimiser" else f"{part} forward"
        out[key] = out.get(key, 0.0) + e.self_cpu_time_total / 1e6
    return dict(sorted(out.items()))


def profile(run: Run, batch_size: int, args) -> dict:
    """One profiled step (after a warm-up step) → top operators and the split by part; writes the summary files."""
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    device = torch.device(args.device)
    torch.manual_seed(0)
    model, cfg = build_model(run.variant, args.layers)
    model = model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    batch = make_batch(batch_size, args.image, device)
    train_step(model, optimizer, batch, run)
    scope_hooks(model)
    real_step = optimizer.step

    def step(*a, **k):
        with record_function("optimiser"):
            return real_step(*a, **k)

    optimizer.step = step
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t0 = time.perf_counter()
    with torch_profile(activities=activities) as prof:
        train_step(model, optimizer, batch, run)
        sync(device)
    wall = time.perf_counter() - t0
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top)
    events = prof.events()
    parts = split_by_part(events)
    top = sorted(prof.key_averages(), key=lambda a: -a.self_cpu_time_total)[: args.top]
    result = {"run": run.name, "batch": batch_size, "image": args.image, "layers": args.layers or 24,
              "wall_seconds_profiled": wall, "self_seconds_by_part": parts,
              "top_ops": [{"op": a.key, "self_seconds": a.self_cpu_time_total / 1e6, "calls": a.count}
                          for a in top]}
    return result | {"table": table}


# ----------------------------------------------------------------------------------------------------- reporting
def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` rows with those of the same (run, batch) replaced by ``new`` ones, in run order."""
    keyed = {(r["run"], r["batch"]): r for r in old}
    keyed.update({(r["run"], r["batch"]): r for r in new})
    return sorted(keyed.values(), key=lambda r: (r["batch"], r.get("order", 0)))


def add_memory_ratios(rows: list[dict]) -> None:
    """Peak and step memory relative to the frozen run, and a lever run's relative to its run without levers."""
    by_key = {(r["run"], r["batch"]): r for r in rows if "peak_mib" in r}
    for r in by_key.values():
        frozen = by_key.get(("frozen", r["batch"]))
        plain = by_key.get((Run.parse(r["run"]).variant, r["batch"]))
        r["peak_vs_frozen"] = r["peak_mib"] / frozen["peak_mib"] if frozen else None
        r["step_vs_frozen"] = r["step_mib"] / frozen["step_mib"] if frozen else None
        r["peak_vs_without_levers"] = r["peak_mib"] / plain["peak_mib"] if plain else None
        r["step_vs_without_levers"] = r["step_mib"] / plain["step_mib"] if plain else None


def markdown(result: dict) -> str:
    """Time and memory of every run side by side, one line per run and batch size."""
    mem = {(r["run"], r["batch"]): r for r in result.get("memory", [])}
    lines = ["| run | batch | s / step | × frozen | peak MiB | × frozen | step MiB | × frozen | peak × no lever |",
             "|---|---|---|---|---|---|---|---|---|"]

    def f(v, fmt):
        return "–" if v is None else format(v, fmt)

    keys = [(r["run"], r["batch"]) for r in result.get("time", [])]
    keys += [k for k in mem if k not in keys]
    times = {(r["run"], r["batch"]): r for r in result.get("time", [])}
    for key in sorted(keys, key=lambda k: k[1]):
        t, m = times.get(key, {}), mem.get(key, {})
        lines.append(f"| {key[0]} | {key[1]} | {f(t.get('seconds'), '.1f')} | {f(t.get('ratio_vs_frozen'), '.2f')} | "
                     f"{f(m.get('peak_mib'), '.0f')} | {f(m.get('peak_vs_frozen'), '.2f')} | "
                     f"{f(m.get('step_mib'), '.0f')} | {f(m.get('step_vs_frozen'), '.2f')} | "
                     f"{f(m.get('peak_vs_without_levers'), '.2f')} |")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, help="variant[+ac][+bf16] …")
    ap.add_argument("--memory-runs", nargs="+", default=None, help="runs measured for memory (default: --runs)")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--image", type=int, default=512)
    ap.add_argument("--layers", type=int, default=None, help="fewer blocks (exploration only)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per run (median)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--skip-time", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--profile", default=None, metavar="RUN", help="profile one step of RUN instead")
    ap.add_argument("--top", type=int, default=25, help="operators in the profile summary")
    ap.add_argument("--out", default=str(RESULTS / "train_step.json"))
    ap.add_argument("--fresh", action="store_true", help="replace the output instead of merging rows into it")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def run_profile(args) -> None:
    result = profile(Run.parse(args.profile), args.batches[0], args)
    result["machine"] = machine(torch.device(args.device))
    out = Path(args.out).with_name("train_step_profile")
    table = result.pop("table")
    atomic_write_json(out.with_suffix(".json"), result)
    parts = "\n".join(f"  {k:<28s} {v:8.2f} s" for k, v in result["self_seconds_by_part"].items())
    text = (f"torch.profiler, one training step of {result['run']} at {args.image}², batch {args.batches[0]}, "
            f"{result['layers']} blocks, on {result['machine']['cpu']} ({result['machine']['torch_threads']} "
            f"threads), torch {torch.__version__}; {result['wall_seconds_profiled']:.1f} s wall under the profiler."
            f"\n\nSelf time by part and pass:\n{parts}\n\nTop {args.top} operators by self time:\n{table}\n")
    atomic_write_text(out.with_suffix(".txt"), text)
    print(text)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("RSMOE_BENCH_THREADS", torch.get_num_threads())))
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.batches[0], args)))
        return
    if args.profile:
        run_profile(args)
        return
    runs = [Run.parse(r) for r in args.runs]
    memory_runs = [Run.parse(r) for r in (args.memory_runs or args.runs)]
    order = {r.name: i for i, r in enumerate(runs + memory_runs)}
    out = Path(args.out)
    result = {} if args.fresh or not out.exists() else json.loads(out.read_text())
    result |= {"benchmark": "train_step", "config": str(CONFIG.relative_to(REPO)), "image": args.image,
               "layers": args.layers or 24, "num_classes": NUM_CLASSES, "warmup": args.warmup,
               "timed_steps": args.steps, "machine": machine(torch.device(args.device)),
               "what": "zero_grad + Segmentor.loss + backward + AdamW step; time: median of interleaved rounds in "
                       "one process; memory: fresh process, optimiser state allocated, one step"}
    for batch in args.batches:
        if not args.skip_time:
            rows = time_runs(runs, batch, args)
            result["time"] = merge_rows(result.get("time", []), [r | {"order": order[r["run"]]} for r in rows])
        if not args.skip_memory:
            rows = []
            for run in memory_runs:
                rows.append(measure_memory(run, batch, args) | {"order": order[run.name]})
                print(f"  memory {run.name} batch {batch}: {rows[-1].get('peak_mib', 'OOM')} MiB", flush=True)
            result["memory"] = merge_rows(result.get("memory", []), rows)
            add_memory_ratios(result["memory"])
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, result)  # after every batch size: a long run keeps what it measured
    print("\n" + markdown(result))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
