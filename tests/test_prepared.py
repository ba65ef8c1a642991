"""The prepared format: write → read round trip, atomic writes, validation errors; and the sensor registry."""
import csv

import numpy as np
import pytest
import torch
import yaml
from rasterio.crs import CRS
from rasterio.transform import Affine

from rsmoe.data.prepared import MANIFEST_COLUMNS, PreparedDataset, PreparedWriter, load_dataset_info
from rsmoe.data.raster import raster_meta, read_raster
from rsmoe.sensors import SENSORS, display_band_indices, get_sensor, rgb_band_indices

CLASSES = ["water", "field", "town"]
PALETTE = [[0, 0, 255], [0, 255, 0], [255, 0, 0]]


def _tile(rng, bands=4, size=16, dtype=np.uint16):
    image = rng.integers(0, 1024, size=(bands, size, size)).astype(dtype)
    mask = rng.integers(0, len(CLASSES), size=(size, size)).astype(np.uint8)
    mask[0, :3] = 255
    return image, mask


def _write_small(out, rng):
    """Two GF-2 train tiles, one GF-2 val tile, two Sentinel-2 test tiles; returns what was written."""
    tiles = []
    crs, transform = CRS.from_epsg(32650), Affine(4.0, 0.0, 500000.0, 0.0, -4.0, 3400000.0)
    with PreparedWriter(out, "tiny", CLASSES, PALETTE) as w:
        for domain, split, sensor, n in (("GF-2", "train", "GF-2", 2), ("GF-2", "val", "GF-2", 1),
                                         ("S2", "test", "Sentinel-2", 2)):
            for i in range(n):
                image, mask = _tile(rng)
                w.add_tile(image, mask, domain, split, sensor, source_file=f"scene_{domain}.tif", row=16 * i,
                           col=0, crs=crs, transform=transform)
                tiles.append((domain, split, sensor, image, mask))
    return tiles


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    out = tmp_path / "prep"
    tiles = _write_small(out, rng)

    with open(out / "manifest.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == MANIFEST_COLUMNS
        rows = list(reader)
    assert len(rows) == 5
    assert rows[1]["row"] == "16" and rows[0]["source_file"] == "scene_GF-2.tif"

    info = load_dataset_info(out)
    assert info.name == "tiny" and info.classes == CLASSES and info.palette == PALETTE
    assert info.ignore_index == 255
    assert info.sensors == {"GF-2": "GF-2", "S2": "Sentinel-2"}
    assert info.bands == {"GF-2": 4, "Sentinel-2": 4}
    assert info.dtype == "uint16"
    train = np.concatenate([t[3].reshape(4, -1) for t in tiles if t[1] == "train"], axis=1).astype(np.float64)
    np.testing.assert_allclose(info.mean, train.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(info.std, train.std(axis=1), rtol=1e-12)
    # Statistics really are train-only: all tiles together give different numbers.
    everything = np.concatenate([t[3].reshape(4, -1) for t in tiles], axis=1).astype(np.float64)
    assert not np.allclose(info.mean, everything.mean(axis=1))

    mean32, std32 = np.float32(info.mean)[:, None, None], np.float32(info.std)[:, None, None]
    ds = PreparedDataset(out)
    assert len(ds) == 5 and ds.domains == ["GF-2", "S2"] and ds.num_classes == 3
    for i, (domain, split, sensor, image, mask) in enumerate(tiles):
        s = ds[i]
        assert s["image"].dtype == torch.float32 and s["mask"].dtype == torch.int64
        np.testing.assert_array_equal(s["image"].numpy(), image.astype(np.float32))  # raw values
        np.testing.assert_array_equal(info.normalizer()(s)["image"].numpy(),
                                      (image.astype(np.float32) - mean32) / std32)
        np.testing.assert_array_equal(s["mask"].numpy(), mask.astype(np.int64))
        np.testing.assert_array_equal(s["wavelengths"].numpy(), np.float32(get_sensor(sensor).wavelengths))
        assert s["domain"] == domain and s["meta"]["sensor"] == sensor
        assert s["meta"]["row"] == int(rows[i]["row"]) and s["meta"]["col"] == 0
        assert s["meta"]["image"].endswith(rows[i]["image"]) and s["meta"]["tile"] == rows[i]["image"]
    # Raw files keep dtype, values, CRS and transform.
    meta = raster_meta(out / rows[0]["image"])
    assert meta["crs"] == CRS.from_epsg(32650) and meta["transform"].a == 4.0 and meta["dtype"] == "uint16"
    np.testing.assert_array_equal(read_raster(out / rows[0]["image"]), tiles[0][3])
    assert read_raster(out / rows[0]["mask"], squeeze=True).dtype == np.uint8

    assert len(PreparedDataset(out, split="train")) == 2
    assert PreparedDataset(out, domains=["S2"]).domains == ["S2"]
    assert len(PreparedDataset(out, split=["train", "val"], domains=["GF-2"])) == 3

    cached = PreparedDataset(out, split="test", cache=True, transform=lambda s: {**s, "tag": 1})
    a, b = cached[0], cached[0]
    assert a["tag"] == 1 and torch.equal(a["image"], b["image"])
    a["image"].zero_()  # mutating a sample must not corrupt the cache
    assert not torch.equal(cached[0]["image"], a["image"])

    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 4, 16, 16) and batch["wavelengths"].shape == (2, 4)


def test_unknown_domain_and_split(tmp_path):
    out = tmp_path / "prep"
    _write_small(out, np.random.default_rng(1))
    with pytest.raises(ValueError, match=r"unknown domain\(s\) \['Mars'\].*known domains: \['GF-2', 'S2'\]"):
        PreparedDataset(out, domains=["Mars"])
    assert len(PreparedDataset(out, split="train", domains=["S2"])) == 0


def test_exception_inside_with_leaves_nothing(tmp_path):
    out = tmp_path / "prep"
    rng = np.random.default_rng(2)
    with pytest.raises(RuntimeError, match="boom"):
        with PreparedWriter(out, "tiny", CLASSES, PALETTE) as w:
            w.add_tile(*_tile(rng), "GF-2", "train", "GF-2")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_close_error_leaves_nothing_and_keeps_old(tmp_path):
    out = tmp_path / "prep"
    with pytest.raises(ValueError, match="empty dataset"):
        with PreparedWriter(out, "tiny", CLASSES, PALETTE):
            pass
    assert list(tmp_path.iterdir()) == []

    rng = np.random.default_rng(3)
    _write_small(out, rng)
    before = (out / "manifest.csv").read_text()
    with pytest.raises(ValueError, match=r"domain\(s\) \['S2'\] have zero tiles"):
        with PreparedWriter(out, "tiny", CLASSES, PALETTE, domains=["GF-2", "S2"]) as w:
            w.add_tile(*_tile(rng), "GF-2", "train", "GF-2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prep"]
    assert (out / "manifest.csv").read_text() == before


def test_existing_output_is_replaced(tmp_path):
    out = tmp_path / "prep"
    rng = np.random.default_rng(4)
    _write_small(out, rng)
    with PreparedWriter(out, "second", CLASSES, PALETTE) as w:
        w.add_tile(*_tile(rng), "GF-2", "train", "GF-2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prep"]
    assert load_dataset_info(out).name == "second" and len(PreparedDataset(out)) == 1


def test_validation_errors(tmp_path):
    rng = np.random.default_rng(5)
    with PreparedWriter(tmp_path / "prep", "tiny", CLASSES, PALETTE) as w:
        image, mask = _tile(rng)
        with pytest.raises(ValueError, match=r"tile a/b\.tif .*image has 3 bands, sensor GF-2 expects 4"):
            w.add_tile(image[:3], mask, "GF-2", "train", "GF-2", source_file="a/b.tif")
        bad = mask.copy()
        bad[2, 2] = 7
        with pytest.raises(ValueError, match="mask value 7 is not a class index .*3 classes"):
            w.add_tile(image, bad, "GF-2", "train", "GF-2", source_file="c.tif")
        with pytest.raises(ValueError, match=r"mask shape \(15, 16\) does not match image shape \(16, 16\)"):
            w.add_tile(image, mask[:15], "GF-2", "train", "GF-2")
        with pytest.raises(ValueError, match="unknown sensor 'Landsat'; known sensors: GF-2"):
            w.add_tile(image, mask, "GF-2", "train", "Landsat")
        w.add_tile(image, mask, "GF-2", "train", "GF-2")
        with pytest.raises(ValueError, match="domain GF-2 already holds sensor GF-2, got PlanetScope"):
            w.add_tile(image, mask, "GF-2", "test", "PlanetScope")
        with pytest.raises(ValueError, match="training tiles of sensor RGB have 3 bands but .* GF-2 have 4"):
            w.add_tile(image[:3], mask, "Town", "train", "RGB")
    with pytest.raises(ValueError, match="palette must hold one"):
        PreparedWriter(tmp_path / "other", "tiny", CLASSES, PALETTE[:2])


def test_dataset_info_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.yaml not found"):
        load_dataset_info(tmp_path)
    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump({"name": "x", "classes": ["a"]}))
    with pytest.raises(ValueError, match="missing key\\(s\\) palette, ignore_index, sensors, bands, normalization"):
        load_dataset_info(tmp_path)
    (tmp_path / "dataset.yaml").write_text("name: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_dataset_info(tmp_path)


def test_sensor_registry():
    assert {"GF-2", "GF-1", "PlanetScope", "Sentinel-2", "FLAIR", "OHS", "ISPRS-Potsdam", "ISPRS-Vaihingen",
            "RGB"} <= set(SENSORS)
    assert get_sensor("ISPRS-Potsdam-RGB").band_names == get_sensor("ISPRS-Potsdam").band_names[:3]
    gf2 = get_sensor("GF-2")
    assert gf2.band_names == ["blue", "green", "red", "nir"] and gf2.gsd_m == 4.0
    assert gf2.wavelengths == pytest.approx([0.485, 0.555, 0.66, 0.83])
    assert get_sensor("GF-1").bands == gf2.bands and get_sensor("GF-1").gsd_m == 8.0
    assert get_sensor("Sentinel-2").wavelengths == [0.49, 0.56, 0.66, 0.83]
    ohs = get_sensor("OHS")
    assert ohs.num_bands == 32 and ohs.wavelengths[0] == 0.466 and ohs.wavelengths[-1] == 0.94
    for s in SENSORS.values():
        for b in s.bands:
            assert b.range_um is None or b.range_um[0] < b.center_um < b.range_um[1]
    assert rgb_band_indices(gf2.wavelengths) == [2, 1, 0]
    assert rgb_band_indices(get_sensor("ISPRS-Vaihingen").wavelengths) == [1, 2, 2]
    assert rgb_band_indices(get_sensor("FLAIR").wavelengths) == [0, 1, 2]
    with pytest.raises(KeyError, match="unknown sensor 'X'; known sensors: GF-2, GF-1"):
        get_sensor("X")


def test_display_bands_true_colour_or_nir_false_colour():
    assert display_band_indices(get_sensor("GF-2").wavelengths) == [2, 1, 0]  # B,G,R,NIR stored: R,G,B shown
    assert display_band_indices(get_sensor("ISPRS-Vaihingen").wavelengths) == [0, 1, 2]  # NIR,R,G as published
    assert rgb_band_indices(get_sensor("ISPRS-Vaihingen").wavelengths) == [1, 2, 2]  # the depth branch's R,G,G
    assert display_band_indices([0.56, 0.665, 0.705, 0.842]) == [3, 1, 0]  # the NIR band, not the red edge
    assert display_band_indices([0.665, 0.56]) == [0, 1, 1]  # no NIR, no blue: nearest bands
