"""Whole-scene prediction: tile a GeoTIFF, run the model, blend the tiles, write a class-map GeoTIFF.

The public entry points are :func:`predict_scenes` (one summary dict per scene), :func:`collect_inputs`,
:func:`add_predict_arguments` / :func:`run_predict_from_args` (wiring for ``rsmoe predict``), and
:func:`predict_array` (the same tiling and blending on an in-memory array, for notebooks and tests).

How a scene is processed
------------------------
* **Windows.** ``stride = tile - overlap``; window starts are ``0, stride, 2·stride, …`` and the last row / column of
  windows is shifted to end exactly at the scene edge, so windows never reach outside the scene. A scene (dimension)
  smaller than the tile gets a single window of the scene's size, *reflect*-padded on the bottom / right up to a
  multiple of ``PredictionModel.multiple_of`` (replicate-padded where the scene is too small to reflect); the padded
  part of the logits is cropped away. A ``tile`` that is not a multiple of ``multiple_of`` is rounded down to one.
* **Input.** Windows are read with rasterio one at a time (never the whole scene); on a GPU a background thread
  prepares the next batch while the model runs. Bands are picked / reordered with ``bands`` (1-based); the band count
  must equal the checkpoint's, and per-band wavelength metadata in the file (GDAL ``IMAGERY`` domain
  ``CENTRAL_WAVELENGTH_UM`` or an ENVI-style ``wavelength`` tag) is checked against the checkpoint when present.
  Pixels are normalised with the checkpoint's :class:`~rsmoe.data.normalize.Normalize` (the object training and
  evaluation use, std = 0 guarded the same way); no-data pixels (and non-finite values) are set to 0 after
  normalisation (i.e. to the band mean).
* **No-data.** A pixel is no-data where every model band equals the file's no-data value (NaN counts for a NaN
  no-data), or where the dataset mask (internal / external mask band or alpha band) is 0. No-data pixels get the
  class-map no-data value (255, or ``PredictionModel.ignore_index`` if that is a free uint8 value).
* **Blending.** Each window's logits are multiplied by ``w(y, x) = p_row(y) · p_col(x)``. The 1-D profile is 1
  except for a raised-cosine ramp ``sin²(π/2 · i / overlap)`` over the first / last ``overlap`` pixels of a window
  side that lies *inside* the scene (a side on the scene edge is not ramped, since nothing else covers it). The ramp
  is clipped below at ``1e-6`` so weights are strictly positive. Accumulated logits are divided by the accumulated
  weight, which for this product grid of windows is ``W_row(y) · W_col(x)`` (computed analytically, not stored). With
  ``overlap = 0`` every pixel inside a single window gets exactly that window's logits. The outermost window pixel
  (where zero padding inside the model hurts most) has weight ~1e-6 next to the neighbour's interior, so a model
  with receptive-field radius r gives the untiled result (to ~1e-6 relative) once ``overlap >= 2·r``.
* **Streaming.** Windows are processed in row-major order of *row groups* (one window row, except that the last two
  window rows form one group when the last row was shifted to end at the scene edge). The blender keeps a local
  buffer of one group's height × one tile's width and a full-width *carry strip* holding the ``overlap`` rows that
  the next group still adds to; finished pieces leave immediately. The class map is written in whole block rows
  from a small full-width uint8 pending buffer (each compressed block is written once); probabilities are written
  piece by piece into blocks whose side divides the stride (384² for the default 512 / 128), so pieces fill whole
  blocks. GDAL's block cache is capped (``GDAL_CACHEMAX`` 32 MB unless set in the environment), batches are read
  into two reused buffers, and freed heap is handed back to the OS after every row band (glibc ``malloc_trim``);
  ``rsmoe predict`` also serves allocations ≥ 4 MiB by ``mmap`` (see ``memory._limit_heap_growth``).
  Peak memory is therefore ∝ scene width × (overlap × K × 4 B + ~1 k rows × 1 B), independent of the scene height,
  plus constant model / batch memory.
* **Outputs** (in ``out_dir``): ``<stem>_classes.tif`` (uint8, tiled 512 × 512 — smaller power-of-two blocks for
  small scenes — deflate, internal nearest-neighbour overviews, colour table from the palette, input CRS and
  transform), optional ``<stem>_probabilities.tif`` (float32, K bands, NaN no-data, deflate + float predictor),
  ``<stem>_preview.png`` (downsampled RGB next to the class map) and ``<stem>_summary.json`` (pixels/s, class areas
  in hectares). The preview is sampled (every n-th row / column) from the windows as they stream past, so it costs
  no second read of the scene (a decimated ``out_shape`` read of a large scene without overviews thrashes GDAL's
  block cache). Rasters are written to ``.<name>.partial`` in the same folder and ``os.replace``-d into place when
  complete; the summary JSON is written last. ``resume`` skips scenes whose ``_classes.tif`` and ``_summary.json``
  both exist.
* **Several devices.** ``devices > 1`` spawns that many processes (``torch.multiprocessing``, ``gloo`` process group
  on 127.0.0.1); scenes are assigned round-robin by rank, each process writes its own scenes, and summaries are
  gathered with ``all_gather_object``. On CUDA, rank r uses ``cuda:r``; on CPU the cores are shared out.

Layout
------
``model`` (:class:`PredictionModel`, :class:`PredictError`) · ``bands`` (sensor / wavelength checks, a scene's band
choice) · ``windows`` (window grid, blend profile, the streaming blender) · ``inference`` (batches of windows through
the model, :func:`predict_array`) · ``output`` (output paths, raster writer, palette, summary JSON) · ``preview``
(quick-look PNG) · ``memory`` (glibc heap trimming) · ``scene`` (:func:`predict_scene`) · ``scenes``
(:func:`predict_scenes`, worker processes) · ``cli`` (:func:`collect_inputs`, ``rsmoe predict`` arguments).
"""
from __future__ import annotations

from .bands import WAVELENGTH_TOLERANCE_UM, check_sensor, sensor_wavelengths
from .cli import add_predict_arguments, collect_inputs, run_predict_from_args
from .inference import predict_array
from .model import PredictError, PredictionModel
from .output import GDAL_CACHE_BYTES, output_paths
from .preview import PREVIEW_MAX_SIDE
from .scene import predict_scene
from .scenes import predict_scenes
from .windows import MIN_WEIGHT, WindowPlan, blend_profile, plan_windows, window_starts

__all__ = [
    "PredictionModel",
    "PredictError",
    "sensor_wavelengths",
    "check_sensor",
    "plan_windows",
    "WindowPlan",
    "predict_array",
    "predict_scene",
    "predict_scenes",
    "collect_inputs",
    "output_paths",
    "add_predict_arguments",
    "run_predict_from_args",
    "window_starts",
    "blend_profile",
    "MIN_WEIGHT",
    "WAVELENGTH_TOLERANCE_UM",
    "GDAL_CACHE_BYTES",
    "PREVIEW_MAX_SIDE",
]
