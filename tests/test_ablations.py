"""Every point of the MPerS ablation grids (supplementary Tables 1–4) trains and evaluates with a tiny model.

The point's own setting (attention, dilation, decoder, guided stages, text width) is kept; only the backbone, the
MPerS widths and the data are shrunk. Table 1's encoder folders are not available offline, so each is replaced by
the tiny random CLIP text encoder of the point's width — the wiring, not the encoder, is what is tested here.
"""
import json

import pytest

from rsmoe.config import apply_override, config_from_dict, read_yaml
from rsmoe.demo import demo_config_path
from rsmoe.engine.runner import train
from rsmoe.sweep import load_grid

GRIDS = ("text_encoder", "dilation", "decoder", "stages")


def tiny_point_config(point, bench, out):
    demo = read_yaml(demo_config_path())
    data = read_yaml(point.base)
    tiny = [f"{k}={json.dumps(demo[k])}" for k in ("backbone", "data", "mpers")]
    tiny += [f"data.root={bench}", f"output_dir={out}", "train.iterations=1", "data.batch_size=2", "eval.mode=whole",
             'mpers.text_encoder="tiny"']
    for assignment in tiny:
        apply_override(data, assignment)
    for assignment in point.overrides:
        key, value = assignment.split("=", 1)
        if key == "mpers.text_encoder":
            value = '"tiny"'
        if key == "mpers.text_dim" and value == "null":
            value = "24"
        if key in ("name", "output_dir"):
            continue
        apply_override(data, f"{key}={value}")
    return config_from_dict(data)


POINTS = [(grid, i) for grid in GRIDS for i in range(len(load_grid(f"configs/ablations/mpers_{grid}.yaml")[1]))]


@pytest.mark.parametrize("grid,index", POINTS, ids=[f"{g}-{i}" for g, i in POINTS])
def test_mpers_ablation_point_trains(grid, index, bench, tmp_path):
    _, points = load_grid(f"configs/ablations/mpers_{grid}.yaml")
    point = points[index]
    cfg = tiny_point_config(point, bench, tmp_path / "run")
    ablated = dict(a.split("=", 1) for a in point.overrides if a.startswith("mpers."))
    for key, value in ablated.items():  # the ablated setting survived the shrinking
        if key not in ("mpers.text_encoder", "mpers.text_dim"):
            assert getattr(cfg.mpers, key.split(".", 1)[1]) == json.loads(value)
    metrics = train(cfg, progress=False)
    assert metrics["step"] == 1
    assert set(metrics["domains"]) == {"GF-2", "GF-1", "PlanetScope", "Sentinel-2"}
    assert all(0.0 <= m["OA"] <= 1.0 for m in metrics["domains"].values())
