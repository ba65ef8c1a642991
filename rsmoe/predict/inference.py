"""Running the model over windows: batched reads (prefetched on a GPU), normalisation, the forward pass and
blending; :func:`predict_array` applies it to an in-memory image."""
from __future__ import annotations

import concurrent.futures
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from ..data.normalize import Normalize
from .memory import release_free_memory
from .model import PredictError, PredictionModel
from .windows import Blender, Piece, WindowPlan, plan_windows


@dataclass
class WindowStats:
    """Where the time of a scene went: model forward passes and waiting for reads (seconds), windows done."""

    forward_s: float = 0.0
    read_wait_s: float = 0.0
    windows: int = 0


def _normalise_batch(x: np.ndarray, v: np.ndarray, normalize: Normalize, plan: WindowPlan,
                     check_finite: bool) -> torch.Tensor:
    """Normalise a raw B×C×h×w float32 batch in place, set no-data pixels (``v`` False: B×h×w) to 0 (the band
    mean), pad up to the plan's padded window size; returns it as a tensor."""
    normalize.apply_(x)
    if not v.all():
        np.copyto(x, np.float32(0.0), where=~v[:, None])  # also clears the NaN / inf of non-finite pixels
    if check_finite and not np.isfinite(x).all():  # finite raw values beyond float32's range once normalised
        np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    t = torch.from_numpy(x)
    if plan.pad_mode is not None:
        t = torch.nn.functional.pad(t, (0, plan.pad_w - plan.win_w, 0, plan.pad_h - plan.win_h), mode=plan.pad_mode)
    return t


class _InlineExecutor:
    """Stands in for the reader thread: runs the read when it is submitted."""

    class _Done:
        def __init__(self, value):
            self.value = value

        def result(self):
            return self.value

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def submit(self, fn, *args):
        return self._Done(fn(*args))


def _prefetch(device: torch.device) -> bool:
    """Read the next batch in a background thread while the model runs? Yes on a GPU, where the CPU would otherwise
    wait. On the CPU torch's threads already use the cores, and a reader thread competing with them slows the forward
    pass about as much as the overlap saves (measured on 2 cores), so reading stays inline. ``RSMOE_PREFETCH=0/1``
    overrides."""
    env = os.environ.get("RSMOE_PREFETCH")
    if env in ("0", "1"):
        return env == "1"
    return device.type != "cpu"


def run_windows(
    pm: PredictionModel,
    plan: WindowPlan,
    read: Callable[[int, int, np.ndarray], np.ndarray],
    *,
    batch_size: int,
    device: torch.device,
    stats: WindowStats,
    on_batch: Callable[[int], None] | None = None,
    check_finite: bool = True,
) -> Iterator[Piece]:
    """Read, normalise and predict every window of ``plan``; yield the finished pieces.

    ``read(row, col, out)`` fills ``out`` (C × win_h × win_w float32) with the window at (row, col) and returns its
    validity (win_h × win_w bool). The next batch is read in a background thread while the model runs, into the
    other of two preallocated batch buffers (no per-batch allocation churn); see :func:`_prefetch`.
    """
    model = pm.model
    wl = torch.tensor(pm.wavelengths, dtype=torch.float32, device=device)
    order = plan.order()
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    nb = min(batch_size, len(order))
    c = len(pm.wavelengths)
    xbufs = [np.empty((nb, c, plan.win_h, plan.win_w), np.float32) for _ in range(2)]
    vbufs = [np.empty((nb, plan.win_h, plan.win_w), bool) for _ in range(2)]

    def load(b: int) -> tuple[torch.Tensor, np.ndarray]:
        batch = batches[b]
        x, v = xbufs[b % 2][: len(batch)], vbufs[b % 2][: len(batch)]
        for k, (j, i) in enumerate(batch):
            v[k] = read(plan.row_starts[j], plan.col_starts[i], x[k])
        return _normalise_batch(x, v, pm.normalize, plan, check_finite), v

    blender: Blender | None = None
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rsmoe-read") \
        if _prefetch(device) else _InlineExecutor()
    with pool:
        fut = pool.submit(load, 0)
        for b, batch in enumerate(batches):
            t0 = time.perf_counter()
            x, valid = fut.result()
            stats.read_wait_s += time.perf_counter() - t0
            if b + 1 < len(batches):  # its buffers were last used by batch b - 1, which is finished
                fut = pool.submit(load, b + 1)
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = model(x.to(device, non_blocking=True), wl)
            if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != x.shape[0] \
                    or tuple(out.shape[2:]) != tuple(x.shape[2:]):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise PredictError(f"model returned {got} for input {tuple(x.shape)}; expected B×K×h×w logits")
            logits = out[:, :, : plan.win_h, : plan.win_w].float().cpu().numpy()
            stats.forward_s += time.perf_counter() - t0
            if blender is None:
                if logits.shape[1] != len(pm.class_names):
                    raise PredictError(f"model returned {logits.shape[1]} classes but the checkpoint names "
                                       f"{len(pm.class_names)}")
                blender = Blender(plan, logits.shape[1])
            for k in range(len(batch)):
                yield from blender.add(logits[k], valid[k])
            del x, out, logits
            stats.windows += len(batch)
            if b < 8:  # the libraries' one-off allocations happen in the first batches: trim them early
                release_free_memory()
            if on_batch is not None:
                on_batch(len(batch))


def resolve_device(device: str | torch.device) -> torch.device:
    """``--device``: ``auto`` (a GPU if there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; a device
    that is not there is a :class:`PredictError`."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise PredictError(f"--device {device!r} is not a device; expected cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise PredictError(f"--device {device}: this machine has {torch.cuda.device_count()} usable CUDA GPU(s)")
    if dev.type not in ("cpu", "cuda"):
        raise PredictError(f"--device {device!r}: only cpu and cuda devices are supported")
    return dev


def predict_array(
    pm: PredictionModel,
    image: np.ndarray,
    *,
    tile: int = 512,
    overlap: int = 128,
    batch_size: int = 4,
    valid: np.ndarray | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Tiled, blended logits (K × H × W float32, normalised by the weights) for an in-memory C × H × W image.

    Uses exactly the windows, batching, normalisation and blending of :func:`predict_scene`; ``valid`` (H × W bool)
    marks pixels that are not no-data (default: all); pixels with a non-finite value in any band are no-data too.
    No-data pixels enter the model as the band mean (normalised 0); their logits are returned like any other's.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != len(pm.wavelengths):
        raise PredictError(f"expected a {len(pm.wavelengths)}×H×W image, got shape {image.shape}")
    _, h, w = image.shape
    valid = np.ones((h, w), bool) if valid is None else np.asarray(valid, bool)
    if image.dtype.kind == "f":
        valid = valid & np.isfinite(image).all(axis=0)
    plan = plan_windows(h, w, tile, overlap, pm.multiple_of, pm.min_size)
    dev = resolve_device(device)
    pm.model.to(dev).eval()

    def read(r: int, c: int, out: np.ndarray) -> np.ndarray:
        out[...] = image[:, r : r + plan.win_h, c : c + plan.win_w]
        return valid[r : r + plan.win_h, c : c + plan.win_w]

    out: np.ndarray | None = None
    for piece in run_windows(pm, plan, read, batch_size=batch_size, device=dev, stats=WindowStats()):
        if out is None:
            out = np.zeros((piece.acc.shape[0], h, w), np.float32)
        out[:, piece.top : piece.bottom, piece.left : piece.right] = piece.normalised(plan)
    assert out is not None
    return out
