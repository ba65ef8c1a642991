"""`rsmoe study`: points deduplicated across groups, every point × seed trained once, mean ± std by hand, report."""
import json
import math

import numpy as np
import pytest
import yaml

from rsmoe.cli import main
from rsmoe.errors import ConfigError
from rsmoe.study import load_study
from rsmoe.study_report import aggregate, mean_std

TINY = {"GF-2": {"train": 4, "val": 2}, "GF-1": {"test": 2}, "PlanetScope": {"test": 1},
        "Sentinel-2": {"test": 2}}


def write_study(tmp_path, **extra):
    study = {
        "name": "tiny", "base": "../rsmoe_demo.yaml", "output_root": str(tmp_path / "runs"), "seeds": [0, 1],
        "world": {"dataset": "multispectral", "tile": 32, "tiles": TINY},
        "set": {"train.iterations": 2, "data.batch_size": 2, "data.target_domains": ["GF-1", "Sentinel-2"],
                "backbone.pretrained": None},  # random frozen weights: fast, and the provenance says so
        "groups": {"methods": {"frozen": {"adapter.type": "none"}, "rein": {"adapter.type": "rein"}},
                   "again": {"frozen-again": {"adapter.type": "none"}}},
        **extra,
    }
    from rsmoe.demo import demo_config_path

    (tmp_path / "rsmoe_demo.yaml").write_text(demo_config_path().read_text())
    (tmp_path / "studies").mkdir(exist_ok=True)
    path = tmp_path / "studies" / "tiny.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_mean_std_by_hand():
    mean, std = mean_std([0.5, 0.7, 0.6])
    assert mean == pytest.approx(0.6) and std == pytest.approx(math.sqrt(((0.1) ** 2 + 0.1 ** 2 + 0) / 2))
    assert math.isnan(mean_std([0.4])[1]) and math.isnan(mean_std([])[0])
    stats = aggregate({"a": {0: {"domains": {"X": {"mIoU": 0.2}}, "target_mean": {"mIoU": 0.1}, "seconds": 2},
                             1: {"domains": {"X": {"mIoU": 0.4}}, "target_mean": {"mIoU": 0.3}, "seconds": 4}}})
    assert stats["a"]["domains"]["X"] == pytest.approx((0.3, math.sqrt(0.02)))
    assert stats["a"]["target_mean"][0] == pytest.approx(0.2) and stats["a"]["seconds"] == 3 and stats["a"]["n"] == 2


def test_points_are_deduplicated_and_a_single_seed_is_refused(tmp_path):
    study = load_study(write_study(tmp_path))
    points = study.points()
    assert [p.label for p in points] == ["frozen", "rein"] and points[0].groups == ["methods", "again"]
    with pytest.raises(ConfigError, match="at least 2 seeds"):
        load_study(write_study(tmp_path, seeds=[0]))
    with pytest.raises(ConfigError, match="unknown group"):
        study.points(["nope"])


def test_study_trains_every_point_and_seed_and_reports(tmp_path, capsys):
    path = write_study(tmp_path)
    report = tmp_path / "docs" / "tiny.md"
    assert main(["study", "--study", str(path), "--report", str(report), "--no-progress"]) == 0
    data = json.loads(report.with_suffix(".json").read_text())
    assert set(data["runs"]) == {"frozen", "rein"} and all(set(r) == {"0", "1"} for r in data["runs"].values())
    for label, by_seed in data["runs"].items():  # the table's numbers are the runs' own, aggregated by hand
        values = [by_seed[s]["target_mean"]["mIoU"] for s in ("0", "1")]
        assert data["stats"][label]["target_mean"][0] == pytest.approx(np.mean(values))
        assert data["stats"][label]["target_mean"][1] == pytest.approx(np.std(values, ddof=1))
        cell = f"**{100 * np.mean(values):.2f} ± {100 * np.std(values, ddof=1):.2f}**"
        assert cell in report.read_text()
    assert (tmp_path / "docs" / "tiny_methods.png").stat().st_size > 0
    seeds = {json.loads((tmp_path / "runs" / "tiny" / "rein" / f"seed{s}" / "metrics.json").read_text())["step"]
             for s in (0, 1)}
    assert seeds == {2}
    assert "random weights" in report.read_text()  # provenance of the frozen backbone
    # a second call reads the finished runs instead of training them again
    before = (tmp_path / "runs" / "tiny" / "rein" / "seed0" / "model.safetensors").stat().st_mtime_ns
    assert main(["study", "--study", str(path), "--report", str(report), "--no-progress"]) == 0
    assert (tmp_path / "runs" / "tiny" / "rein" / "seed0" / "model.safetensors").stat().st_mtime_ns == before


def test_shards_split_the_runs_and_a_last_call_reports(tmp_path, capsys):
    path = write_study(tmp_path)
    report = tmp_path / "docs" / "tiny.md"
    runs = tmp_path / "runs" / "tiny"
    assert main(["study", "--study", str(path), "--shard", "1/2", "--no-progress"]) == 0
    first = {p.parent.relative_to(runs).as_posix() for p in runs.glob("*/seed*/metrics.json")}
    assert first == {"frozen/seed0", "rein/seed0"} and not report.exists()  # runs 1 and 3 of (point, seed) order
    assert main(["study", "--study", str(path), "--shard", "2/2", "--no-progress"]) == 0
    done = {p.parent.relative_to(runs).as_posix() for p in runs.glob("*/seed*/metrics.json")}
    assert done == {"frozen/seed0", "frozen/seed1", "rein/seed0", "rein/seed1"}
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/seed*/model.safetensors")}
    assert main(["study", "--study", str(path), "--report", str(report), "--no-progress"]) == 0
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/seed*/model.safetensors")} == stamps  # nothing retrained
    assert set(json.loads(report.with_suffix(".json").read_text())["runs"]) == {"frozen", "rein"}
    for bad in ("3/2", "0/2", "x"):
        assert main(["study", "--study", str(path), "--shard", bad]) == 2
    assert "--shard" in capsys.readouterr().err
