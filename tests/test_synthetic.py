"""The synthetic spectral-shift benchmark: sensor physics, determinism, OHS spectra, the written datasets."""
import csv
import time

import numpy as np
import pytest
import torch
from rasterio.crs import CRS
from scipy import ndimage

from rsmoe.data import synthetic as S
from rsmoe.data.prepared import PreparedDataset, load_dataset_info
from rsmoe.data.raster import raster_meta, read_raster
from rsmoe.sensors import get_sensor

SMALL = {
    "GF-2": {"train": 3, "val": 1},
    "GF-1": {"test": 1},
    "PlanetScope": {"test": 1},
    "Sentinel-2": {"test": 1},
    "Region-A": {"train": 2, "val": 1},
    "Region-B": {"test": 1},
    "Region-C": {"test": 1},
}


def _scene(seed, region="Region-A", size=64, need=()):
    for k in range(100):
        rng = np.random.default_rng([seed, k])
        scene = S.make_scene(rng, size, S.REGIONS[region])
        if all((scene.labels == c).sum() >= 20 for c in need):
            return scene, rng
    raise AssertionError(f"no scene with classes {need}")


def test_band_responses_and_psf():
    r = S.band_responses("GF-2")
    assert r.shape == (4, S.GRID_UM.size)
    np.testing.assert_allclose(r.sum(axis=1), 1.0)
    red = S.GRID_UM[r[2] > 0]
    assert red.min() == pytest.approx(0.63) and red.max() == pytest.approx(0.69)
    ohs = S.band_responses("OHS")
    assert ohs.shape[0] == 32 and np.all(S.GRID_UM[ohs.argmax(axis=1)] == np.array(get_sensor("OHS").wavelengths))
    assert S.psf_sigma("GF-2", 4.0) == 0.0 and S.psf_sigma("PlanetScope", 4.0) == 0.0
    assert 0 < S.psf_sigma("GF-1", 4.0) < S.psf_sigma("Sentinel-2", 4.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gf2_and_gf1_differ_only_by_radiometry_and_gsd(seed):
    scene, _ = _scene(seed)
    gf2 = S.render_scene(scene, "GF-2", noise=False, ref_gsd_m=4.0)
    gf1 = S.render_scene(scene, "GF-1", noise=False, ref_gsd_m=4.0)
    assert gf2.max() < S.RADIOMETRY["GF-2"].dn_max and gf1.max() < S.RADIOMETRY["GF-1"].dn_max  # no saturation
    rho2, rho1 = S.to_reflectance(gf2, "GF-2"), S.to_reflectance(gf1, "GF-1")
    sigma = S.psf_sigma("GF-1", 4.0)
    expected = ndimage.gaussian_filter(rho2, (0, sigma, sigma), mode="reflect")
    quant = 0.5 / np.array(S.RADIOMETRY["GF-2"].gain) + 0.5 / np.array(S.RADIOMETRY["GF-1"].gain)
    err = np.abs(rho1 - expected).max(axis=(1, 2))
    assert np.all(err <= quant + 1e-12), (err, quant)
    # ... and the GSD term is real: without the blur the two differ far beyond quantisation.
    assert np.all(np.abs(rho1 - rho2).max(axis=(1, 2)) > 20 * quant)
    assert not np.array_equal(gf1, gf2)


@pytest.mark.parametrize("seed", [0, 1])
def test_gf2_and_planetscope_differ_in_red_not_nir(seed):
    scene, rng = _scene(seed, need=S.VEGETATION)
    dn = S.render_sensors(scene, ["GF-2", "PlanetScope"], rng, ref_gsd_m=4.0)
    gf2, ps = S.to_reflectance(dn["GF-2"], "GF-2"), S.to_reflectance(dn["PlanetScope"], "PlanetScope")
    noise = max(S.RADIOMETRY["GF-2"].noise_dn[2] / S.RADIOMETRY["GF-2"].gain[2],
                S.RADIOMETRY["PlanetScope"].noise_dn[2] / S.RADIOMETRY["PlanetScope"].gain[2])
    veg = np.isin(scene.labels, S.VEGETATION)
    red_diff = (ps[2] - gf2[2])[veg].mean()  # PlanetScope's red (0.59–0.67) reaches onto the green shoulder
    nir_diff = (ps[3] - gf2[3])[veg].mean()
    assert red_diff > noise, (red_diff, noise)
    assert abs(nir_diff) / gf2[3][veg].mean() < 0.2 * red_diff / gf2[2][veg].mean()


def test_ohs_follows_class_spectra():
    scene, rng = _scene(3, region="Region-C", need=(S.WATER, S.FOREST, S.CROPLAND))
    dn = S.render_scene(scene, "OHS", rng, ref_gsd_m=10.0)
    assert dn.shape == (32, 64, 64) and dn.dtype == np.int16
    rho = S.to_reflectance(dn, "OHS")
    wl = np.array(get_sensor("OHS").wavelengths)
    green, red, nir = (wl >= 0.52) & (wl <= 0.58), (wl >= 0.65) & (wl <= 0.68), wl >= 0.76

    def spectrum(c):
        return rho[:, scene.labels == c].mean(axis=1)

    water = spectrum(S.WATER)
    assert water[nir].max() < water[green].min()
    for veg in (S.FOREST, S.CROPLAND):
        s = spectrum(veg)
        assert s[nir].min() > 3 * s[red].max()  # red edge
        assert s[green].max() > s[red].max()  # green peak
    soil = S.class_spectra()[0][S.BARE]
    assert np.all(np.diff(soil) >= -1e-9)  # soils rise slowly with wavelength
    # The factored scene equals its materialised cube integrated over the bands.
    resp = S.band_responses("OHS")
    np.testing.assert_allclose(np.tensordot(resp, scene.cube(), axes=1), scene.band_reflectance(resp), rtol=1e-10)


def _read_all(root):
    with open(root / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, [(read_raster(root / r["image"]), read_raster(root / r["mask"])) for r in rows]


def test_determinism_and_reuse(tmp_path):
    a = S.synthesize(tmp_path / "a", seed=0, tile=32, tiles_per_domain=SMALL, show_progress=False)
    b = S.synthesize(tmp_path / "b", seed=0, tile=32, tiles_per_domain=SMALL, show_progress=False)
    c = S.synthesize(tmp_path / "c", seed=1, tile=32, tiles_per_domain=SMALL, show_progress=False)
    assert set(a) == {"multispectral", "hyperspectral"}
    for name in a:
        assert (a[name] / "manifest.csv").read_text() == (b[name] / "manifest.csv").read_text()
        rows, pa = _read_all(a[name])
        _, pb = _read_all(b[name])
        _, pc = _read_all(c[name])
        for (ia, ma), (ib, mb) in zip(pa, pb):
            np.testing.assert_array_equal(ia, ib)
            np.testing.assert_array_equal(ma, mb)
        assert not all(np.array_equal(ia, ic) for (ia, _), (ic, _) in zip(pa, pc))
        assert len(rows) == sum(sum(SMALL[d].values()) for d in S.DATASETS[name]["domains"])

    # Same parameters: not rewritten. Other parameters: rewritten.
    yaml_path = a["multispectral"] / "dataset.yaml"
    stamp = yaml_path.stat().st_mtime_ns
    time.sleep(0.01)
    S.synthesize(tmp_path / "a", seed=0, tile=32, tiles_per_domain=SMALL, show_progress=False)
    assert yaml_path.stat().st_mtime_ns == stamp
    S.synthesize(tmp_path / "a", seed=5, tile=32, tiles_per_domain=SMALL, show_progress=False,
                 datasets=["multispectral"])
    assert yaml_path.stat().st_mtime_ns != stamp
    assert load_dataset_info(a["multispectral"]).extra["synthetic"]["seed"] == 5
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["hyperspectral", "multispectral"]

    with pytest.raises(ValueError, match="unknown domain 'Mars'"):
        S.synthesize(tmp_path / "d", tiles_per_domain={"Mars": {"test": 1}}, show_progress=False)


def test_default_benchmark(tmp_path):
    start = time.perf_counter()
    roots = S.synthesize(tmp_path, show_progress=False)
    elapsed = time.perf_counter() - start
    assert elapsed < 30, elapsed

    ms = load_dataset_info(roots["multispectral"])
    assert ms.classes == list(S.CLASSES) and len(ms.mean) == 4
    assert ms.sensors == {"GF-2": "GF-2", "GF-1": "GF-1", "PlanetScope": "PlanetScope", "Sentinel-2": "Sentinel-2"}
    assert ms.dtype == "uint16"
    hs = load_dataset_info(roots["hyperspectral"])
    assert set(hs.sensors.values()) == {"OHS"} and hs.bands == {"OHS": 32} and hs.dtype == "int16"

    train = PreparedDataset(roots["multispectral"], split="train")
    assert len(train) == 48 and train.domains == ["GF-2"]
    assert len(PreparedDataset(roots["multispectral"], split="val")) == 8
    test = PreparedDataset(roots["multispectral"], split="test")
    assert len(test) == 48 and test.domains == ["GF-1", "PlanetScope", "Sentinel-2"]
    s = test[len(test) - 1]
    assert s["image"].shape == (4, 64, 64) and s["domain"] == "Sentinel-2"
    assert s["wavelengths"].tolist() == pytest.approx([0.49, 0.56, 0.66, 0.83])
    meta = raster_meta(s["meta"]["image"])
    assert meta["crs"] == CRS.from_epsg(32650) and meta["transform"].a == 10.0

    masks = np.stack([train[i]["mask"].numpy() for i in range(len(train))])
    present = np.unique(masks)
    assert set(range(7)) <= set(present.tolist()) and 255 in present
    hyper = PreparedDataset(roots["hyperspectral"], split="test", domains=["Region-B", "Region-C"])
    assert len(hyper) == 32 and hyper[0]["image"].shape == (32, 64, 64)
    # Regions really differ in class priors: Region-B is more built-up, Region-C more forested.
    freq = {}
    for d in ("Region-B", "Region-C"):
        m = np.stack([hyper[i]["mask"].numpy() for i in range(len(hyper)) if hyper[i]["domain"] == d])
        freq[d] = np.bincount(m[m != 255], minlength=7) / (m != 255).sum()
    assert freq["Region-B"][S.BUILT] > 3 * freq["Region-C"][S.BUILT]
    assert freq["Region-C"][S.FOREST] > 2 * freq["Region-B"][S.FOREST]


# Tiles of the version-1 generator, hashed before make_labels was split up and heights were added: the benchmark's
# pixels must not move unless GENERATOR_VERSION is bumped deliberately.
V1_TILE_SHA256 = {
    (0, "multispectral", "GF-2", "train", 0): "efc29f390462923d540c4118d6ef8649d5d4da153d9e6068cdc21283b102100b",
    (0, "multispectral", "Sentinel-2", "test", 3): "51b0e9d581b1dac4ed5108a0a75502e99271043ae2ae32a0cced2a9ed665fd9a",
    (1, "hyperspectral", "Region-B", "test", 2): "b449b25ba0a13efcd5df5bd7d127b6493c17f477edce338a332844dfa6f85f37",
}


def test_benchmark_tiles_bit_identical_to_generator_version_1():
    import hashlib

    assert S.GENERATOR_VERSION == 1
    for key, digest in V1_TILE_SHA256.items():
        image, mask, height = S.render_tile_layers(*key, 64)
        assert hashlib.sha256(image.tobytes() + mask.tobytes()).hexdigest() == digest, key
        same_image, same_mask = S.render_tile(*key, 64)
        np.testing.assert_array_equal(same_image, image)
        np.testing.assert_array_equal(same_mask, mask)
        assert height.dtype == np.float32 and height.shape == mask.shape
        assert np.array_equal(np.isnan(height), mask == 255)  # no data exactly on the no-data border


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_heights_follow_the_landscape(seed):
    rng = np.random.default_rng([seed, 99])
    labels, objects = S.make_labels(rng, 64, S.REGIONS["Region-B"])
    field = S.make_heights(rng, labels, objects)
    above = field.surface - field.ground
    assert field.ground.min() == pytest.approx(0.0, abs=1e-9) and field.ground.max() <= S.RELIEF_M[1] + 1e-9
    for obj in np.unique(objects):
        sel = objects == obj
        cls = int(labels[sel][0])
        if cls == S.BUILT:  # flat roof on a flat footprint, 3–40 m high
            assert np.ptp(field.surface[sel]) < 1e-9 and np.ptp(field.ground[sel]) < 1e-9
            assert S.BUILDING_HEIGHT_M[0] <= above[sel][0] <= S.BUILDING_HEIGHT_M[1]
        elif cls == S.WATER:  # flat water at the level of its lowest ground
            assert np.ptp(field.surface[sel]) < 1e-9 and np.all(above[sel] == 0)
        elif cls == S.FOREST:
            assert above[sel].min() >= S.TREE_HEIGHT_M[0] and above[sel].max() <= S.TREE_HEIGHT_M[1]
    assert np.all(above[labels == S.ROAD] == 0) and np.all(above[labels == S.BARE] == 0)
    assert np.all((above[labels == S.CROPLAND] > 0) & (above[labels == S.CROPLAND] <= 1.5))


def test_prepared_height_layer(tmp_path):
    from rsmoe.data.prepared import MANIFEST_COLUMNS, PreparedWriter, read_manifest

    root = S.synthesize(tmp_path, seed=0, tile=32, tiles_per_domain=SMALL, show_progress=False,
                        datasets=["multispectral"])["multispectral"]
    header = (root / "manifest.csv").read_text().splitlines()[0].split(",")
    assert header == [*MANIFEST_COLUMNS, "height"]
    rows = read_manifest(root)
    ds = PreparedDataset(root, cache=True)
    for i, row in enumerate(rows):
        index = (row["row"] // 32) * S.TILES_PER_ROW + row["col"] // 32  # tile i sits at row i // 8, col i % 8
        image, mask, height = S.render_tile_layers(0, "multispectral", row["domain"], row["split"], index, 32)
        sample = ds[i]
        assert sample["height"].dtype == torch.float32 and sample["height"].shape == (32, 32)
        np.testing.assert_array_equal(sample["height"].numpy(), height)
        np.testing.assert_array_equal(sample["mask"].numpy(), mask)
    # A writer given no heights writes the old manifest, and it reads without a height in the samples.
    with PreparedWriter(tmp_path / "plain", "plain", ["a", "b"], [[0, 0, 0], [9, 9, 9]]) as w:
        w.add_tile(np.ones((4, 8, 8), np.uint16), np.zeros((8, 8), np.uint8), "GF-2", "train", "GF-2")
    assert (tmp_path / "plain" / "manifest.csv").read_text().splitlines()[0] == ",".join(MANIFEST_COLUMNS)
    assert "height" not in PreparedDataset(tmp_path / "plain")[0]
    with pytest.raises(ValueError, match="height shape"):
        with PreparedWriter(tmp_path / "bad", "bad", ["a"], [[0, 0, 0]]) as w:
            w.add_tile(np.ones((4, 8, 8), np.uint16), np.zeros((8, 8), np.uint8), "GF-2", "train", "GF-2",
                       height=np.zeros((4, 4)))
