"""One scene, in four steps: read (open the scene, check its bands, plan its windows), compute (predict and blend
the windows, classify the finished pieces), write (publish the rasters as COGs, the preview, then the summary) —
see the :mod:`rsmoe.predict` package docstring."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import one_line
from ..io.atomic import atomic_write_json
from .inference import WindowStats, resolve_device, run_windows
from .memory import release_free_memory
from .model import PredictError, PredictionModel
from .outputs import file_record, make_output_dir, output_paths, remove_temporaries
from .preview import Preview, write_preview
from .progress import progress_bar
from .rasters import SceneRasters, gdal_env
from .reader import SceneReader, open_scene
from .summary import SceneTimes, scene_summary
from .windows import Piece


def predict_scene(
    pm: PredictionModel,
    scene: Path,
    out_dir: Path,
    *,
    tile: int = 512,
    overlap: int = 128,
    batch_size: int = 4,
    bands: Sequence[int] | None = None,
    probabilities: bool = False,
    device: str | torch.device = "cpu",
    show_progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
    progress_position: int = 0,
) -> dict:
    """Predict one scene into ``out_dir``; returns the summary dict (also written as ``<stem>_summary.json``).

    A scene that cannot be read (a truncated or corrupt file) or outputs that cannot be written raise a one-line
    :class:`PredictError`. Final paths only ever hold complete files: rasters are streamed into hidden temporary
    files and renamed into place when complete (a failure before that leaves the final paths as they were), and an
    earlier summary is removed just before the new rasters replace the old, so a summary never describes the maps
    of another run."""
    scene, out_dir = Path(scene), Path(out_dir)
    device = resolve_device(device)
    pm = dataclasses.replace(pm, model=pm.model.to(device).eval())
    times = SceneTimes(time.perf_counter())
    paths = output_paths(out_dir, scene)
    make_output_dir(out_dir)
    remove_temporaries(paths)
    label = scene.name + (f" [rank {rank}]" if world_size > 1 else "")
    with gdal_env(), open_scene(pm, scene, bands, tile, overlap) as reader:
        rasters = _create_rasters(pm, reader, paths, probabilities, out_dir)
        try:
            preview = Preview(reader.plan, pm)
            with progress_bar(reader.plan.num_windows, label, show_progress, progress_position + 1,
                              leave=False) as bar:
                counts, stats = _classify(pm, reader, rasters, preview, batch_size, device, bar)
            paths["summary"].unlink(missing_ok=True)  # an earlier run's summary must not describe the new maps
            files = {kind: file_record(path) for kind, path in rasters.publish().items()}
            times.predicted = time.perf_counter()
            write_preview(paths["preview"], preview, pm, [reader.bands[k] for k in preview.rgb_pos], scene.name)
        except BaseException as exc:
            rasters.discard()
            _raise_write_error(exc, out_dir)
        facts = reader.facts
    summary = scene_summary(pm, facts, reader.plan, counts=counts, files=files, paths=paths, times=times,
                            end=time.perf_counter(), stats=stats, batch_size=batch_size, device=device,
                            rank=rank, world_size=world_size)
    try:
        atomic_write_json(paths["summary"], summary)
    except OSError as exc:
        _raise_write_error(exc, out_dir)
    return summary


def _create_rasters(pm: PredictionModel, reader: SceneReader, paths: dict[str, Path], probabilities: bool,
                    out_dir: Path) -> SceneRasters:
    try:
        return SceneRasters(pm, reader.plan, paths, reader.src.crs, reader.src.transform, probabilities)
    except OSError as exc:
        _raise_write_error(exc, out_dir)


def _raise_write_error(exc: BaseException, out_dir: Path):
    """Re-raise ``exc``; a file-system error (full disk, permissions) as a one-line :class:`PredictError`."""
    if isinstance(exc, OSError):
        raise PredictError(f"writing the outputs in {out_dir} failed: {one_line(exc)}") from None
    raise exc


def _classify(pm: PredictionModel, reader: SceneReader, rasters: SceneRasters, preview: Preview, batch_size: int,
              device: torch.device, bar) -> tuple[np.ndarray, WindowStats]:
    """Predict every window, stream the class map (and probabilities) of each finished piece to ``rasters`` and
    the preview; returns the pixel count per class (K int64) and the time spent."""
    plan, nodata, k = reader.plan, pm.nodata_value, pm.num_classes
    counts = np.zeros(k, np.int64)
    stats = WindowStats()

    def read(row: int, col: int, out: np.ndarray) -> np.ndarray:
        valid = reader.read(row, col, out)
        preview.add_window(row, col, out, valid)
        return valid

    for piece in run_windows(pm, plan, read, batch_size=batch_size, device=device, stats=stats,
                             on_batch=bar.update if bar is not None else None, check_finite=reader.float_input):
        cls = np.argmax(piece.acc, axis=0).astype(np.uint8)
        cls[~piece.valid] = nodata
        counts += np.bincount(cls[piece.valid].ravel(), minlength=k)[:k]
        preview.add_classes(piece.top, piece.left, cls)
        rasters.put(piece, cls, _probabilities(piece, plan) if rasters.probabilities is not None else None)
        if piece.right == plan.width:  # a full-width band of rows is finished
            rasters.rows_done(piece.bottom)
            release_free_memory()
    return counts, stats


def _probabilities(piece: Piece, plan) -> np.ndarray:
    """Softmax of a piece's blended logits (K × h × w float32), NaN at no-data pixels."""
    prob = torch.softmax(torch.from_numpy(piece.normalised(plan)), dim=0).numpy()
    prob[:, ~piece.valid] = np.nan
    return prob


__all__ = ["predict_scene"]
