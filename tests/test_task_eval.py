"""Task evaluation: sliding-window inference, ISPRS-style exclusion from the means, slide eval through the engine."""
import json

import numpy as np
import pytest
import torch

from rsmoe.cli import main
from rsmoe.config import load_config
from rsmoe.errors import ConfigError
from rsmoe.data.synthetic import synthesize
from rsmoe.demo import demo_config_path
from rsmoe.data.prepared import PreparedDataset
from rsmoe.engine.checkpoints import save_checkpoint
from rsmoe.engine.data import collate
from rsmoe.engine.inference import slide_inference, window_boxes, window_coverage
from rsmoe.engine.metrics import metrics_from_confusion
from rsmoe.engine.module import SegmentationModule
from rsmoe.engine.runner import build_for_config, evaluate
from rsmoe.report import eval_report_markdown

# ------------------------------------------------------------------------------------------------ sliding window


def per_pixel(x):
    return torch.cat([x[:, :1], 2 * x[:, 1:2] - x[:, :1], -x[:, 1:2]], dim=1)


@pytest.mark.parametrize("size,window,stride", [((10, 10), 4, 3), ((11, 13), 4, 3), ((7, 9), 5, 2),
                                                ((6, 6), 8, 4), ((16, 12), 8, 8)])
def test_slide_equals_whole_for_a_per_pixel_model(size, window, stride):
    g = torch.Generator().manual_seed(0)
    image = torch.randint(-50, 50, (2, 2, *size), generator=g).float()  # integers: the averages are exact
    seen = []

    def model_fn(crop):
        seen.append(tuple(crop.shape[-2:]))
        return per_pixel(crop)

    out = slide_inference(model_fn, image, window, stride, num_classes=3)
    assert torch.equal(out, per_pixel(image))
    full = (min(window, size[0]), min(window, size[1]))
    assert all(s == full for s in seen) and len(seen) == len(window_boxes(*size, window, stride))

    conv = torch.nn.Conv2d(2, 5, 1)
    real = torch.randn(1, 2, *size, generator=g)
    with torch.no_grad():
        whole = conv(real)
    torch.testing.assert_close(slide_inference(conv, real, window, stride, 5), whole, rtol=1e-6, atol=1e-6)


def test_window_coverage_at_borders():
    # 10 px, window 4, stride 3: windows [0,4) [3,7) [6,10)
    assert window_coverage(1, 10, (1, 4), (1, 3))[0].tolist() == [1, 1, 1, 2, 1, 1, 2, 1, 1, 1]
    # 11 px: 11 − 4 is not a multiple of 3, the last window [9,13) is moved back to [7,11)
    assert [b[2:] for b in window_boxes(1, 11, (1, 4), (1, 3))] == [(0, 4), (3, 7), (6, 10), (7, 11)]
    row = [1, 1, 1, 2, 1, 1, 2, 2, 2, 2, 1]
    assert window_coverage(1, 11, (1, 4), (1, 3))[0].tolist() == row
    cov = window_coverage(11, 10, 4, 3)  # 2-D: the outer product of the two axes
    col = [1, 1, 1, 2, 1, 1, 2, 1, 1, 1]
    assert torch.equal(cov, torch.tensor(row)[:, None] * torch.tensor(col)[None, :])
    assert window_coverage(5, 6, 8, 4).unique().tolist() == [1]  # smaller than the window: one window
    assert len(window_boxes(512, 1000, 512, 341)) == 3  # mmseg: (1000 − 512 + 340) // 341 + 1 windows across


def test_overlapping_scores_are_averaged():
    image = torch.arange(6.0).reshape(1, 1, 1, 6)
    out = slide_inference(lambda c: c.mean().expand_as(c).clone(), image, (1, 4), (1, 2), 1)
    assert out.flatten().tolist() == [1.5, 1.5, 2.5, 2.5, 3.5, 3.5]  # windows [0,4) mean 1.5, [2,6) mean 3.5


# ------------------------------------------------------------------------------------------------ exclusion


def test_exclusion_from_means_by_hand():
    cm = np.array([[5, 1, 2],
                   [1, 6, 1],
                   [0, 2, 3]])
    m = metrics_from_confusion(cm, ["a", "b", "clutter"], exclude=["clutter"])
    iou = [5 / 9, 6 / 11, 3 / 8]
    assert m["OA"] == pytest.approx(14 / 21)  # every class, clutter included
    assert m["mIoU"] == pytest.approx((iou[0] + iou[1]) / 2)
    assert m["mAcc"] == pytest.approx((5 / 8 + 6 / 8) / 2)
    assert m["mF1"] == pytest.approx((10 / 14 + 12 / 17) / 2)
    assert m["per_class"]["clutter"]["IoU"] == pytest.approx(3 / 8)  # still reported per class
    assert m["excluded_from_means"] == ["clutter"]
    plain = metrics_from_confusion(cm, ["a", "b", "clutter"])
    assert plain["mIoU"] == pytest.approx(sum(iou) / 3) and plain["OA"] == m["OA"]
    assert "excluded_from_means" not in plain
    with pytest.raises(ValueError, match="'Clutter'"):
        metrics_from_confusion(cm, ["a", "b", "clutter"], exclude=["Clutter"])


# --------------------------------------------------------------------------------------------- through the engine


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    tiles = {"GF-2": {"train": 1, "val": 1}, "GF-1": {"test": 1}, "PlanetScope": {"test": 1},
             "Sentinel-2": {"test": 1}}
    synthesize(root, seed=0, tile=32, tiles_per_domain=tiles, show_progress=False, datasets=("multispectral",))
    return root / "multispectral"


def test_slide_eval_through_the_runner(bench, tmp_path, capsys):
    base = [f"data.root={bench}", f"output_dir={tmp_path / 'run'}", "data.target_domains=[GF-1]",
            "data.eval_batch_size=2"]
    cfg = load_config(demo_config_path(), base)
    model, meta = build_for_config(cfg)
    model.eval()

    # the module's slide path: one window as large as the 32-px tile is the whole-image forward
    one_cfg = load_config(demo_config_path(), [*base, "eval.mode=slide", "eval.window=32", "eval.stride=16"])
    module = SegmentationModule(one_cfg, model, meta.class_names, ["GF-2"])
    batch = collate([PreparedDataset(bench, split="val", domains=["GF-2"])[0]])
    with torch.no_grad():
        assert torch.equal(module.predict_scores(batch),
                           model(batch["image"], batch["wavelengths"]))

    slide_args = ["eval.mode=slide", "eval.window=24", "eval.stride=8", "eval.exclude_from_means=[road]"]
    slide_cfg = load_config(demo_config_path(), [*base, *slide_args])
    slide = evaluate(slide_cfg, model, meta.class_names, progress=False)
    for d, m in slide["domains"].items():
        split = "val" if d == "GF-2" else "test"
        labelled = sum(int((t["mask"] != 255).sum()) for t in PreparedDataset(bench, split=split, domains=[d]))
        assert np.sum(m["confusion"]) == labelled  # every labelled pixel counted once
        kept = [v["IoU"] for c, v in m["per_class"].items() if c != "road"]
        assert m["mIoU"] == pytest.approx(np.nanmean(kept), nan_ok=True)
        cm = np.array(m["confusion"])
        assert m["OA"] == pytest.approx(np.trace(cm) / cm.sum())
        assert m["excluded_from_means"] == ["road"]
    assert set(slide["target_mean"]) == {"mIoU", "mAcc", "mF1", "OA"}

    text = eval_report_markdown(slide)
    assert "| domain | mIoU | mAcc | mF1 | OA |" in text and "| target mean |" in text
    assert "## IoU per class" in text and "| road (excluded) |" in text and "| water |" in text

    # `rsmoe eval --config …` takes the eval section of the given config and writes JSON + Markdown
    ckpt = tmp_path / "model.safetensors"
    save_checkpoint(model, meta, ckpt)
    out = tmp_path / "metrics.json"
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(ckpt), "--config", str(demo_config_path()),
                 *[a for kv in [*base, *slide_args] for a in ("--set", kv)],
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "## IoU per class" in printed and "| GF-1 |" in printed
    saved = json.loads(out.read_text())
    for d in ("GF-2", "GF-1"):
        assert saved["domains"][d]["confusion"] == slide["domains"][d]["confusion"]
        assert saved["domains"][d]["mIoU"] == pytest.approx(slide["domains"][d]["mIoU"], nan_ok=True)
    assert "## IoU per class" in (tmp_path / "metrics.md").read_text()


def test_bad_eval_section_fails_before_running(bench, tmp_path):
    with pytest.raises(ConfigError, match="eval.mode: got 'tiles'"):
        load_config(demo_config_path(), [f"data.root={bench}", "eval.mode=tiles"])
    model, meta = build_for_config(load_config(demo_config_path(), [f"data.root={bench}"]))
    cfg = load_config(demo_config_path(), [f"data.root={bench}", "eval.exclude_from_means=[clutter]"])
    with pytest.raises(ValueError, match="clutter"):
        evaluate(cfg, model, meta.class_names, progress=False)
