"""Whole-scene prediction (rsmoe.predict) on small synthetic GeoTIFFs written by the tests."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from rsmoe.data.normalize import Normalize
import rsmoe.predict.cli as predict_cli  # run_predict_from_args looks limit_heap_growth up there
from rsmoe.predict import (
    MIN_WEIGHT,
    PredictError,
    PredictionModel,
    add_predict_arguments,
    blend_profile,
    check_sensor,
    collect_inputs,
    output_paths,
    plan_windows,
    predict_array,
    predict_scenes,
    run_predict_from_args,
)
from rsmoe.windows import window_starts

REPO = Path(__file__).resolve().parents[1]
WAVELENGTHS = [0.490, 0.560, 0.665, 0.842]
CRS = "EPSG:32633"
TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0)  # 10 m pixels: 1 pixel = 0.01 ha


class ConvModel(torch.nn.Module):
    """A k×k convolution with zero padding: translation-equivariant, receptive-field radius k // 2."""

    def __init__(self, bands: int = 4, classes: int = 5, k: int = 1, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(bands, classes, k, padding=k // 2)
        with torch.no_grad():
            # logits of order 1, as a trained model's would be
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) / (bands * k * k) ** 0.5)
            self.conv.bias.copy_(torch.randn(classes, generator=g) * 0.1)

    def forward(self, image: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
        assert wavelengths.shape == (image.shape[1],)
        return self.conv(image)


class CountingModel(ConvModel):
    """Appends one line per forward pass (pid and batch size) to a log file: counts the work done by every process."""

    def __init__(self, log: str):
        super().__init__(k=1)
        self.log = log

    def forward(self, image, wavelengths):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {image.shape[0]}\n")
        return super().forward(image, wavelengths)


def make_pm(model: torch.nn.Module | None = None, *, mean=(100.0, 200.0, 300.0, 400.0), std=(10.0, 20.0, 30.0, 40.0),
            multiple_of: int = 1, **fields) -> PredictionModel:
    return PredictionModel(
        model=model if model is not None else ConvModel(),
        class_names=["water", "trees", "grass", "built", "bare"],
        palette=[(0, 0, 255), (0, 128, 0), (128, 255, 0), (255, 0, 0), (200, 180, 120)],
        normalize=Normalize(mean, std),
        wavelengths=list(WAVELENGTHS),
        band_names=["B2", "B3", "B4", "B8"],
        sensor="Sentinel-2",
        multiple_of=multiple_of,
        **fields,
    )


def make_image(h: int, w: int, bands: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.array([100.0, 200.0, 300.0, 400.0] * 4)[:bands, None, None]
    return (base + rng.normal(0, 25, size=(bands, h, w))).astype(np.float32)


def write_scene(path: Path, image: np.ndarray, *, nodata=None, crs=CRS, transform=TRANSFORM, mask=None,
                descriptions=None, wavelengths=None) -> Path:
    c, h, w = image.shape
    profile = dict(driver="GTiff", width=w, height=h, count=c, dtype=image.dtype, crs=crs, transform=transform)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
        if mask is not None:
            dst.write_mask(mask.astype(np.uint8) * 255)
        for i, d in enumerate(descriptions or []):
            dst.set_band_description(i + 1, d)
        for i, wl in enumerate(wavelengths or []):
            dst.update_tags(i + 1, ns="IMAGERY", CENTRAL_WAVELENGTH_UM=str(wl))
    return path


def full_logits(pm: PredictionModel, image: np.ndarray, valid: np.ndarray | None = None) -> torch.Tensor:
    """Untiled reference: the model applied to the whole normalised image at once."""
    mean, std = torch.from_numpy(pm.normalize.mean), torch.from_numpy(pm.normalize.std)
    x = (torch.from_numpy(image) - mean[:, None, None]) / std[:, None, None]
    if valid is not None:
        x = x * torch.from_numpy(valid)[None]
    with torch.no_grad():
        return pm.model(x[None], torch.tensor(pm.wavelengths))[0]


def quiet(**kw):
    return dict(show_progress=False, **kw)


def save_tiny_checkpoint(bench: Path, path: Path, seed: int = 0) -> Path:
    """A real rsmoe checkpoint: the demo's tiny SpectralMoE (random frozen DINOv3, patch 8) on the synthetic
    benchmark's statistics, its trainable tensors drawn from a fixed seed (so they are not the initial values)."""
    from rsmoe.config import load_config
    from rsmoe.demo import demo_config_path
    from rsmoe.engine.checkpoints import save_checkpoint
    from rsmoe.engine.runner import build_for_config

    from conftest import TINY_RANDOM

    model, meta = build_for_config(load_config(demo_config_path(), [*TINY_RANDOM, f"data.root={bench}"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=g) * 0.05)
    return save_checkpoint(model, meta, path)


@pytest.fixture(scope="session")
def checkpoint(bench, tmp_path_factory) -> Path:
    return save_tiny_checkpoint(bench, tmp_path_factory.mktemp("predict_ckpt") / "model.safetensors")


@pytest.fixture(scope="module")
def checkpoint_model(checkpoint) -> PredictionModel:
    """The checkpoint loaded once (rebuilding its frozen backbone takes seconds)."""
    from rsmoe.engine.checkpoints import load_prediction_model

    return load_prediction_model(checkpoint)


@pytest.fixture(autouse=True)
def _keep_malloc_settings(monkeypatch):
    """`rsmoe predict` tunes glibc malloc for its own process; not for the shared pytest process."""
    monkeypatch.setattr(predict_cli, "limit_heap_growth", lambda: False)


# ------------------------------------------------------------------------------------------------ geometry, blending


def test_window_starts_cover_scene_and_end_at_edge():
    assert window_starts(100, 128, 96) == [0]
    assert window_starts(512, 512, 384) == [0]
    assert window_starts(1000, 512, 384) == [0, 384, 488]
    assert window_starts(896, 512, 384) == [0, 384]
    for size in (1, 31, 32, 33, 100, 257):
        for tile, overlap in ((32, 0), (32, 8), (16, 15)):
            starts = window_starts(size, tile, tile - overlap)
            n = min(tile, size)
            covered = np.zeros(size, int)
            for s in starts:
                covered[s : s + n] += 1
            assert covered.min() >= 1 and starts[-1] + n == size and starts == sorted(set(starts))


def test_blend_profile_positive_and_flat_at_scene_edges():
    p = blend_profile(0, 64, 200, 16)  # first window: scene edge on the left
    assert p[0] == 1.0 and p[-1] == pytest.approx(MIN_WEIGHT) and (p > 0).all()
    q = blend_profile(136, 64, 200, 16)  # last window: scene edge on the right
    assert q[-1] == 1.0 and q[0] == pytest.approx(MIN_WEIGHT)
    np.testing.assert_array_equal(blend_profile(50, 64, 200, 0), np.ones(64))
    assert np.all(np.diff(p[:48]) == 0) and np.all(np.diff(p[48:]) < 0)


def test_streaming_buffers_do_not_grow_with_scene_height():
    """The blender holds one row group × one tile plus an `overlap`-row strip of the scene width: a 40× taller
    scene needs the same buffers."""
    short, tall = plan_windows(1000, 3000, 512, 128), plan_windows(40_000, 3000, 512, 128)
    for p in (short, tall):
        assert p.carry_rows == 128 and p.buffer_rows <= 2 * 512 and p.max_emit_rows <= 512 + 384
    assert tall.num_windows > 30 * short.num_windows


def test_plan_rounds_tile_to_multiple_and_rejects_bad_overlap():
    plan = plan_windows(300, 300, tile=100, overlap=10, multiple_of=16)
    assert plan.tile == 96 and plan.stride == 86
    with pytest.raises(PredictError):
        plan_windows(300, 300, tile=64, overlap=64)


# --------------------------------------------------------------------------------------------- tiling == untiled


@pytest.mark.parametrize("tile,overlap", [(32, 0), (32, 8), (20, 15), (40, 12), (256, 16)])
@pytest.mark.parametrize("shape", [(97, 83), (20, 13), (64, 64)])
def test_pointwise_model_tiled_equals_untiled(tile, overlap, shape):
    """A per-pixel (1×1 conv) model gives the untiled logits up to 1e-5 for any tiling, blended or not."""
    pm = make_pm(ConvModel(k=1))
    image = make_image(*shape)
    out = predict_array(pm, image, tile=tile, overlap=overlap, batch_size=3)
    ref = full_logits(pm, image).numpy()
    assert np.abs(out - ref).max() < 1e-5


@pytest.mark.parametrize("tile,overlap", [(32, 2), (32, 8), (40, 10), (16, 12)])
def test_no_seam_with_overlap_for_small_receptive_field(tile, overlap):
    """3×3 conv (radius 1) with overlap ≥ 2: the blended result equals the whole-image forward everywhere
    (the scene border included, since the model's zero padding is the scene's there) up to 1e-5."""
    pm = make_pm(ConvModel(k=3))
    image = make_image(101, 77)
    ref = full_logits(pm, image).numpy()
    out = predict_array(pm, image, tile=tile, overlap=overlap, batch_size=4)
    assert np.abs(out - ref).max() < 1e-5


def test_without_overlap_the_seam_shows():
    """Sanity check of the test above: without overlap the 3×3 conv differs on tile borders, only there."""
    pm = make_pm(ConvModel(k=3))
    image = make_image(64, 64)
    diff = np.abs(predict_array(pm, image, tile=32, overlap=0) - full_logits(pm, image).numpy()).max(axis=0)
    seam = np.zeros((64, 64), bool)
    seam[31:33, :] = seam[:, 31:33] = True
    assert diff[seam].max() > 1e-2
    assert diff[~seam].max() < 1e-5


# --------------------------------------------------------------------------------------------- GeoTIFF end to end


def test_scene_end_to_end(tmp_path):
    pm = make_pm(ConvModel(k=3))
    image = make_image(150, 130)
    image[:, :7, :9] = -9999.0  # every band no-data: no-data in the output
    image[0, 100, 100] = -9999.0  # one band only: still a valid pixel
    scene = write_scene(tmp_path / "scene.tif", image, nodata=-9999.0)
    [s] = predict_scenes(pm, [scene], tmp_path / "out", tile=48, overlap=12, batch_size=3, probabilities=True,
                         **quiet())
    paths = output_paths(tmp_path / "out", scene)
    assert s["status"] == "done" and Path(s["classes"]) == paths["classes"]
    with rasterio.open(scene) as src, rasterio.open(paths["classes"]) as cls_src:
        assert cls_src.crs == src.crs and cls_src.transform == src.transform
        assert (cls_src.width, cls_src.height, cls_src.count, cls_src.dtypes[0]) == (130, 150, 1, "uint8")
        assert cls_src.nodata == 255
        prof = cls_src.profile
        assert prof["tiled"] and prof["compress"] == "deflate"
        assert cls_src.colormap(1)[3][:3] == (255, 0, 0)
        assert json.loads(cls_src.tags()["class_names"]) == pm.class_names
        cls = cls_src.read(1)
    valid = ~(image == -9999.0).all(axis=0)
    np.testing.assert_array_equal(cls == 255, ~valid)
    assert cls[100, 100] != 255
    ref = full_logits(pm, np.where(valid, image, pm.normalize.mean[:, None, None]), valid)
    np.testing.assert_array_equal(cls[valid], ref.argmax(0).numpy()[valid])
    with rasterio.open(paths["probabilities"]) as p_src:
        assert p_src.count == 5 and p_src.crs == src.crs and p_src.transform == src.transform
        prob = p_src.read()
    assert np.isnan(prob[:, ~valid]).all()
    np.testing.assert_allclose(prob[:, valid], torch.softmax(ref, 0).numpy()[:, valid], atol=1e-5)
    # summary: pixel counts and hectares (10 m pixels → 0.01 ha)
    stored = json.loads(paths["summary"].read_text())
    assert stored["valid_pixels"] == valid.sum() and stored["nodata_pixels"] == (~valid).sum()
    for entry in stored["class_areas"]:
        assert entry["pixels"] == int((cls == entry["index"]).sum())
        assert entry["hectares"] == pytest.approx(entry["pixels"] * 0.01)
    assert stored["pixels_per_second"] > 0 and stored["crs"] == CRS
    assert paths["preview"].stat().st_size > 1000
    assert not list((tmp_path / "out").glob(".*partial"))


def test_background_reader_gives_the_same_map(tmp_path, monkeypatch):
    """The prefetching reader thread (used on GPUs) and inline reading (CPU) give identical outputs."""
    pm = make_pm(ConvModel(k=3))
    image = make_image(90, 110)
    image[:, :5, :5] = -9999.0
    scene = write_scene(tmp_path / "p.tif", image, nodata=-9999.0)
    maps = []
    for flag in ("0", "1"):
        monkeypatch.setenv("RSMOE_PREFETCH", flag)
        [s] = predict_scenes(pm, [scene], tmp_path / f"out{flag}", tile=32, overlap=8, batch_size=3,
                             probabilities=True, **quiet())
        with rasterio.open(s["classes"]) as c, rasterio.open(s["probabilities"]) as p:
            maps.append((c.read(), p.read()))
    np.testing.assert_array_equal(maps[0][0], maps[1][0])
    np.testing.assert_array_equal(maps[0][1], maps[1][1])


def test_overlap_zero_equals_prediction_of_own_windows(tmp_path):
    """overlap 0: where windows do not overlap the map is exactly each window's own prediction."""
    pm = make_pm(ConvModel(k=3))
    image = make_image(70, 90)  # 70 = 32 + 32 + 6: the last window row / column is shifted and overlaps
    scene = write_scene(tmp_path / "s.tif", image)
    # batch_size 1: the reference forward runs on the same 1×4×32×32 shape (conv kernels can round differently
    # for other batch sizes)
    predict_scenes(pm, [scene], tmp_path / "out", tile=32, overlap=0, batch_size=1, probabilities=True, **quiet())
    paths = output_paths(tmp_path / "out", scene)
    with rasterio.open(paths["probabilities"]) as p_src, rasterio.open(paths["classes"]) as c_src:
        prob, cls = p_src.read(), c_src.read(1)
    plan = plan_windows(70, 90, 32, 0)
    assert plan.row_starts == [0, 32, 38] and plan.col_starts == [0, 32, 58]
    cover = np.zeros((70, 90), int)
    for r in plan.row_starts:
        for c in plan.col_starts:
            cover[r : r + 32, c : c + 32] += 1
    logits = predict_array(pm, image, tile=32, overlap=0, batch_size=1)  # the same engine, logits in memory
    checked = 0
    for r in plan.row_starts:
        for c in plan.col_starts:
            own = full_logits(pm, image[:, r : r + 32, c : c + 32])
            alone = cover[r : r + 32, c : c + 32] == 1  # pixels no other window touches
            np.testing.assert_array_equal(logits[:, r : r + 32, c : c + 32][:, alone], own.numpy()[:, alone])
            np.testing.assert_array_equal(cls[r : r + 32, c : c + 32][alone], own.argmax(0).numpy()[alone])
            # softmax of a differently shaped tensor may round differently in the last bit
            np.testing.assert_allclose(prob[:, r : r + 32, c : c + 32][:, alone],
                                       torch.softmax(own, 0).numpy()[:, alone], rtol=1e-6, atol=0)
            checked += alone.sum()
    assert checked == (cover == 1).sum() > 0.5 * 70 * 90


def test_scene_smaller_than_tile_with_patch_multiple(tmp_path):
    """A 21×13 scene, tile 64, model needing multiples of 8: reflect-padded to 24×16, cropped back."""
    seen = []

    class Patchy(ConvModel):
        def forward(self, image, wavelengths):
            assert image.shape[-2] % 8 == 0 and image.shape[-1] % 8 == 0
            seen.append(tuple(image.shape[-2:]))
            return super().forward(image, wavelengths)

    pm = make_pm(Patchy(k=1), multiple_of=8)
    image = make_image(21, 13)
    scene = write_scene(tmp_path / "tiny.tif", image)
    [s] = predict_scenes(pm, [scene], tmp_path / "out", tile=64, overlap=16, **quiet())
    assert seen == [(24, 16)] and s["small_scene_padding"] == "reflect" and s["windows"] == 1
    with rasterio.open(s["classes"]) as src:
        assert (src.height, src.width) == (21, 13)
        cls = src.read(1)
    np.testing.assert_array_equal(cls, full_logits(make_pm(ConvModel(k=1)), image).argmax(0).numpy())


def test_dataset_mask_marks_nodata(tmp_path):
    pm = make_pm()
    image = make_image(40, 50)
    mask = np.ones((40, 50), bool)
    mask[10:20, 5:15] = False
    scene = write_scene(tmp_path / "m.tif", image, mask=mask)
    [s] = predict_scenes(pm, [scene], tmp_path / "out", tile=32, overlap=8, **quiet())
    with rasterio.open(s["classes"]) as src:
        np.testing.assert_array_equal(src.read(1) == 255, ~mask)
    assert s["nodata_pixels"] == 100


def test_geographic_crs_gives_pixel_counts_only(tmp_path):
    scene = write_scene(tmp_path / "g.tif", make_image(30, 30), crs="EPSG:4326",
                        transform=Affine(0.0001, 0.0, 10.0, 0.0, -0.0001, 50.0))
    [s] = predict_scenes(make_pm(), [scene], tmp_path / "out", tile=32, overlap=8, **quiet())
    assert s["pixel_area_m2"] is None and "geographic" in s["area_note"]
    assert all(e["hectares"] is None for e in s["class_areas"]) and sum(e["pixels"] for e in s["class_areas"]) == 900


# ------------------------------------------------------------------------------ COG, small scenes, no-data, std = 0


def test_class_and_probability_maps_are_valid_cogs(tmp_path):
    """rio-cogeo's validator (IFDs, overviews before the data, block order) accepts both rasters, which keep the
    colour table, class names, band names and georeferencing; the overviews are there and nearest-sampled."""
    from rio_cogeo.cogeo import cog_validate

    pm = make_pm()
    scene = write_scene(tmp_path / "big.tif", make_image(700, 600))
    [s] = predict_scenes(pm, [scene], tmp_path / "out", tile=256, overlap=32, batch_size=4, probabilities=True,
                         **quiet())
    for path in (s["classes"], s["probabilities"]):
        valid, errors, warnings = cog_validate(path, quiet=True)
        assert valid and not errors and not warnings, (path, errors, warnings)
    with rasterio.open(s["classes"]) as c:
        assert c.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and c.overviews(1) == [2]
        assert c.crs == CRS and c.transform == TRANSFORM and (c.block_shapes[0]) == (512, 512)
        assert c.colormap(1)[1][:3] == (0, 128, 0) and c.colormap(1)[255] == (0, 0, 0, 0)
        assert json.loads(c.tags()["class_names"]) == pm.class_names and c.descriptions == ("class",)
        full = c.read(1)
        half = c.read(1, out_shape=(350, 300))  # served from the overview: nearest = every other pixel
    np.testing.assert_array_equal(half, full[::2, ::2])
    with rasterio.open(s["probabilities"]) as p:
        assert p.descriptions == tuple(pm.class_names) and p.count == 5 and p.overviews(1) == [2]
    stored = json.loads(Path(s["summary"]).read_text())
    for kind in ("classes", "probabilities"):
        assert stored["files"][kind]["sha256"] == hashlib.sha256(Path(s[kind]).read_bytes()).hexdigest()
    assert not list((tmp_path / "out").glob(".*"))  # no temporary left


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (8, 8), (3, 17)])
def test_scene_smaller_than_a_patch_is_padded_with_the_real_model(checkpoint_model, tmp_path, shape):
    """A checkpoint's model needs ≥ 2 patches (16 px) per side: a 1×1 … 8×8 scene is padded to 16 px (a multiple of
    the 8-px patch), and the map, of the scene's size, is the argmax of the model on that padded, normalised
    window."""
    pm = checkpoint_model
    assert (pm.multiple_of, pm.min_size) == (8, 16)
    h, w = shape
    image = np.random.default_rng(1).integers(60, 400, size=(4, h, w)).astype(np.uint16)
    scene = write_scene(tmp_path / "small.tif", image)
    [s] = predict_scenes(pm, [scene], tmp_path / "out", tile=512, overlap=128, batch_size=1, **quiet())
    x = torch.from_numpy(pm.normalize.apply(image))[None]
    mode = s["small_scene_padding"]
    assert mode == ("replicate" if h <= 8 or w <= 8 else "reflect")
    ph, pw = (-(-max(side, 16) // 8) * 8 - side for side in (h, w))  # up to ≥ 16 and a multiple of 8
    x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    with torch.no_grad():
        ref = pm.model(x, torch.tensor(pm.wavelengths))[0, :, :h, :w].argmax(0).numpy()
    with rasterio.open(s["classes"]) as c:
        assert (c.height, c.width) == shape
        np.testing.assert_array_equal(c.read(1), ref)


def test_plan_pads_windows_to_the_model_minimum():
    plan = plan_windows(1, 1, tile=512, overlap=128, multiple_of=8, min_size=16)
    assert (plan.win_h, plan.win_w, plan.pad_h, plan.pad_w, plan.pad_mode) == (1, 1, 16, 16, "replicate")
    plan = plan_windows(300, 13, tile=64, overlap=16, multiple_of=8, min_size=16)
    assert (plan.win_h, plan.win_w, plan.pad_h, plan.pad_w, plan.pad_mode) == (64, 13, 64, 16, "reflect")
    with pytest.raises(PredictError, match="smallest input"):
        plan_windows(100, 100, tile=8, overlap=0, multiple_of=8, min_size=16)


def test_non_finite_pixels_of_a_float_scene_are_nodata(tmp_path):
    """NaN / ±inf in any band: class-map no-data and NaN probabilities; every other pixel is classified exactly as
    if those pixels had been no-data (the band mean) from the start."""
    pm = make_pm(ConvModel(k=3))
    image = make_image(60, 50)
    bad = np.zeros((60, 50), bool)
    image[0, 10, 10] = np.nan
    image[2, 20:22, 30:35] = np.inf
    image[3, 40, 5] = -np.inf
    image[:, 50:, 45:] = np.nan  # every band
    bad[10, 10] = bad[20:22, 30:35] = bad[40, 5] = True
    bad[50:, 45:] = True
    scene = write_scene(tmp_path / "f.tif", image)
    [s] = predict_scenes(pm, [scene], tmp_path / "out", tile=32, overlap=8, probabilities=True, **quiet())
    with rasterio.open(s["classes"]) as c, rasterio.open(s["probabilities"]) as p:
        cls, prob = c.read(1), p.read()
    np.testing.assert_array_equal(cls == 255, bad)
    assert np.isnan(prob[:, bad]).all() and np.isfinite(prob[:, ~bad]).all()
    assert s["nodata_pixels"] == bad.sum()
    ref = full_logits(pm, np.where(bad, pm.normalize.mean[:, None, None], image), ~bad)
    np.testing.assert_array_equal(cls[~bad], ref.argmax(0).numpy()[~bad])
    np.testing.assert_allclose(prob[:, ~bad], torch.softmax(ref, 0).numpy()[:, ~bad], atol=1e-5)
    logits = predict_array(pm, image, tile=32, overlap=8)  # the in-memory path marks them the same way
    np.testing.assert_allclose(logits[:, ~bad], ref.numpy()[:, ~bad], atol=1e-5)


def test_band_with_zero_std_gives_the_training_values_bitwise(tmp_path):
    """A band that was constant in training (std 0) is normalised as x − mean, like training and evaluation do
    (``Normalize``), never ±inf / NaN: predict_array's logits equal the model applied to
    ``Normalize(mean, std).apply(image)`` bit for bit (one window, batch 1, no blending)."""
    mean, std = (100.0, 5.0, 300.0, 400.0), (10.0, 0.0, 30.0, 40.0)
    pm = make_pm(ConvModel(k=3), mean=mean, std=std)
    image = make_image(24, 20)
    image[1] = 7.0  # the constant band, not at its training value: normalised to 2.0
    out = predict_array(pm, image, tile=32, overlap=0, batch_size=1)
    x = torch.from_numpy(Normalize(mean, std).apply(image))
    assert (x[1] == 2.0).all()
    with torch.no_grad():
        ref = pm.model(x[None], torch.tensor(pm.wavelengths))[0].numpy()
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, ref)
    # the same through an integer GeoTIFF: every pixel classified, the class map = argmax of those logits
    scene = write_scene(tmp_path / "int.tif", image.round().astype(np.uint16))
    [s] = predict_scenes(pm, [scene], tmp_path / "out", tile=32, overlap=0, batch_size=1, probabilities=True,
                         **quiet())
    with rasterio.open(s["classes"]) as c, rasterio.open(s["probabilities"]) as p:
        np.testing.assert_array_equal(c.read(1), ref.argmax(0))
        assert np.isfinite(p.read()).all() and s["nodata_pixels"] == 0


def test_truncated_scene_is_a_one_line_error_and_leaves_no_output(tmp_path):
    """The header is intact (the scene passes the up-front checks) but the tiles stop half-way: reading them is a
    PredictError naming the file, and neither a final output nor a temporary file remains."""
    scene = tmp_path / "cut.tif"
    image = make_image(200, 200)
    with rasterio.open(scene, "w", driver="GTiff", width=200, height=200, count=4, dtype="float32", crs=CRS,
                       transform=TRANSFORM, tiled=True, blockxsize=64, blockysize=64) as dst:
        dst.write(image)
    with open(scene, "r+b") as f:
        f.truncate(scene.stat().st_size // 2)
    with pytest.raises(PredictError) as err:
        predict_scenes(make_pm(), [scene], tmp_path / "out", tile=64, overlap=16, probabilities=True, **quiet())
    assert str(scene) in str(err.value) and "truncated" in str(err.value) and "\n" not in str(err.value)
    assert list((tmp_path / "out").iterdir()) == []


# --------------------------------------------------------------------------------------------- bands and sensors


def test_one_band_input_to_four_band_checkpoint_is_a_one_line_error(tmp_path):
    scene = write_scene(tmp_path / "pan.tif", make_image(20, 20, bands=1))
    with pytest.raises(PredictError) as err:
        predict_scenes(make_pm(), [scene], tmp_path / "out", **quiet())
    msg = str(err.value)
    assert "\n" not in msg and "1 band" in msg and "expects 4" in msg
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    # the same through the argument wiring: a ValueError with one line, raised before any output
    parser = add_predict_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--checkpoint", "x.ckpt", "--input", str(scene), "--out", str(tmp_path / "o2"),
                              "--no-progress"])
    with pytest.raises(ValueError) as err2:
        run_predict_from_args(args, lambda ckpt: make_pm())
    assert "\n" not in str(err2.value) and not (tmp_path / "o2").exists()


def test_rsmoe_cli_prints_one_line_error(tmp_path, monkeypatch, capsys):
    """Through `rsmoe predict` itself (the checkpoint loader replaced by the test model)."""
    import rsmoe.cli as cli
    import rsmoe.engine.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, "load_prediction_model", lambda path, device="cpu": make_pm())
    scene = write_scene(tmp_path / "pan.tif", make_image(20, 20, bands=1))
    code = cli.main(["predict", "--checkpoint", "x.ckpt", "--input", str(scene), "--out", str(tmp_path / "o"),
                     "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("rsmoe predict: error:") and "\n" not in err and "expects 4" in err
    good = write_scene(tmp_path / "ok.tif", make_image(30, 30))
    code = cli.main(["predict", "--checkpoint", "x.ckpt", "--input", str(good), "--out", str(tmp_path / "o"),
                     "--tile", "32", "--overlap", "8", "--device", "cpu", "--no-progress"])
    assert code == 0 and output_paths(tmp_path / "o", good)["classes"].exists()


def test_bands_pick_and_reorder(tmp_path):
    pm = make_pm()
    image = make_image(40, 40)
    extra = np.concatenate([image[::-1], make_image(40, 40, bands=1, seed=3)])  # B8 B4 B3 B2 + an extra band
    scene_a = write_scene(tmp_path / "a.tif", image)
    scene_b = write_scene(tmp_path / "b.tif", extra)
    with pytest.raises(PredictError, match="5 band"):
        predict_scenes(pm, [scene_b], tmp_path / "out", **quiet())
    [sa] = predict_scenes(pm, [scene_a], tmp_path / "out", tile=32, overlap=8, **quiet())
    [sb] = predict_scenes(pm, [scene_b], tmp_path / "out", tile=32, overlap=8, bands=[4, 3, 2, 1], **quiet())
    with rasterio.open(sa["classes"]) as a, rasterio.open(sb["classes"]) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    assert sb["bands"] == [4, 3, 2, 1]


def test_file_band_metadata_checked(tmp_path):
    pm = make_pm()
    image = make_image(20, 20)
    wrong = write_scene(tmp_path / "w.tif", image, wavelengths=[0.842, 0.665, 0.560, 0.490])
    with pytest.raises(PredictError, match="do not match"):
        predict_scenes(pm, [wrong], tmp_path / "out", **quiet())
    swapped = write_scene(tmp_path / "d.tif", image, descriptions=["B3", "B2", "B4", "B8"])
    with pytest.raises(PredictError, match="--bands 2,1,3,4"):
        predict_scenes(pm, [swapped], tmp_path / "out", **quiet())
    ok = write_scene(tmp_path / "ok.tif", image, wavelengths=[0.49, 0.56, 0.67, 0.84], descriptions=pm.band_names)
    assert predict_scenes(pm, [ok], tmp_path / "out", tile=32, overlap=8, **quiet())[0]["status"] == "done"


def test_sensor_and_wavelength_claims():
    """--sensor names come from rsmoe.sensors; wavelengths must match the checkpoint's within 0.02 µm per band."""
    pm = make_pm()
    check_sensor(pm, sensor="Sentinel-2")
    check_sensor(pm, sensor="sentinel2")  # case and punctuation do not matter
    check_sensor(pm, sensor="GF-2")  # B, G, R, NIR as well, centres within 0.02 µm
    check_sensor(pm, sensor="ISPRS-Potsdam", bands=[3, 2, 1, 4])  # R, G, B, IR reordered to B, G, R, NIR
    check_sensor(pm, wavelengths=[0.49, 0.56, 0.68, 0.83])
    check_sensor(pm, sensor="my-sat", sensors={"my-sat": [0.48, 0.57, 0.67, 0.85]})
    for kw in (dict(sensor="ISPRS-Potsdam"), dict(sensor="RGB"), dict(sensor="FLAIR"),
               dict(wavelengths=[0.49, 0.56, 0.665, 0.9]), dict(sensor="no-such-sensor"),
               dict(sensor="ISPRS-Potsdam", bands=[1, 2, 3, 9])):
        with pytest.raises(PredictError) as err:
            check_sensor(pm, **kw)
        assert "\n" not in str(err.value)


def test_cli_wiring(tmp_path, capsys):
    scene = write_scene(tmp_path / "s.tif", make_image(30, 30))
    parser = add_predict_arguments(argparse.ArgumentParser(prog="rsmoe predict"))
    args = parser.parse_args(["--checkpoint", "m.ckpt", "--input", str(scene), "--out", str(tmp_path / "out"),
                              "--wavelengths", "0.49", "0.56", "0.665", "0.842", "--tile", "32", "--overlap", "8",
                              "--batch-size", "2", "--device", "cpu", "--no-progress"])
    loaded = []
    assert run_predict_from_args(args, lambda ckpt: loaded.append(ckpt) or make_pm()) == 0
    summary = json.loads(output_paths(tmp_path / "out", scene)["summary"].read_text())
    assert loaded == ["m.ckpt"] and summary["batch_size"] == 2 and summary["tile"] == 32
    args = parser.parse_args(["--checkpoint", "m.ckpt", "--input", str(scene), "--out", str(tmp_path / "out"),
                              "--sensor", "ISPRS-Potsdam", "--no-progress"])
    with pytest.raises(PredictError, match="do not match"):
        run_predict_from_args(args, lambda ckpt: make_pm())
    args = parser.parse_args(["--checkpoint", "m", "--input-dir", str(tmp_path), "--out", str(tmp_path / "out"),
                              "--bands", "1,2", "3", "4", "--resume", "--no-progress"])
    assert args.bands == [[1, 2], [3], [4]]
    capsys.readouterr()
    assert run_predict_from_args(args, lambda ckpt: make_pm()) == 0
    assert "s.tif: skipped" in capsys.readouterr().out


def test_collect_inputs(tmp_path):
    d = tmp_path / "scenes"
    d.mkdir()
    for name in ("b.tif", "a.TIFF", ".hidden.tif", "notes.txt", "c_classes.tif", "c_summary.json"):
        (d / name).write_bytes(b"x")
    got = [p.name for p in collect_inputs(input_dir=d)]
    assert got == ["a.TIFF", "b.tif"]  # c_classes.tif is an output (its summary sits beside it)
    lst = tmp_path / "list.txt"
    lst.write_text("# scenes\nscenes/b.tif\n\n" + str(d / "a.TIFF") + "  # absolute\nscenes/b.tif\n")
    assert [p.name for p in collect_inputs(input_list=lst)] == ["b.tif", "a.TIFF"]
    assert [p.name for p in collect_inputs(input=d / "b.tif")] == ["b.tif"]
    with pytest.raises(PredictError, match="not found"):
        collect_inputs(input=[d / "missing.tif"])
    with pytest.raises(PredictError):
        collect_inputs()


# --------------------------------------------------------------------------------------------- robustness, resume


KILL_SCRIPT = """
import sys, time, torch
from pathlib import Path
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
from test_predict import ConvModel, make_pm
from rsmoe.predict import predict_scenes

class Slow(ConvModel):
    def forward(self, image, wavelengths):
        time.sleep(0.4)
        return super().forward(image, wavelengths)

predict_scenes(make_pm(Slow()), [Path({scene!r})], Path({out!r}), tile=32, overlap=8, batch_size=1,
               show_progress=False)
"""


@pytest.mark.slow
def test_killed_run_leaves_no_final_file_and_resume(tmp_path):
    scene = write_scene(tmp_path / "k.tif", make_image(120, 100))
    out = tmp_path / "out"
    paths = output_paths(out, scene)
    partial = out / ".k_classes.tif.partial"
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), scene=str(scene), out=str(out)))
    proc = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.time() + 60
        while not partial.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert partial.exists(), "the run never started writing"
        time.sleep(1.5)  # a few windows in, at least one row of windows flushed
        assert proc.poll() is None, "the slow run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not paths["classes"].exists() and not paths["summary"].exists()
    # --resume does not count the killed scene as done; the stale partial is replaced
    pm = make_pm(CountingModel(str(tmp_path / "log1.txt")))
    [s] = predict_scenes(pm, [scene], out, tile=32, overlap=8, resume=True, **quiet())
    assert s["status"] == "done" and paths["classes"].exists() and not partial.exists()
    mtime = paths["classes"].stat().st_mtime_ns
    pm2 = make_pm(CountingModel(str(tmp_path / "log2.txt")))
    scene2 = write_scene(tmp_path / "k2.tif", make_image(40, 40))
    s1, s2 = predict_scenes(pm2, [scene, scene2], out, tile=32, overlap=8, resume=True, **quiet())
    assert s1["status"] == "skipped" and s2["status"] == "done"
    assert paths["classes"].stat().st_mtime_ns == mtime
    forwards = sum(int(line.split()[1]) for line in (tmp_path / "log2.txt").read_text().splitlines())
    assert forwards == plan_windows(40, 40, 32, 8).num_windows  # only the new scene ran


def forwards(log: Path) -> int:
    """Windows that went through a CountingModel (0 if it never ran)."""
    return sum(int(line.split()[1]) for line in log.read_text().splitlines()) if log.exists() else 0


def test_resume_keeps_only_intact_outputs_of_the_same_checkpoint(tmp_path):
    """--resume skips a scene only if its summary names the same checkpoint SHA-256 and its rasters still have the
    recorded size and SHA-256; a truncated map, a map with one changed byte, an unreadable summary, another
    checkpoint, or probabilities asked for now but not written then: the scene is predicted again."""
    a = write_scene(tmp_path / "a.tif", make_image(40, 40, seed=1))
    b = write_scene(tmp_path / "b.tif", make_image(40, 40, seed=2))
    out, windows = tmp_path / "out", plan_windows(40, 40, 32, 8).num_windows
    runs = iter(range(100))

    def run(sha: str = "1" * 64, probabilities: bool = False) -> tuple[list[str], int]:
        log = tmp_path / f"log{next(runs)}.txt"
        pm = make_pm(CountingModel(str(log)), source_sha256=sha, config_json='{"name": "x"}')
        done = predict_scenes(pm, [a, b], out, tile=32, overlap=8, resume=True, probabilities=probabilities,
                              **quiet())
        return [s["status"] for s in done], forwards(log)

    assert run() == (["done", "done"], 2 * windows)
    assert run() == (["skipped", "skipped"], 0)
    pa, pb = output_paths(out, a), output_paths(out, b)
    with open(pa["classes"], "r+b") as f:  # truncated
        f.truncate(pa["classes"].stat().st_size - 100)
    assert run() == (["done", "skipped"], windows)
    data = bytearray(pb["classes"].read_bytes())  # one byte changed, same size
    data[len(data) // 2] ^= 0xFF
    pb["classes"].write_bytes(bytes(data))
    assert run() == (["skipped", "done"], windows)
    pa["summary"].write_text('{"status": "done", "checkpoint"')  # unreadable summary
    assert run() == (["done", "skipped"], windows)
    assert run(sha="2" * 64) == (["done", "done"], 2 * windows)  # another checkpoint
    assert json.loads(pa["summary"].read_text())["checkpoint"] == {"path": None, "sha256": "2" * 64,
                                                                   "config": {"name": "x"}}
    assert run(sha="2" * 64, probabilities=True) == (["done", "done"], 2 * windows)
    assert run(sha="2" * 64, probabilities=True) == (["skipped", "skipped"], 0)
    pa["probabilities"].unlink()
    assert run(sha="2" * 64, probabilities=True) == (["done", "skipped"], windows)


def test_summary_records_the_checkpoint_and_resume_follows_it(bench, checkpoint, tmp_path, capsys):
    """Through `rsmoe predict`: the summary holds the checkpoint's path, SHA-256 (of the file's bytes) and run
    config; --resume keeps the maps of that checkpoint and redoes them for another one."""
    from rsmoe.cli import main
    from rsmoe.engine.checkpoints import read_checkpoint

    scene = write_scene(tmp_path / "s.tif", np.random.default_rng(0).integers(60, 400, (4, 40, 36)).astype("uint16"))
    other = save_tiny_checkpoint(bench, tmp_path / "other.safetensors", seed=1)
    argv = ["predict", "--input", str(scene), "--out", str(tmp_path / "out"), "--tile", "32", "--overlap", "8",
            "--device", "cpu", "--no-progress", "--resume"]
    summary_path = output_paths(tmp_path / "out", scene)["summary"]
    assert main([*argv, "--checkpoint", str(checkpoint)]) == 0
    record = json.loads(summary_path.read_text())["checkpoint"]
    assert record["path"] == str(checkpoint)
    assert record["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert record["config"] == json.loads(read_checkpoint(checkpoint)[1].config.to_json())
    capsys.readouterr()
    assert main([*argv, "--checkpoint", str(checkpoint)]) == 0
    assert "skipped" in capsys.readouterr().out
    assert main([*argv, "--checkpoint", str(other)]) == 0
    assert "skipped" not in capsys.readouterr().out
    assert json.loads(summary_path.read_text())["checkpoint"]["sha256"] == \
        hashlib.sha256(other.read_bytes()).hexdigest() != record["sha256"]


@pytest.mark.slow
def test_two_process_cpu_run_covers_every_scene_once(tmp_path):
    scenes = [write_scene(tmp_path / f"s{i}.tif", make_image(24 + 8 * i, 40, seed=i)) for i in range(5)]
    log = tmp_path / "forwards.txt"
    pm = make_pm(CountingModel(str(log)))
    summaries = predict_scenes(pm, scenes, tmp_path / "out", tile=32, overlap=8, batch_size=2, devices=2, **quiet())
    assert [s["input"] for s in summaries] == [str(p) for p in scenes]
    assert all(s["status"] == "done" and s["world_size"] == 2 for s in summaries)
    assert [s["rank"] for s in summaries] == [0, 1, 0, 1, 0]  # round-robin
    pids = {s["rank"]: s["pid"] for s in summaries}
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    for p in scenes:
        assert output_paths(tmp_path / "out", p)["classes"].exists()
    # every window of every scene went through a model exactly once, and only in the two workers
    lines = [line.split() for line in log.read_text().splitlines()]
    assert sum(int(n) for _, n in lines) == sum(s["windows"] for s in summaries)
    assert {int(pid) for pid, _ in lines} == set(pids.values())
    for s in summaries:
        stored = json.loads(Path(s["summary"]).read_text())
        assert stored["rank"] == s["rank"] and stored["pid"] == s["pid"]
