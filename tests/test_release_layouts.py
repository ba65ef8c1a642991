"""The releases as they are really published: each fixture (tests/fixtures/<release>.py) follows the public sources
its docstring names, zipped downloads and known defects included; ``rsmoe prepare`` must read them with the options
the README shows, and every prepared mask must equal the truth the fixture drew, pixel by pixel.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pytest

from fixtures import fbp as F
from fixtures import isprs as I
from fixtures import releases as R
from fixtures.checks import assert_failed_cleanly, expected_mask, read, tiles
from rsmoe.data.datasets import PrepareError, prepare
from rsmoe.data.datasets.summary import preparation_details
from rsmoe.data.prepared import load_dataset_info
from rsmoe.prepare_cli import add_prepare_arguments, run_prepare

TILE = R.TILE


def cli(*args: str) -> int:
    parser = add_prepare_arguments(argparse.ArgumentParser())
    return run_prepare(parser.parse_args([*args, "--no-progress"]))


def assert_masks_equal_truth(out: Path, truth_of, variant: str = "masks") -> int:
    """Every tile's mask (or alternate mask folder ``variant``) equals ``truth_of(row)``; returns the tile count."""
    rows = tiles(out)
    for row in rows:
        mask = read(out / (variant + row["mask"][len("masks"):]))[0]
        np.testing.assert_array_equal(mask, truth_of(row), err_msg=f"{row['mask']} ({row['source_file']})")
    return len(rows)


def isprs_truth(truth: dict, key: str, pattern):
    def of(row):
        tid = pattern.match(Path(row["source_file"]).stem).group(1)
        return expected_mask(truth[tid][key], row, TILE)
    return of


POTSDAM_ID = re.compile(r"top_potsdam_(\d+_\d+)_")
VAIHINGEN_ID = re.compile(r"top_mosaic_09cm_area(\d+)")


# ----------------------------------------------------------------------------------------------- ISPRS Potsdam
def test_potsdam_as_downloaded_eroded_labels_pixel_by_pixel(tmp_path):
    """Potsdam.zip with its inner zips as --root (README: rsmoe prepare potsdam --root RAW/Potsdam): the eroded
    labels, black boundaries ignored, in every tile; the defective full labels are never needed."""
    p = R.write_potsdam(tmp_path / "raw")
    out = tmp_path / "out"
    assert cli("potsdam", "--root", str(p["root"]), "--out", str(out), "--tile", str(TILE)) == 0
    assert load_dataset_info(out).extra["tiles"] == {"Potsdam": {"train": 16, "test": 4}}
    assert assert_masks_equal_truth(out, isprs_truth(p["truth"], "eroded", POTSDAM_ID)) == 20
    assert "alternate_masks" not in load_dataset_info(out).extra["preparation"] and not (out / "masks_full").exists()
    row = tiles(out)[0]
    tid = POTSDAM_ID.match(Path(row["source_file"]).stem).group(1)
    np.testing.assert_array_equal(read(out / row["image"]), p["truth"][tid]["image"][:3, :TILE, :TILE])


@pytest.mark.parametrize("layout,as_root", [("zipped", "zip"), ("inner", "root"), ("extracted", "root")])
def test_potsdam_every_layout_gives_the_same_preparation(tmp_path, layout, as_root):
    """The outer zip itself, the inner zips, and everything unpacked in place: same tiles, same pixels."""
    ref = prepare("potsdam", R.write_potsdam(tmp_path / "ref")["root"], tmp_path / "ref_out", tile=TILE)
    p = R.write_potsdam(tmp_path / layout, layout=layout)
    out = prepare("potsdam", p[as_root], tmp_path / "out", tile=TILE)
    ref_rows, rows = tiles(ref), tiles(out)
    assert [(Path(r["source_file"]).name, r["row"], r["col"]) for r in rows] == \
        [(Path(r["source_file"]).name, r["row"], r["col"]) for r in ref_rows]
    for a, b in zip(ref_rows, rows):
        np.testing.assert_array_equal(read(ref / a["image"]), read(out / b["image"]))
        np.testing.assert_array_equal(read(ref / a["mask"]), read(out / b["mask"]))


def test_potsdam_label_variant_not_asked_for_is_never_read(tmp_path):
    p = R.write_potsdam(tmp_path / "raw", layout="extracted")
    defective = p["root"] / f"top_potsdam_{I.LOSSY_TILE}_label.tif"
    defective.write_bytes(b"II*\x00 not a tiff at all")
    out = prepare("potsdam", p["root"], tmp_path / "eroded", tile=TILE)  # eroded: the full label is not opened
    assert assert_masks_equal_truth(out, isprs_truth(p["truth"], "eroded", POTSDAM_ID)) == 20
    with pytest.raises(PrepareError) as e:
        prepare("potsdam", p["root"], tmp_path / "full", tile=TILE, labels="full")
    assert_failed_cleanly(e, tmp_path / "full", defective.name, "cannot read")


def test_potsdam_defective_full_labels_decode_with_the_default_tolerance(tmp_path):
    """4_12 (colours off by up to ±30) and 6_7 (cars (252,255,0)) decode to the true classes pixel by pixel."""
    p = R.write_potsdam(tmp_path / "raw")
    out = prepare("potsdam", p["zip"], tmp_path / "full", tile=TILE, labels="full", split_set="official")
    assert assert_masks_equal_truth(out, isprs_truth(p["truth"], "label", POTSDAM_ID)) == 24  # 6 tiles × 4
    note = next(n for n in preparation_details(out)["notes"] if "matched to the nearest table colour" in n)
    assert note.startswith("2 label file(s)") and f"top_potsdam_{I.LOSSY_TILE}_label.tif" in note
    assert f"top_potsdam_{I.CAR_TILE}_label.tif" in note
    cars = [r for r in tiles(out) if f"_{I.CAR_TILE}_" in r["source_file"]]
    assert cars and any((read(out / r["mask"])[0] == I.CAR).any() for r in cars)
    with pytest.raises(PrepareError) as e:  # exact colours only: the error says how to accept near colours
        prepare("potsdam", p["zip"], tmp_path / "exact", tile=TILE, labels="full", split_set="official",
                color_tolerance=0)
    assert_failed_cleanly(e, tmp_path / "exact", f"top_potsdam_{I.LOSSY_TILE}_label.tif", "--color-tolerance",
                          "nearest table colour")
    assert "unknown_labels" not in str(e.value) and "--unknown-labels" not in str(e.value)
    suggested = int(str(e.value).split("--color-tolerance ")[1].split()[0])
    assert suggested <= I.LOSSY_SPREAD


# --------------------------------------------------------------------------------------------- ISPRS Vaihingen
@pytest.mark.parametrize("layout", ["zipped", "extracted"])
def test_vaihingen_full_labels_at_the_zip_root_are_found(tmp_path, layout):
    """ground_truth_COMPLETE.zip holds its labels at the zip root; unpacked in place they sit beside top/."""
    v = R.write_vaihingen(tmp_path / "raw", layout=layout)
    full = prepare("vaihingen", v["root"], tmp_path / "full", tile=TILE, labels="full", split_set="official")
    assert load_dataset_info(full).extra["tiles"] == {"Vaihingen": {"train": 12, "test": 8}}
    assert assert_masks_equal_truth(full, isprs_truth(v["truth"], "label", VAIHINGEN_ID)) == 20
    eroded = prepare("vaihingen", v["root"], tmp_path / "eroded", tile=TILE, split_set="official")
    assert assert_masks_equal_truth(eroded, isprs_truth(v["truth"], "eroded", VAIHINGEN_ID)) == 20
    assert not any("area9" in r["source_file"] for r in tiles(eroded))  # area 9: an eroded label without image


def test_vaihingen_alternate_masks_exist_for_every_listed_tile(tmp_path):
    v = R.write_vaihingen(tmp_path / "raw", layout="extracted")
    plain = prepare("vaihingen", v["root"], tmp_path / "plain", tile=TILE)
    assert "alternate_masks" not in load_dataset_info(plain).extra["preparation"]
    assert not (plain / "masks_full").exists()
    both = prepare("vaihingen", v["root"], tmp_path / "both", tile=TILE, alternate_labels="full")
    assert load_dataset_info(both).extra["preparation"]["alternate_masks"] == {"full": "masks_full/"}
    assert assert_masks_equal_truth(both, isprs_truth(v["truth"], "label", VAIHINGEN_ID), "masks_full") == 12
    (v["root"] / "top_mosaic_09cm_area3.tif").unlink()  # the full label of a listed area is missing
    with pytest.raises(PrepareError) as e:
        prepare("vaihingen", v["root"], tmp_path / "bad", tile=TILE, alternate_labels="full")
    assert_failed_cleanly(e, tmp_path / "bad", "top_mosaic_09cm_area3.tif", "without full label", "alternate_labels")


def test_potsdam_to_vaihingen_from_the_downloaded_zips(tmp_path):
    """One folder holding Potsdam.zip and the three Vaihingen zips (README: rsmoe prepare potsdam-vaihingen)."""
    R.write_potsdam(tmp_path / "ISPRS")
    v = R.write_vaihingen(tmp_path / "ISPRS")
    out = tmp_path / "out"
    assert cli("potsdam-vaihingen", "--root", str(tmp_path / "ISPRS"), "--out", str(out), "--tile", str(TILE)) == 0
    info = load_dataset_info(out)
    assert info.extra["tiles"] == {"Potsdam": {"train": 20, "val": 4}, "Vaihingen": {"test": 8}}
    vai = [r for r in tiles(out) if r["domain"] == "Vaihingen"]
    for r in vai:
        area = VAIHINGEN_ID.match(Path(r["source_file"]).stem).group(1)
        np.testing.assert_array_equal(read(out / r["mask"])[0], expected_mask(v["truth"][area]["eroded"], r, TILE))


# ------------------------------------------------------------------------------------------------------ LoveDA
def test_loveda_zips_as_root_equal_the_extracted_folders(tmp_path):
    z = R.write_loveda(tmp_path / "zips", zipped=True)
    x = R.write_loveda(tmp_path / "folders")
    out_z = tmp_path / "out_z"
    assert cli("loveda", "--root", str(z["root"]), "--out", str(out_z), "--tile", str(TILE)) == 0
    out_x = prepare("loveda", x["root"], tmp_path / "out_x", tile=TILE)
    assert load_dataset_info(out_z).extra["tiles"] == {"Rural": {"train": 8, "val": 4}, "Urban": {"test": 4}}

    def truth(row):  # mask 0 = no-data → 255; classes 1..7 → 0..6
        member = row["source_file"].split(".zip/", 1)[-1]
        return expected_mask(z["truth"][member], row, TILE, offset=-1, ignore=(0,))
    assert assert_masks_equal_truth(out_z, truth) == 16
    for a, b in zip(tiles(out_z), tiles(out_x)):
        assert a["source_file"] == f"{b['source_file'].split('/')[0]}.zip/{b['source_file']}"
        np.testing.assert_array_equal(read(out_z / a["image"]), read(out_x / b["image"]))


# ---------------------------------------------------------------------------------------------------- SynDrone
# LTTM/Syndrone, branch synth2real, utils/data.py: idmap (raw tag → fine index) and coarse_mapping() (fine index →
# coarse index; -1 = ignored), written out here independently of rsmoe's tables.
SYNDRONE_IDMAP = {1: 0, 2: 1, 3: 2, 5: 3, 6: 4, 7: 5, 8: 6, 9: 7, 11: 8, 12: 9, 13: 10, 14: 11, 15: 12, 16: 13, 17: 14,
                  18: 15, 19: 16, 20: 17, 21: 18, 22: 19, 40: 20, 41: 21, 100: 22, 101: 23, 102: 24, 103: 25, 104: 26,
                  105: 27}
SYNDRONE_FINE2COARSE = [4, 4, 5, 5, 0, 0, 0, 1, 4, 5, -1, 0, 4, 0, 5, 5, 5, 5, 6, 1, 2, 2, 3, 3, 3, 3, 3, 3]


@pytest.mark.parametrize("labels", ["fine", "coarse"])
def test_syndrone_classes_are_the_release_loaders(tmp_path, labels):
    sd = R.write_syndrone(tmp_path / "raw")
    out = prepare("syndrone", sd["root"], tmp_path / labels, tile=TILE, labels=labels)
    info = load_dataset_info(out)
    if labels == "coarse":
        assert info.classes == ["road", "nature", "person", "vehicle", "construction", "obstacle", "water"]
        lut = {tag: (255 if SYNDRONE_FINE2COARSE[i] < 0 else SYNDRONE_FINE2COARSE[i])
               for tag, i in SYNDRONE_IDMAP.items()}
    else:
        assert len(info.classes) == 28 and info.classes[10] == "sky" and info.classes[14] == "guard rail"
        lut = dict(SYNDRONE_IDMAP)

    def truth(row):
        sem = read(sd["root"] / row["source_file"].replace("/rgb/", "/semantic/").replace(".jpg", ".png"))[0]
        win = sem[row["row"]:row["row"] + TILE, row["col"]:row["col"] + TILE]
        return np.vectorize(lambda t: lut.get(int(t), 255))(win)
    assert assert_masks_equal_truth(out, truth) == 32  # 2 towns × 2 heights × 2 frames × 4 tiles
    if labels == "coarse":  # the release ignores sky and calls guard rail an obstacle
        assert lut[13] == 255 and lut[17] == info.classes.index("obstacle")


# ------------------------------------------------------------------------------------------ Five-Billion-Pixels
def test_fbp_cross_sensor_on_the_published_megacities_layout(tmp_path):
    """One folder above both releases: the GF-2 images are the Image__8bit_NirRGB with Annotation__index beside
    it, the targets the C-megacities one with label_dense__color beside it; cities by the DPA README's file list."""
    raw = tmp_path / "raw"
    R.write_fbp(raw / "Five-Billion-Pixels", n_images=3)
    m = R.write_megacities(raw)
    out = tmp_path / "out"
    assert cli("fbp-cross-sensor", "--root", str(raw), "--out", str(out), "--tile", str(TILE)) == 0
    info = load_dataset_info(out)
    assert info.sensors == {"GF-2": "GF-2", "PlanetScope": "PlanetScope", "GF-1": "GF-1", "Sentinel-2": "Sentinel-2"}
    rows = tiles(out)
    assert {r["source_file"].split("/")[0] for r in rows if r["domain"] == "GF-2"} == {"Five-Billion-Pixels"}
    targets = [r for r in rows if r["domain"] != "GF-2"]
    assert {Path(r["source_file"]).stem for r in targets} == set(F.MEGACITY_FILES)
    for r in targets:
        stem = Path(r["source_file"]).stem
        assert r["domain"] == F.MEGACITY_FILES[stem][1]
        np.testing.assert_array_equal(read(out / r["mask"])[0],
                                      expected_mask(m["truth"][stem], r, TILE, offset=-1, ignore=(0,)))
        nrgb = read(m["base"] / "Image__8bit_NirRGB" / f"{stem}.tif")
        np.testing.assert_array_equal(read(out / r["image"]),
                                      nrgb[[3, 2, 1, 0], r["row"]:r["row"] + TILE, r["col"]:r["col"] + TILE])


def test_megacities_map_rows_may_name_files(tmp_path):
    f = R.write_fbp(tmp_path / "fbp", n_images=3)
    m = R.write_megacities(tmp_path / "mega")
    beijing, wuhan = "T50TMK_20210929T030539", "GF1_PMS1_E114.0_N30.5_20160328_L1A0001492006-MSS1"
    mapping = tmp_path / "map.csv"
    mapping.write_text("city,sensor,images,labels,band_order\n"
                       f"Beijing,Sentinel-2,C-megacities/Image__8bit_NirRGB/{beijing}.tif,"
                       f"C-megacities/label_dense__color/{beijing}_dense.tif,NRGB\n"
                       f"Wuhan,GF-1,C-megacities/Image__8bit_NirRGB/{wuhan}.tif,C-megacities/label_dense__color,\n")
    out = prepare("fbp", f["root"], tmp_path / "out", megacities_root=m["root"], megacities_map=mapping, tile=TILE)
    assert set(load_dataset_info(out).sensors) == {"GF-2", "GF-1", "Sentinel-2"}
    for r in tiles(out):
        stem = Path(r["source_file"]).stem
        if r["domain"] != "GF-2":
            np.testing.assert_array_equal(read(out / r["mask"])[0],
                                          expected_mask(m["truth"][stem], r, TILE, offset=-1, ignore=(0,)))


def test_megacities_file_outside_the_published_list_asks_for_a_map(tmp_path):
    f = R.write_fbp(tmp_path / "fbp", n_images=3)
    m = R.write_megacities(tmp_path / "mega")
    stray = m["base"] / "Image__8bit_NirRGB" / "unknown_scene.tif"
    stray.write_bytes((m["base"] / "Image__8bit_NirRGB" / "T50TMK_20210929T030539.tif").read_bytes())
    with pytest.raises(PrepareError) as e:
        prepare("fbp", f["root"], tmp_path / "out", megacities_root=m["root"], tile=TILE)
    assert_failed_cleanly(e, tmp_path / "out", "unknown_scene.tif", "x-ytong/DPA", "megacities_map")


# ---------------------------------------------------------------------------------------------------- WHU-OHS
WHU_MERGE = {0: 255, **{v: 0 for v in (1, 2)}, **{v: 1 for v in range(3, 7)}, **{v: 2 for v in range(7, 10)},
             **{v: 3 for v in range(10, 15)}, **{v: 4 for v in range(15, 18)}, **{v: 5 for v in range(18, 24)}, 24: 6}


def test_whu_ohs_regions_are_the_release_source_and_target_images(tmp_path):
    w = R.write_whu_ohs(tmp_path / "raw")
    out = tmp_path / "out"
    assert cli("whu-ohs", "--root", str(w["root"]), "--out", str(out), "--tile", str(TILE)) == 0
    rows = tiles(out)
    by_domain = {d: sorted({Path(r["source_file"]).stem for r in rows if r["domain"] == d}) for d in ("Source", "Target")}
    assert by_domain == {"Source": ["S1_0001", "S1_0002", "S1_0003", "S1_0004", "S2_0001"],
                         "Target": ["T1_0001", "T1_0002", "T1_0003", "T2_0001"]}
    assert {r["split"] for r in rows if r["domain"] == "Target"} == {"test"}
    assert {(Path(r["source_file"]).stem, r["split"]) for r in rows if r["domain"] == "Source"} == {
        ("S1_0001", "train"), ("S1_0002", "train"), ("S2_0001", "train"), ("S1_0003", "val"), ("S1_0004", "test")}

    def truth(row):
        folder, _, name = row["source_file"].split("/")
        win = w["truth"][f"{folder}/{Path(name).stem}"][row["row"]:row["row"] + TILE, row["col"]:row["col"] + TILE]
        return np.vectorize(WHU_MERGE.get)(win)
    assert_masks_equal_truth(out, truth)
    notes = preparation_details(out)["notes"]
    assert "Source: images S1 (Changchun), S2 (Wuxi)" in notes and "Target: images T1 (Jilin), T2 (Shanghai)" in notes


def test_whu_ohs_protocol_options(tmp_path):
    w = R.write_whu_ohs(tmp_path / "raw")
    ts_only = prepare("whu-ohs", w["root"], tmp_path / "ts", tile=TILE, target_folders="ts", others="source")
    rows = tiles(ts_only)
    assert sorted({Path(r["source_file"]).stem for r in rows if r["domain"] == "Target"}) == ["T1_0003", "T2_0001"]
    assert {"O1_0001", "O1_0002"} <= {Path(r["source_file"]).stem for r in rows if r["domain"] == "Source"}
    official = prepare("whu-ohs", w["root"], tmp_path / "official", tile=TILE, protocol="official")
    assert any("not a split by location" in n for n in preparation_details(official)["notes"])
    assert {r["domain"] for r in tiles(official) if r["source_file"].startswith("ts/")} == {"Target"}
    with pytest.raises(PrepareError) as e:
        prepare("whu-ohs", w["root"], tmp_path / "bad", tile=TILE, protocol="by-location")
    assert_failed_cleanly(e, tmp_path / "bad", "protocol", "transfer")


# -------------------------------------------------------------------------------------- documented commands
def documented_prepare_commands() -> list[tuple[str, list[str]]]:
    """Every ``rsmoe prepare`` command shown in the README and the task configs (continuation lines joined,
    ``[optional]`` parts and comments dropped; commands with ``...`` placeholders skipped)."""
    repo = Path(__file__).resolve().parents[1]
    out = []
    for path in [repo / "README.md", *sorted((repo / "configs" / "tasks").glob("*.yaml"))]:
        text = path.read_text(encoding="utf-8").replace("\\\n#", " ").replace("\\\n", " ")
        for line in text.splitlines():
            line = line.lstrip("# ").split("  #")[0]
            if not line.startswith("rsmoe prepare ") or "..." in line:
                continue
            line = re.sub(r"\[[^\]]*\]", "", line)
            out.append((path.name, line.split()[2:]))
    return out


@pytest.mark.slow
def test_documented_prepare_commands_run_on_the_releases_as_published(tmp_path):
    raw = tmp_path / "RAW"
    R.write_fbp(raw / "Five-Billion-Pixels", n_images=14)
    R.write_megacities(raw)
    R.write_flair(raw / "FLAIR1")
    R.write_loveda(raw / "LoveDA", zipped=True)
    R.write_potsdam(raw / "Potsdam")
    R.write_vaihingen(raw / "Vaihingen")
    R.write_potsdam(raw / "ISPRS")
    R.write_vaihingen(raw / "ISPRS")
    R.write_openearthmap(raw / "OpenEarthMap")
    R.write_syndrone(raw / "SynDrone")
    R.write_whu_ohs(raw / "WHU-OHS")
    commands = documented_prepare_commands()
    assert {args[0] for _, args in commands} >= {"fbp-cross-sensor", "fbp-cross-regional", "flair", "loveda",
                                                 "potsdam", "vaihingen", "potsdam-vaihingen", "openearthmap",
                                                 "syndrone", "whu-ohs"}
    for i, (where, args) in enumerate(commands):
        args = [a.replace("RAW/", f"{raw}/").replace("data/prepared/", f"{tmp_path}/out{i}/") for a in args]
        args = [str(raw / a) if a == "fbp_regions.csv" else a for a in args]
        assert cli(*args, "--tile", str(TILE)) == 0, f"{where}: rsmoe prepare {' '.join(args)}"
