"""Release preparers: fake releases in the official layouts → prepare → load → train a few iterations → eval.

Per task (configs/tasks/*.yaml): the fixture writer of its release (tests/fixtures/, each following the public
sources its docstring names; tests/test_release_layouts.py checks the published layouts), ``prepare`` with
32-pixel tiles, :class:`PreparedDataset` loading, ``rsmoe.engine.runner.train`` on the task config with the tiny
model of ``rsmoe/resources/demo.yaml`` (2 iterations, batch 2), metrics for every target domain. Then what each
preparer must get right (band order, no-data, georeferencing, label decoding, splits) and the wrong inputs: each a
one-line error with nothing left at the output path.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from conftest import TINY_RANDOM_MODEL
from fixtures import releases as R
from fixtures.checks import assert_failed_cleanly, read
from rsmoe.config import load_config, read_yaml
from rsmoe.data.datasets import PrepareError, available, options_of, prepare, summarize
from rsmoe.data.datasets.labels import LabelTable
from rsmoe.data.datasets.summary import preparation_details
from rsmoe.data.datasets.tables import resource
from rsmoe.data.datasets.tiling import tile_starts
from rsmoe.data.prepared import PreparedDataset, load_dataset_info, read_manifest
from rsmoe.prepare_cli import add_prepare_arguments, run_prepare
from rsmoe.windows import window_starts

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "configs" / "tasks"
DEMO = REPO / "rsmoe" / "resources" / "demo.yaml"
TILE = R.TILE


def tiny_overrides(prepared: Path, out: Path, iterations: int = 2) -> list[str]:
    """`--set` overrides that swap a task config's model for a tiny random one with the demo's heads and shrink
    the run."""
    demo = read_yaml(DEMO)
    for section, values in TINY_RANDOM_MODEL.items():  # a tiny random model: these tests check the data path
        demo[section] = {**demo[section], **values}
    sets = [f"{k}={json.dumps({'_replace_': True, **demo[k]})}" for k in ("backbone", "depth", "adapter", "head", "mpers")]
    return sets + [f"data.root={prepared}", f"output_dir={out}", f"train.iterations={iterations}",
                   "data.batch_size=2", "data.eval_batch_size=8", "data.augment={hflip: 0.5}", "eval.mode=whole",
                   "train.log_every=1"]


# ------------------------------------------------------------------------------------- fixtures per task
def _fbp_sensor(raw: Path):
    R.write_fbp(raw / "Five-Billion-Pixels", n_images=3)
    R.write_megacities(raw)
    return "fbp-cross-sensor", raw, {}


def _fbp_regional(raw: Path):
    f = R.write_fbp(raw / "fbp")
    return "fbp-cross-regional", f["root"], {"regions": f["regions"]}


def _whu(raw: Path):
    return "whu-ohs", R.write_whu_ohs(raw / "WHU-OHS")["root"], {}


def _flair(raw: Path):
    return "flair", R.write_flair(raw / "FLAIR1")["root"], {}


def _loveda(raw: Path):
    return "loveda", R.write_loveda(raw / "LoveDA", zipped=True)["root"], {}


def _pots_vai(raw: Path):
    R.write_potsdam(raw / "ISPRS" / "Potsdam")
    R.write_vaihingen(raw / "ISPRS" / "Vaihingen")
    return "potsdam-vaihingen", raw / "ISPRS", {}


def _oem(raw: Path):
    return "openearthmap", R.write_openearthmap(raw / "OpenEarthMap")["root"], {}


def _mpers_vai(raw: Path):
    return "vaihingen", R.write_vaihingen(raw / "Vaihingen")["root"], {}


def _mpers_pots(raw: Path):
    return "potsdam", R.write_potsdam(raw / "Potsdam")["root"], {}


def _syndrone(raw: Path):
    return "syndrone", R.write_syndrone(raw / "SynDrone")["root"], {}


E2E = {
    "fbp_cross_sensor": _fbp_sensor,
    "fbp_cross_regional": _fbp_regional,
    "whu_ohs_cross_regional": _whu,
    "flair_cross_regional": _flair,
    "loveda_rural_urban": _loveda,
    "potsdam_to_vaihingen": _pots_vai,
    "openearthmap_cross_continent": _oem,
    "mpers_vaihingen": _mpers_vai,
    "mpers_potsdam": _mpers_pots,
    "mpers_syndrone": _syndrone,
}


def test_every_task_config_has_an_end_to_end_test():
    released = {p.stem for p in TASKS.glob("*.yaml") if not p.stem.startswith("synthetic_")}  # tested elsewhere
    assert released == set(E2E)


@pytest.mark.parametrize("task", sorted(E2E))
def test_prepare_load_train_eval(task, tmp_path):
    name, root, options = E2E[task](tmp_path / "raw")
    out = prepare(name, root, tmp_path / "prepared", tile=TILE, **options)
    cfg = load_config(TASKS / f"{task}.yaml", tiny_overrides(out, tmp_path / "run"))

    info = load_dataset_info(out)
    for domain in cfg.data.source_domains + cfg.data.target_domains:
        assert domain in info.sensors, f"{task}: config domain {domain} not prepared ({list(info.sensors)})"
    ds = PreparedDataset(out, split=cfg.data.test_split, domains=cfg.data.target_domains)
    assert len(ds) > 0
    sample = ds[0]
    c = info.bands[info.sensors[cfg.data.target_domains[0]]]
    assert sample["image"].shape == (c, TILE, TILE) and sample["wavelengths"].shape == (c,)
    labelled = sample["mask"][sample["mask"] != 255]
    assert labelled.numel() > 0 and int(labelled.max()) < info.num_classes
    assert len(PreparedDataset(out, split=cfg.data.train_split, domains=cfg.data.source_domains)) > 0

    from rsmoe.engine.runner import train

    metrics = train(cfg, progress=False)
    assert metrics["step"] == 2
    from rsmoe.engine.data import eval_name

    for domain in cfg.data.target_domains:
        name = eval_name(cfg, domain, cfg.data.test_split)
        assert name in metrics["domains"], f"{task}: no metrics for target domain {name}"
        assert 0.0 <= metrics["domains"][name]["OA"] <= 1.0
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_cli_train_on_a_task_config(tmp_path, capsys):
    """`rsmoe train --config configs/tasks/<task>.yaml` with the tiny-model override."""
    from rsmoe.cli import main

    name, root, options = _loveda(tmp_path / "raw")
    out = prepare(name, root, tmp_path / "prepared", tile=TILE, **options)
    args = ["train", "--config", str(TASKS / "loveda_rural_urban.yaml"), "--no-progress"]
    for s in tiny_overrides(out, tmp_path / "run"):
        args += ["--set", s]
    assert main(args) == 0
    assert "Urban" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ the tiler
def test_tile_grid_is_window_starts_and_never_pads():
    assert tile_starts(70, 32, 32) == [0, 32, 38]  # the last window shifted to end at the edge
    assert tile_starts(64, 32, 32) == [0, 32]
    assert tile_starts(50, 32, 16) == [0, 16, 18]
    assert tile_starts(32, 32, 32) == [0] and tile_starts(20, 32, 32) == []  # shorter than a tile: skipped
    for n in range(32, 140):
        assert tile_starts(n, 32, 24) == window_starts(n, 32, 24)


def test_fbp_band_order_nodata_and_grid(tmp_path):
    f = R.write_fbp(tmp_path / "raw" / "fbp", n_images=3)
    common = dict(regions=f["regions"], target_regions=["Yichun"], tile=TILE)
    out8 = prepare("fbp-cross-regional", f["root"], tmp_path / "p8", **common)
    out16 = prepare("fbp-cross-regional", f["root"], tmp_path / "p16", variant="16bit", **common)
    rows8, rows16 = read_manifest(out8), read_manifest(out16)
    assert {(r["row"], r["col"]) for r in rows8} == {(0, 0), (0, 18), (8, 0), (8, 18)}  # 40×50, no padding
    name = f["names"][1]
    src8 = read(f["root"] / "Image__8bit_NirRGB" / f"{name}.tiff")
    src16 = read(f["root"] / "Image_16bit_BGRNir" / f"{name}.tiff")
    for r8 in rows8:
        if Path(r8["source_file"]).stem != name or (r8["row"], r8["col"]) != (8, 18):
            continue
        tile8 = read(out8 / r8["image"])
        np.testing.assert_array_equal(tile8, src8[[3, 2, 1, 0], 8:40, 18:50])  # NIR,R,G,B → B,G,R,NIR
        r16 = next(r for r in rows16 if r["source_file"].endswith(f"{name}.tiff") and r["row"] == 8
                   and r["col"] == 18)
        np.testing.assert_array_equal(read(out16 / r16["image"]), src16[:, 8:40, 18:50])
        np.testing.assert_array_equal(tile8, np.clip(src16[:, 8:40, 18:50] // 4, 0, 255))
    first = next(r for r in rows8 if r["col"] == 0)
    mask = read(out8 / first["mask"])[0]
    assert (mask[:, :6] == 255).all() and (mask[:, 6:] != 255).any()  # no-data border → ignore
    info = load_dataset_info(out8)
    assert info.classes[0] == "industrial area" and info.palette[0] == [200, 0, 0] and len(info.classes) == 24
    assert info.dtype == "uint8" and load_dataset_info(out16).dtype == "uint16"
    assert info.sensors == {"Yichun": "GF-2", "Source-regions": "GF-2"}


def test_tiles_entirely_in_nodata_are_skipped(tmp_path):
    f = R.write_fbp(tmp_path / "raw" / "fbp", n_images=3, size=(40, 70), border=36)
    out = prepare("fbp-cross-regional", f["root"], tmp_path / "p", regions=f["regions"], target_regions=["Yichun"],
                  tile=TILE)
    rows = read_manifest(out)
    assert {r["col"] for r in rows} == {32, 38}  # col 0 lies in the 36-pixel no-data border
    assert preparation_details(out)["tiles_skipped_empty"] == 6


def test_images_smaller_than_the_tile_are_skipped_and_listed(tmp_path):
    lv = R.write_loveda(tmp_path / "raw")
    out = tmp_path / "out"
    with pytest.raises(PrepareError) as e:  # 40×50 images, 45-pixel tiles: nothing fits, no padding
        prepare("loveda", lv["root"], out, tile=45)
    assert_failed_cleanly(e, out, "got no tile", "smaller than the 45-pixel tile")
    R.write(lv["root"] / "Train" / "Rural" / "images_png" / "900.png", np.full((3, 20, 20), 9, np.uint8), "PNG")
    R.write(lv["root"] / "Train" / "Rural" / "masks_png" / "900.png", np.full((20, 20), 2, np.uint8), "PNG")
    ok = prepare("loveda", lv["root"], out, tile=TILE)
    assert preparation_details(ok)["scenes_smaller_than_tile"] == ["Train/Rural/images_png/900.png"]
    assert "smaller than the tile: Train/Rural/images_png/900.png" in summarize(ok)


def test_georeferencing_is_kept_per_window(tmp_path):
    w = R.write_whu_ohs(tmp_path / "raw")
    out = prepare("whu-ohs", w["root"], tmp_path / "p", tile=TILE)
    row = next(r for r in read_manifest(out) if r["row"] == 8 and r["col"] == 12 and r["domain"] == "Source")
    with rasterio.open(w["root"] / row["source_file"]) as src, rasterio.open(out / row["image"]) as tile:
        assert tile.crs == src.crs
        assert tile.transform == src.transform @ Affine.translation(12, 8)
        assert tile.count == 32 and tile.dtypes[0] == "int16"
    info = load_dataset_info(out)
    assert info.classes == ["Farmland", "Forest", "Grassland", "Waterbody", "Built-up land", "Unused land", "Ocean"]
    assert info.extra["reflectance_scale"] == 1.0e-4
    assert info.sensors == {"Source": "OHS", "Target": "OHS"}
    # the merge is a table: label 3 (woodland) and 6 (other forest land) → Forest, 24 → Ocean
    lab = read(w["root"] / row["source_file"].replace("image", "label"))[0, 8:40, 12:44]
    mask = read(out / row["mask"])[0]
    assert (mask[np.isin(lab, [3, 4, 5, 6])] == 1).all() and (mask[lab == 24] == 6).all()
    assert (mask[lab == 0] == 255).all()
    fine = prepare("whu-ohs", w["root"], tmp_path / "fine", tile=TILE, merge=False)
    assert len(load_dataset_info(fine).classes) == 24


def test_whu_ohs_regions(tmp_path):
    w = R.write_whu_ohs(tmp_path / "raw")
    regions = tmp_path / "regions.csv"
    regions.write_text("image,region\nS1,Changchun\nS2,Wuxi\nT1,Jilin\nT2_0001.tif,Shanghai\nO1,Baoding\n")
    out = prepare("whu-ohs", w["root"], tmp_path / "p", tile=TILE, regions=regions, target_regions="Jilin,Shanghai")
    assert load_dataset_info(out).extra["tiles"] == {"Source": {"train": 16, "val": 4, "test": 8},
                                                     "Jilin": {"test": 12}, "Shanghai": {"test": 4}}
    with pytest.raises(PrepareError) as e:
        prepare("whu-ohs", w["root"], tmp_path / "q", tile=TILE, regions=regions)
    assert_failed_cleanly(e, tmp_path / "q", "target_regions")


def test_flair_domains_splits_and_classes(tmp_path):
    fl = R.write_flair(tmp_path / "raw", domains=(["D004_2021", "D014_2020"], ["D012_2019"]))
    out = prepare("flair", fl["root"], tmp_path / "p", tile=TILE, val_domains=["D014_2020"])
    info = load_dataset_info(out)
    assert info.extra["tiles"] == {"D004_2021": {"train": 4}, "D014_2020": {"val": 4}, "D012_2019": {"test": 4}}
    assert len(info.classes) == 12 and info.classes[-1] == "plowed land" and info.bands == {"FLAIR": 4}
    row = read_manifest(out)[0]
    mask = read(out / row["mask"])[0]
    assert (mask[:3] == 255).all()  # classes > 12 are ignored
    with rasterio.open(out / row["image"]) as t:
        assert t.count == 4 and t.crs.to_epsg() == 2154


def test_isprs_classes_and_band_choices(tmp_path):
    p = R.write_potsdam(tmp_path / "raw")
    out = prepare("potsdam", p["root"], tmp_path / "p", tile=TILE)
    info = load_dataset_info(out)
    assert info.classes == ["impervious surfaces", "building", "low vegetation", "tree", "car", "clutter"]
    assert info.sensors == {"Potsdam": "ISPRS-Potsdam-RGB"} and info.bands == {"ISPRS-Potsdam-RGB": 3}
    rgbir = prepare("potsdam", p["root"], tmp_path / "rgbir", tile=TILE, bands="rgbir", labels="full",
                    alternate_labels="eroded")
    info = load_dataset_info(rgbir)
    assert info.bands == {"ISPRS-Potsdam": 4}
    assert info.extra["preparation"]["alternate_masks"] == {"eroded": "masks_eroded/"}
    row = read_manifest(rgbir)[0]
    tid = Path(row["source_file"]).stem.split("_", 2)[2].rsplit("_", 1)[0]
    np.testing.assert_array_equal(read(rgbir / row["image"]), p["truth"][tid]["image"][:, :TILE, :TILE])
    with rasterio.open(rgbir / row["image"]) as t:
        assert t.crs.to_epsg() == 32633 and t.transform == p["truth"][tid]["transform"]


def test_loveda_target_domain_and_test_without_masks(tmp_path):
    lv = R.write_loveda(tmp_path / "raw")
    out = prepare("loveda", lv["root"], tmp_path / "p", tile=TILE)
    assert load_dataset_info(out).extra["tiles"] == {"Rural": {"train": 8, "val": 4}, "Urban": {"test": 4}}
    mirror = prepare("loveda", lv["root"], tmp_path / "m", tile=TILE, targets="none")
    assert load_dataset_info(mirror).extra["tiles"]["Urban"] == {"train": 8, "val": 4}
    row = next(r for r in read_manifest(out) if r["row"] == 8)
    assert (read(out / row["mask"])[0][-5:] == 255).all()  # mask 0 = no-data


def test_openearthmap_continents_table_and_override(tmp_path):
    table = list(csv.DictReader(open(resource("openearthmap_continents.csv"), encoding="utf-8")))
    assert len(table) == 97 and all(r["source"] and r["continent"] for r in table)
    assert {r["continent"] for r in table} == {"Europe", "Asia", "Africa", "North America", "South America", "Oceania"}
    oem = R.write_openearthmap(tmp_path / "raw")
    out = prepare("openearthmap", oem["root"], tmp_path / "p", tile=TILE)
    info = load_dataset_info(out)
    assert info.extra["tiles"]["Europe"] == {"test": 12}  # aachen_1 (train list), aachen_2 (val), paris_1 → test
    assert set(preparation_details(out)["regions"]["Europe"]) == {"aachen", "paris"}
    over = tmp_path / "cont.csv"
    over.write_text("region,continent\npariS_x,Europe\ntokyo,Europe\n")
    out2 = prepare("openearthmap", oem["root"], tmp_path / "p2", tile=TILE, continents=over)
    assert "Asia" not in load_dataset_info(out2).sensors


def test_syndrone_split_by_town_without_lists(tmp_path):
    by_height = prepare("syndrone", R.write_syndrone(tmp_path / "raw", splits=False)["root"], tmp_path / "t",
                        tile=TILE, domain_by="height")
    info = load_dataset_info(by_height)
    assert info.extra["tiles"] == {"height20m": {"train": 8, "test": 8}, "height50m": {"train": 8, "test": 8}}


def test_summary_and_cli(tmp_path, capsys):
    lv = R.write_loveda(tmp_path / "raw")
    parser = add_prepare_arguments(argparse.ArgumentParser())
    code = run_prepare(parser.parse_args(["loveda", "--root", str(lv["root"]), "--out", str(tmp_path / "p"),
                                          "--tile", "32", "--no-progress"]))
    printed = capsys.readouterr().out
    assert code == 0
    assert "Rural" in printed and "Urban" in printed and "class pixels (train" in printed and "background" in printed
    assert printed.strip() == summarize(tmp_path / "p").strip()
    # a flag the preparer does not take, and a wrong layout: one line on stderr, exit code 2
    code = run_prepare(parser.parse_args(["loveda", "--root", str(lv["root"]), "--out", str(tmp_path / "q"),
                                          "--continents", "x.csv"]))
    err = capsys.readouterr().err
    assert code == 2 and "--continents does not apply to loveda" in err and err.count("\n") == 1
    code = run_prepare(parser.parse_args(["openearthmap", "--root", str(lv["root"]), "--out", str(tmp_path / "q")]))
    err = capsys.readouterr().err
    assert code == 2 and "train.txt" in err and err.count("\n") == 1 and not (tmp_path / "q").exists()
    assert run_prepare(parser.parse_args(["--list"])) == 0
    listed = capsys.readouterr().out
    assert all(n in listed for n in available())


def test_class_tables_ship_and_parse():
    for name in ("fbp_classes.csv", "fbp_classes_color.csv", "whu_ohs_merge.csv", "flair_classes.csv",
                 "loveda_classes.csv", "isprs_classes.csv", "openearthmap_classes.csv", "syndrone_classes.csv",
                 "syndrone_coarse_classes.csv"):
        t = LabelTable.from_csv(resource(name))
        assert t.classes and len(t.palette) == len(t.classes)
    assert LabelTable.from_csv(resource("syndrone_classes.csv")).num_classes == 28
    assert LabelTable.from_csv(resource("syndrone_coarse_classes.csv")).num_classes == 7
    assert LabelTable.from_csv(resource("fbp_classes_color.csv")).kind == "color"


# ----------------------------------------------------------------------------------------- wrong inputs
def test_wrong_band_count(tmp_path):
    fl = R.write_flair(tmp_path / "raw", domains=(["D004_2021"], ["D012_2019"]))
    bad = next((fl["root"] / "flair_aerial_train").rglob("IMG_*.tif"))
    R.write(bad, np.ones((4, 33, 40), dtype=np.uint8))
    out = tmp_path / "out"
    with pytest.raises(PrepareError) as e:
        prepare("flair", fl["root"], out, tile=TILE)
    assert_failed_cleanly(e, out, bad.name, "4 band(s), expected 5", "R,G,B,NIR,elevation")


def test_label_value_outside_the_class_table(tmp_path):
    f = R.write_fbp(tmp_path / "raw" / "fbp", n_images=3)
    last = f["root"] / "Annotation__index" / f"{f['names'][2]}_24label.png"
    lab = read(last)[0]
    lab[20, 30] = 30
    R.write(last, lab, driver="PNG")
    out = tmp_path / "out"
    with pytest.raises(PrepareError) as e:  # fails on the last image, after tiles of the others were written
        prepare("fbp-cross-regional", f["root"], out, regions=f["regions"], target_regions=["Yichun"], tile=TILE)
    assert_failed_cleanly(e, out, last.name, "label value 30", "fbp_classes.csv")
    ok = prepare("fbp-cross-regional", f["root"], out, regions=f["regions"], target_regions=["Yichun"], tile=TILE,
                 unknown_labels="ignore")
    assert ok.is_dir()


def test_image_without_mask(tmp_path):
    lv = R.write_loveda(tmp_path / "raw")
    (lv["root"] / "Train" / "Rural" / "masks_png" / "1.png").unlink()
    out = tmp_path / "out"
    with pytest.raises(PrepareError) as e:
        prepare("loveda", lv["root"], out, tile=TILE)
    assert_failed_cleanly(e, out, "1.png", "image without label", "masks_png")


def test_unreadable_tiff(tmp_path):
    w = R.write_whu_ohs(tmp_path / "raw")
    bad = w["root"] / "ts" / "image" / "T2_0001.tif"
    bad.write_bytes(b"II*\x00 this is not a tiff")
    out = tmp_path / "out"
    with pytest.raises(PrepareError) as e:
        prepare("whu-ohs", w["root"], out, tile=TILE)
    assert_failed_cleanly(e, out, "T2_0001.tif", "cannot read image")


def test_empty_domain(tmp_path):
    lv = R.write_loveda(tmp_path / "raw")
    for p in (lv["root"] / "Val" / "Urban" / "images_png").iterdir():
        p.unlink()
    out = tmp_path / "out"
    with pytest.raises(PrepareError) as e:
        prepare("loveda", lv["root"], out, tile=TILE)
    assert_failed_cleanly(e, out, "Val/Urban/images_png", "empty domain Urban")
    f = R.write_fbp(tmp_path / "raw" / "fbp", n_images=3)
    with pytest.raises(PrepareError) as e:
        prepare("fbp-cross-regional", f["root"], out, regions=f["regions"], target_regions=["Yichun", "Lhasa"],
                tile=TILE)
    assert_failed_cleanly(e, out, "Lhasa", "empty domain")
    # every tile of a domain in no-data: refused by name
    with pytest.raises(PrepareError) as e:
        prepare("fbp-cross-regional", f["root"], out, regions=f["regions"], target_regions=["Yichun"], tile=TILE,
                nodata=None, classes=_all_ignored_except(tmp_path, 99))
    assert_failed_cleanly(e, out, "got no tile")


def _all_ignored_except(tmp_path: Path, value: int) -> Path:
    path = tmp_path / "classes.csv"
    path.write_text("value,name,class\n" + "".join(f"{v},c{v},ignore\n" for v in range(25)) + f"{value},x,x\n")
    return path


def test_missing_region_table(tmp_path):
    f = R.write_fbp(tmp_path / "raw" / "fbp", n_images=3)
    out = tmp_path / "out"
    with pytest.raises(PrepareError) as e:
        prepare("fbp-cross-regional", f["root"], out, tile=TILE)
    assert_failed_cleanly(e, out, "regions", "image,region")
    partial = tmp_path / "partial.csv"
    partial.write_text(f"image,region\n{f['names'][0]},Yichun\n")
    with pytest.raises(PrepareError) as e:
        prepare("fbp-cross-regional", f["root"], out, regions=partial, tile=TILE)
    assert_failed_cleanly(e, out, "no region for image", "add a row")
    assert any(n in str(e.value) for n in f["names"][1:])
    with pytest.raises(PrepareError) as e:
        prepare("fbp-cross-regional", f["root"], out, regions=tmp_path / "nope.csv", tile=TILE)
    assert_failed_cleanly(e, out, "nope.csv", "not found")


WRONG_LAYOUT = {
    "fbp": "Image__8bit_NirRGB",
    "whu-ohs": "tr/image/",
    "flair": "img/IMG_<id>.tif",
    "loveda": "images_png",
    "potsdam": "top_potsdam_<x>_<y>_RGBIR.tif",
    "vaihingen": "top/top_mosaic_09cm_area<N>.tif",
    "potsdam-vaihingen": "top_potsdam_<x>_<y>_RGBIR.tif",
    "openearthmap": "train.txt",
    "syndrone": "height<H>m/rgb",
}


@pytest.mark.parametrize("name", sorted(WRONG_LAYOUT))
def test_wrong_layout_names_the_missing_folder_or_pattern(name, tmp_path):
    raw = tmp_path / "raw"
    (raw / "something_else").mkdir(parents=True)
    out = tmp_path / "out"
    with pytest.raises(PrepareError) as e:
        prepare(name, raw, out, tile=TILE)
    assert_failed_cleanly(e, out, WRONG_LAYOUT[name])


def test_megacities_layout_errors(tmp_path):
    f = R.write_fbp(tmp_path / "raw" / "fbp", n_images=3)
    (tmp_path / "mega" / "Beijing").mkdir(parents=True)
    out = tmp_path / "out"
    with pytest.raises(PrepareError) as e:  # another layout: name the folders the published one has
        prepare("fbp", f["root"], out, megacities_root=tmp_path / "mega", tile=TILE)
    assert_failed_cleanly(e, out, "Image__8bit_NirRGB")
    with pytest.raises(PrepareError) as e:  # no megacities anywhere under the root
        prepare("fbp", f["root"], out, tile=TILE)
    assert_failed_cleanly(e, out, "megacities_root", "label_dense__color")
    m = R.write_megacities(tmp_path / "m2")
    mapping = tmp_path / "map.csv"
    mapping.write_text("city,sensor,images,labels,band_order\n"
                       "Wuhan,GF-1,C-megacities/Image__8bit_NirRGB,C-megacities/label_dense__color,BGRN\n"
                       "Beijing,Sentinel-2,C-megacities/Image__8bit_NirRGB,C-megacities/label_dense__color,x\n")
    with pytest.raises(PrepareError) as e:
        prepare("fbp", f["root"], out, megacities_root=m["root"], megacities_map=mapping, tile=TILE)
    assert_failed_cleanly(e, out, "map.csv row 3", "band_order 'x'")


def test_failed_prepare_keeps_the_previous_output(tmp_path):
    lv = R.write_loveda(tmp_path / "raw")
    out = prepare("loveda", lv["root"], tmp_path / "out", tile=TILE)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    (lv["root"] / "Val" / "Rural" / "masks_png" / next(iter(
        sorted((lv["root"] / "Val" / "Rural" / "masks_png").iterdir()))).name).unlink()
    with pytest.raises(PrepareError):
        prepare("loveda", lv["root"], out, tile=TILE)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_unknown_dataset_and_option(tmp_path):
    with pytest.raises(PrepareError, match="unknown dataset 'nope'; available: fbp"):
        prepare("nope", tmp_path, tmp_path / "o")
    with pytest.raises(PrepareError, match="unknown option.*colour") as e:
        prepare("loveda", tmp_path, tmp_path / "o", colour=1)
    assert "tile" in str(e.value)
    assert "task" not in options_of("fbp-cross-regional") and options_of("fbp")["task"] == "cross-sensor"
    with pytest.raises(PrepareError, match="would replace the release folder"):
        prepare("loveda", tmp_path / "a" / "b", tmp_path / "a")


def test_label_table_decoding():
    t = LabelTable.from_rows("t.csv", [{"value": "0 0 0", "class": ""}, {"value": "255 0 0", "class": "red"},
                                       {"value": "0 0 255", "class": "blue", "color": "#0000ff"}])
    raw = np.array([[[255, 0, 250]], [[0, 0, 0]], [[0, 255, 4]]], dtype=np.uint8)  # pixels: red, blue, (250,0,4)
    with pytest.raises(PrepareError, match=r"label colour \(250, 0, 4\) \(1 pixel\(s\)\).*nearest table colour "
                                           r"\(255, 0, 0\) differs by 5.*--color-tolerance 5"):
        t.decode(raw, "x.tif")
    np.testing.assert_array_equal(t.decode(raw, "x.tif", tolerance=5), [[0, 1, 0]])
    np.testing.assert_array_equal(t.decode(raw, "x.tif", unknown="ignore"), [[0, 1, 255]])
    ignore = np.array([[False, False, True]])
    np.testing.assert_array_equal(t.decode(raw, "x.tif", ignore=ignore), [[0, 1, 255]])
    assert t.palette[1] == [0, 0, 255] and not math.isnan(t.palette[0][0])
    idx = LabelTable.from_rows("i.csv", [{"value": "7", "class": "a"}, {"value": "300", "class": "b"}])
    np.testing.assert_array_equal(idx.decode(np.array([[300, 7]], dtype=np.uint16), "y"), [[1, 0]])
    with pytest.raises(PrepareError, match=r"label value 8 .*--unknown-labels ignore"):
        idx.decode(np.array([[300, 8]], dtype=np.uint16), "y")


def test_near_colours_take_the_nearest_table_colour():
    """Many distinct noisy colours at once, against a per-pixel loop over the table (the obvious implementation)."""
    table = LabelTable.from_csv(resource("isprs_classes.csv"))
    colors = np.array([tuple(v) for v in table.values])
    index = {c: i for i, c in enumerate(table.classes)}
    cls = np.array([255 if t is None else index[t] for t in table.targets])
    rng = np.random.default_rng(0)
    truth = rng.integers(0, len(colors), size=(30, 40))
    rgb = np.clip(colors[truth].astype(int) + rng.integers(-40, 41, size=(30, 40, 3)), 0, 255).astype(np.uint8)
    got = table.decode(rgb.transpose(2, 0, 1), "noisy.tif", tolerance=64)
    want = np.empty(truth.shape, dtype=np.int64)
    for (i, j), _ in np.ndenumerate(truth):
        dist = np.abs(colors.astype(int) - rgb[i, j].astype(int)).max(axis=1)
        want[i, j] = cls[dist.argmin()] if dist.min() <= 64 else -1
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, cls[truth])  # ±40 around ISPRS colours: always the drawn class


def test_nonfinite_pixels_are_written_as_nodata_or_refused(tmp_path):
    """A float release with NaN/inf values: those pixels get mask 255 and image 0 in every band, and the file is
    named in the summary; nonfinite="error" refuses it in one line naming the file."""
    w = R.write_whu_ohs(tmp_path / "raw", files={"tr": ["S1_0001"], "ts": ["T1_0001"]})
    images = {}
    for rel in ("tr/image/S1_0001.tif", "ts/image/T1_0001.tif"):
        img = read(w["root"] / rel).astype(np.float32) / 10000
        if rel.startswith("tr"):
            img[3, 5, 7], img[0, 20, 30], img[:, 33, 2] = np.nan, np.inf, -np.inf
        R.write(w["root"] / rel, img)
        images[rel] = img
    out = prepare("whu-ohs", w["root"], tmp_path / "out", tile=TILE)
    bad = ~np.isfinite(images["tr/image/S1_0001.tif"]).all(axis=0)
    assert bad.sum() == 3
    for row in read_manifest(out):
        if not row["source_file"].startswith("tr/"):
            continue
        win = (slice(row["row"], row["row"] + TILE), slice(row["col"], row["col"] + TILE))
        tile, mask = read(out / row["image"]), read(out / row["mask"])[0]
        assert np.isfinite(tile).all()
        assert (mask[bad[win]] == 255).all() and (tile[:, bad[win]] == 0).all()
        np.testing.assert_array_equal(tile[:, ~bad[win]], images["tr/image/S1_0001.tif"][:, win[0], win[1]][:, ~bad[win]])
    details = preparation_details(out)
    assert details["nonfinite_pixels"] == {"tr/image/S1_0001.tif": 3}
    assert "tr/image/S1_0001.tif: 3 pixel(s) with NaN/inf values written as no-data" in summarize(out)
    with pytest.raises(PrepareError) as e:
        prepare("whu-ohs", w["root"], tmp_path / "strict", tile=TILE, nonfinite="error")
    assert_failed_cleanly(e, tmp_path / "strict", "S1_0001.tif", "NaN/inf")


def test_zipped_release_for_a_preparer_that_needs_it_extracted(tmp_path):
    sd = R.write_syndrone(tmp_path / "raw")
    archive = tmp_path / "zips" / "Town01_Opt_120_color.zip"
    archive.parent.mkdir()
    archive.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip, as downloaded
    with pytest.raises(PrepareError) as e:
        prepare("syndrone", archive.parent, tmp_path / "out", tile=TILE)
    assert_failed_cleanly(e, tmp_path / "out", "Town01_Opt_120_color.zip", "extract them first")
    with pytest.raises(PrepareError) as e:
        prepare("syndrone", archive, tmp_path / "out", tile=TILE)
    assert_failed_cleanly(e, tmp_path / "out", "is a zip archive", "extract it")
    assert prepare("syndrone", sd["root"], tmp_path / "ok", tile=TILE).is_dir()
