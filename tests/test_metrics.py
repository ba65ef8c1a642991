"""Metrics against a confusion matrix counted by hand."""
import math

import numpy as np
import pytest
import torch

from rsmoe.engine.metrics import mean_over_domains, metrics_from_confusion, update_confusion


def test_confusion_and_metrics_by_hand():
    # 4 classes; class 3 is absent from both truth and prediction; 255 is ignored
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 3, 0]])
    cm = update_confusion(torch.zeros(4, 4, dtype=torch.int64), pred, target)
    # counted by hand: (t, p) pairs of valid pixels
    # (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (0,0)
    expected = np.zeros((4, 4), dtype=np.int64)
    for t, p in [(0, 0), (0, 1), (1, 1), (1, 1), (2, 2), (2, 0), (0, 0)]:
        expected[t, p] += 1
    assert cm.tolist() == expected.tolist()

    m = metrics_from_confusion(cm, ["a", "b", "c", "d"])
    # class a: TP 2, FN 1 (a→b), FP 1 (c→a): IoU 2/4, Acc 2/3, F1 4/6
    # class b: TP 2, FN 0, FP 1: IoU 2/3, Acc 1, F1 4/5
    # class c: TP 1, FN 1, FP 0: IoU 1/2, Acc 1/2, F1 2/3
    pc = m["per_class"]
    assert pc["a"]["IoU"] == pytest.approx(0.5) and pc["a"]["Acc"] == pytest.approx(2 / 3)
    assert pc["a"]["F1"] == pytest.approx(4 / 6)
    assert pc["b"]["IoU"] == pytest.approx(2 / 3) and pc["b"]["F1"] == pytest.approx(0.8)
    assert pc["c"]["IoU"] == pytest.approx(0.5) and pc["c"]["Acc"] == pytest.approx(0.5)
    assert math.isnan(pc["d"]["IoU"]) and math.isnan(pc["d"]["Acc"])  # absent from both: left out
    assert m["mIoU"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert m["mAcc"] == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    assert m["mF1"] == pytest.approx((4 / 6 + 0.8 + 2 / 3) / 3)
    assert m["OA"] == pytest.approx(5 / 7)


def test_predicted_but_absent_class_counts_as_zero_iou():
    cm = update_confusion(torch.zeros(2, 2, dtype=torch.int64), torch.tensor([0, 1]), torch.tensor([0, 0]))
    m = metrics_from_confusion(cm)
    assert m["per_class"]["1"]["IoU"] == 0.0  # predicted, never true: in the mean as 0
    assert math.isnan(m["per_class"]["1"]["Acc"])  # no truth: out of mAcc
    assert m["mIoU"] == pytest.approx(0.25)


def test_label_outside_classes_is_an_error():
    with pytest.raises(ValueError, match="outside the 2 classes"):
        update_confusion(torch.zeros(2, 2, dtype=torch.int64), torch.tensor([0]), torch.tensor([5]))


def test_mean_over_domains():
    a = {"mIoU": 0.2, "mAcc": 0.3, "mF1": 0.4, "OA": 0.5}
    b = {"mIoU": 0.4, "mAcc": 0.5, "mF1": 0.6, "OA": 0.7}
    assert mean_over_domains({"x": a, "y": b})["mIoU"] == pytest.approx(0.3)
