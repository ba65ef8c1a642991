"""Many scenes, many processes: up-front validation, ``resume``, and the round-robin split of the scenes over
``devices`` worker processes (see the :mod:`rsmoe.predict` package docstring)."""
from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from ..io.atomic import atomic_write_json
from .bands import scene_bands
from .inference import resolve_device
from .memory import limit_heap_growth
from .model import PredictError, PredictionModel
from .outputs import check_output_dir, make_output_dir, reusable_summary
from .progress import progress_bar
from .reader import open_dataset
from .scene import predict_scene
from .windows import plan_windows


def _validate_scenes(pm: PredictionModel, inputs: list[Path], bands: Sequence[int] | None) -> None:
    """Open every scene's header and check its bands before any work starts (fail fast, one-line errors)."""
    stems: dict[str, Path] = {}
    for path in inputs:
        stem = path.stem
        if stem in stems:
            raise PredictError(f"two inputs share the name {stem!r} ({stems[stem]} and {path}): outputs would collide")
        stems[stem] = path
        if not path.is_file():
            raise PredictError(f"input not found: {path}")
        with open_dataset(path) as src:
            scene_bands(pm, src, path, bands)


def _validate_options(pm: PredictionModel, out_dir: Path, *, tile: int, overlap: int, batch_size: int,
                      devices: int, device: str) -> None:
    """Check the options and the output folder before any work starts (one-line errors)."""
    if batch_size < 1:
        raise PredictError(f"--batch-size must be positive, got {batch_size}")
    if devices < 1:
        raise PredictError(f"--devices must be positive, got {devices}")
    if pm.normalize.num_bands != len(pm.wavelengths):
        raise PredictError("checkpoint statistics (mean/std) and wavelengths have different band counts")
    plan_windows(max(tile, 1), max(tile, 1), tile, overlap, pm.multiple_of, pm.min_size)  # validates tile / overlap
    resolve_device(device)
    check_output_dir(out_dir)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, pm: PredictionModel, todo: list[Path], out_dir: Path,
            kwargs: dict, result_path: str) -> None:
    import torch.distributed as dist

    limit_heap_growth()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    device = resolve_device(kwargs.pop("device"))
    if device.type == "cuda":
        device = torch.device("cuda", rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        mine = todo[rank::world]
        summaries = _predict_list(pm, mine, out_dir, device=device, rank=rank, world_size=world, **kwargs)
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, summaries)
        if rank == 0:
            atomic_write_json(result_path, [s for part in gathered for s in part], fsync=False)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _predict_list(pm, scenes: list[Path], out_dir: Path, *, show_progress: bool, rank: int = 0,
                  world_size: int = 1, **kwargs) -> list[dict]:
    out = []
    label = "scenes" + (f" [rank {rank}]" if world_size > 1 else "")
    with progress_bar(len(scenes), label, show_progress, 2 * rank, leave=True, unit="scene") as outer:
        for scene in scenes:
            out.append(predict_scene(pm, scene, out_dir, show_progress=show_progress, rank=rank,
                                     world_size=world_size, progress_position=2 * rank, **kwargs))
            if outer is not None:
                outer.update(1)
    return out


def predict_scenes(
    pm: PredictionModel,
    inputs: list[Path],
    out_dir: Path,
    *,
    tile: int = 512,
    overlap: int = 128,
    batch_size: int = 4,
    bands: list[int] | None = None,
    probabilities: bool = False,
    resume: bool = False,
    devices: int = 1,
    device: str = "cpu",
    show_progress: bool = True,
) -> list[dict]:
    """Predict every scene in ``inputs`` into ``out_dir``; one summary dict per input, in input order.

    Raises :class:`PredictError` (one-line message) on bad arguments, an output folder that cannot be written, or a
    scene that cannot be opened or does not match the checkpoint's bands, before any scene is processed. With
    ``resume`` a scene is skipped when :func:`rsmoe.predict.outputs.reusable_summary` keeps its outputs (same
    checkpoint, outputs intact); its summary is then the stored one with ``status = "skipped"``. With ``devices > 1``
    the scenes are split round-robin over that many processes (see the package docstring).
    """
    inputs = [Path(p) for p in inputs]
    out_dir = Path(out_dir)
    _validate_options(pm, out_dir, tile=tile, overlap=overlap, batch_size=batch_size, devices=devices,
                      device=device)
    _validate_scenes(pm, inputs, bands)
    make_output_dir(out_dir)
    results: dict[Path, dict] = {}
    todo = []
    for scene in inputs:
        stored = reusable_summary(out_dir, scene, pm, probabilities) if resume else None
        if stored is not None:
            results[scene] = {**stored, "input": str(scene), "status": "skipped"}
        else:
            todo.append(scene)
    kwargs = dict(tile=tile, overlap=overlap, batch_size=batch_size, bands=bands, probabilities=probabilities)
    world = min(devices, len(todo))
    if world <= 1:
        for s in _predict_list(pm, todo, out_dir, device=device, show_progress=show_progress, **kwargs):
            results[Path(s["input"])] = s
    elif todo:
        import torch.multiprocessing as mp

        port = _free_port()
        with tempfile.TemporaryDirectory(prefix="rsmoe-predict-") as tmp:
            result_path = os.path.join(tmp, "summaries.json")
            try:
                mp.spawn(_worker, args=(world, port, pm, todo, out_dir,
                                        {**kwargs, "device": device, "show_progress": show_progress}, result_path),
                         nprocs=world, join=True)
            except mp.ProcessRaisedException as exc:
                last = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
                raise PredictError(f"a prediction process failed: {last[-1] if last else exc}") from None
            for s in json.loads(Path(result_path).read_text()):
                results[Path(s["input"])] = s
    return [results[s] for s in inputs]
