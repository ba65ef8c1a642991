"""Whole-scene prediction: tile a GeoTIFF, run the model, blend the tiles, write a class-map Cloud-Optimized GeoTIFF.

The public entry points are :func:`predict_scenes` (one summary dict per scene), :func:`collect_inputs`,
:func:`add_predict_arguments` / :func:`run_predict_from_args` (wiring for ``rsmoe predict``), and
:func:`predict_array` (the same tiling and blending on an in-memory array, for notebooks and tests).

How a scene is processed
------------------------
* **Checks first.** Before any scene is processed: the inputs exist, ``--out`` is (or can be created as) a folder
  this process can write to (a probe file is written and removed), the checkpoint loads, ``--tile`` /
  ``--overlap`` / ``--batch-size`` / ``--devices`` / ``--device`` are usable, and every scene opens and has the
  checkpoint's bands. Each problem is one :class:`PredictError` line (``rsmoe predict: error: …``, exit status 2).
* **Windows.** ``stride = tile - overlap``; window starts along each axis follow :func:`rsmoe.windows.window_starts`
  (every ``stride``, plus a last window shifted to end exactly at the scene edge), so windows never reach outside
  the scene. A ``tile`` that is not a multiple of ``PredictionModel.multiple_of`` (the patch size) is rounded down
  to one; a tile below ``PredictionModel.min_size`` (the smallest input the model accepts) is refused.
* **Small scenes** are padded, never refused: a scene (dimension) smaller than the tile gets a single window of the
  scene's size, padded on the bottom / right up to a multiple of ``multiple_of`` and to at least ``min_size``
  (*reflect* padding, *replicate* where the scene is too small to reflect, e.g. 1 × 1); the padded part of the
  logits is cropped away, so a 1 × 1 or 5 × 7 scene gives a 1 × 1 or 5 × 7 map.
* **Input.** Windows are read with rasterio one at a time (never the whole scene); on a GPU a background thread
  prepares the next batch while the model runs. Bands are picked / reordered with ``bands`` (1-based); the band count
  must equal the checkpoint's, and per-band wavelength metadata in the file (GDAL ``IMAGERY`` domain
  ``CENTRAL_WAVELENGTH_UM`` or an ENVI-style ``wavelength`` tag) is checked against the checkpoint when present.
  Pixels are normalised with the checkpoint's :class:`~rsmoe.data.normalize.Normalize` (the object training and
  evaluation use, std = 0 guarded the same way); no-data pixels are set to 0 after normalisation (the band mean).
  A window that cannot be read (a truncated or corrupt file) is a :class:`PredictError` naming the file.
* **No-data.** A pixel is no-data where every model band equals the file's no-data value, where the dataset mask
  (internal / external mask band or alpha band) is 0, or — in a float scene — where any model band is NaN or ±inf.
  No-data pixels are never classified: they get the class-map no-data value (255, or
  ``PredictionModel.ignore_index`` if that is a free uint8 value) and NaN probabilities.
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
  the next group still adds to; finished pieces leave immediately. The class map is streamed in whole block rows
  from a small full-width uint8 pending buffer (each compressed block is written once); probabilities are written
  piece by piece into blocks whose side divides the stride (384² for the default 512 / 128), so pieces fill whole
  blocks. GDAL's block cache is capped (``GDAL_CACHEMAX`` 32 MB unless set in the environment), batches are read
  into two reused buffers, and freed heap is handed back to the OS after every row band (glibc ``malloc_trim``);
  ``rsmoe predict`` also serves allocations ≥ 4 MiB by ``mmap`` (see :func:`memory.limit_heap_growth`).
  Peak memory is therefore ∝ scene width × (overlap × K × 4 B + ~1 k rows × 1 B), independent of the scene height,
  plus constant model / batch memory.
* **Outputs** (in ``out_dir``): ``<stem>_classes.tif`` (uint8 Cloud-Optimized GeoTIFF: 512 × 512 tiles — 256 or
  128 for small scenes — deflate, nearest-neighbour overviews halving until they fit one tile, colour table from the
  palette, ``class_names`` tag, input CRS and transform), optional ``<stem>_probabilities.tif`` (float32 COG, K
  bands, NaN no-data, deflate + floating-point predictor, averaged overviews), ``<stem>_preview.png`` (downsampled
  RGB next to the class map) and ``<stem>_summary.json`` (pixels/s, class areas in hectares, the checkpoint's path,
  SHA-256 and run config, each raster's size and SHA-256). Each raster is streamed into a hidden tiled GeoTIFF
  (``.<name>.partial``), which GDAL's COG driver then copies into a COG — every IFD, overviews included, before the
  image data — through a hidden temporary file renamed into place (:func:`rsmoe.io.atomic.atomic_path`). So a final
  path holds either nothing (or the previous run's file) or a complete COG, even after kill -9 or a failed read; the
  summary JSON is written last. The preview is sampled (every n-th row / column) from the windows as they stream
  past, so it costs no second read of the scene.
* **Resume.** ``resume`` skips a scene only when its summary says ``done``, names the same checkpoint (SHA-256;
  two in-memory models without a file count as the same) and every raster it records — the probabilities too when
  asked for — still has the recorded size and SHA-256. A missing, truncated, corrupt or replaced map, or one made by
  another checkpoint, is predicted again. Leftover hidden temporaries of a killed run are deleted.
* **Several devices.** ``devices > 1`` spawns that many processes (``torch.multiprocessing``, ``gloo`` process group
  on 127.0.0.1); scenes are assigned round-robin by rank, each process writes its own scenes, and summaries are
  gathered with ``all_gather_object``. On CUDA, rank r uses ``cuda:r``; on CPU the cores are shared out.

Layout
------
``model`` (:class:`PredictionModel`, :class:`PredictError`) · ``bands`` (sensor / wavelength checks, a scene's band
choice) · ``windows`` (window grid, blend profile, the streaming blender) · ``reader`` (a scene's windows and their
validity) · ``inference`` (batches of windows through the model, :func:`predict_array`) · ``rasters`` (streamed
rasters published as COGs) · ``outputs`` (output paths, the output-folder check, the resume rule) · ``summary``
(the summary JSON) · ``preview`` (quick-look PNG) · ``memory`` (glibc heap trimming) · ``progress`` (progress bars)
· ``scene`` (:func:`predict_scene`) · ``scenes`` (:func:`predict_scenes`, worker processes) · ``cli``
(:func:`collect_inputs`, ``rsmoe predict`` arguments).
"""
from __future__ import annotations

from .bands import WAVELENGTH_TOLERANCE_UM, check_sensor, sensor_wavelengths
from .cli import add_predict_arguments, collect_inputs, run_predict_from_args
from .inference import predict_array
from .model import PredictError, PredictionModel
from .outputs import output_paths, reusable_summary
from .preview import PREVIEW_MAX_SIDE
from .rasters import GDAL_CACHE_BYTES
from .scene import predict_scene
from .scenes import predict_scenes
from .windows import MIN_WEIGHT, WindowPlan, blend_profile, plan_windows

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
    "reusable_summary",
    "add_predict_arguments",
    "run_predict_from_args",
    "blend_profile",
    "MIN_WEIGHT",
    "WAVELENGTH_TOLERANCE_UM",
    "GDAL_CACHE_BYTES",
    "PREVIEW_MAX_SIDE",
]
