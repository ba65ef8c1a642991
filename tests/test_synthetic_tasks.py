"""The synthetic task configs (configs/tasks/synthetic_*.yaml): each trains on a small synthetic world with the
shipped models and evaluates every source and target domain, as the README's commands do."""
from pathlib import Path

import pytest

from rsmoe.config import load_config
from rsmoe.data.synthetic import synthesize

TASKS = Path(__file__).resolve().parents[1] / "configs" / "tasks"
SMALL = {"GF-2": {"train": 4, "val": 2}, "GF-1": {"test": 2}, "PlanetScope": {"test": 2}, "Sentinel-2": {"test": 2},
         "Region-A": {"train": 4, "val": 2}, "Region-B": {"test": 2}, "Region-C": {"test": 2}}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("task,dataset", [("synthetic_cross_sensor", "multispectral"),
                                          ("synthetic_cross_regional", "hyperspectral")])
def test_synthetic_task_trains_on_the_shipped_models(task, dataset, tmp_path):
    root = synthesize(tmp_path / "data", seed=0, tile=32, tiles_per_domain=SMALL, show_progress=False,
                      datasets=(dataset,))[dataset]
    cfg = load_config(TASKS / f"{task}.yaml", [f"data.root={root}", f"output_dir={tmp_path / 'run'}",
                                                "train.iterations=2", "data.batch_size=2"])
    assert (cfg.backbone.pretrained, cfg.depth.pretrained) == ("rsmoe:backbone", "rsmoe:depth")
    assert cfg.adapter.type == "spectralmoe" and cfg.depth.enabled
    from rsmoe.engine.runner import train

    metrics = train(cfg, progress=False)
    assert metrics["step"] == 2
    assert set(metrics["domains"]) == set(cfg.data.source_domains + cfg.data.target_domains)
    assert all(0.0 <= m["OA"] <= 1.0 for m in metrics["domains"].values())
