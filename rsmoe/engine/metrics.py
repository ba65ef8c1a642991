"""Segmentation metrics from a confusion matrix (mmsegmentation's definitions).

``confusion[t, p]`` counts pixels of true class t predicted as p; pixels whose truth is the ignore index are not
counted. Per class c with TP = confusion[c, c], FP = column sum − TP, FN = row sum − TP:

- IoU = TP / (TP + FP + FN), Acc = TP / (TP + FN), F1 = 2TP / (2TP + FP + FN);
- OA = Σ TP / Σ confusion.

A class absent from both truth and prediction has 0/0 for IoU and F1 and is left out of mIoU and mF1 (NaN);
a class absent from the truth has 0/0 Acc and is left out of mAcc.

``exclude`` (class names) follows the ISPRS convention (e.g. clutter on Vaihingen/Potsdam): those classes are left
out of mIoU, mAcc and mF1 but their pixels still count in OA, and the confusion is not changed, so a pixel of
another class predicted as an excluded class is still a false negative of its class.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def update_confusion(confusion: Tensor, pred: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """Add B×H×W (or any shape) predictions against targets to a K×K int64 confusion matrix, in place."""
    k = confusion.shape[0]
    valid = target != ignore_index
    t = target[valid].long()
    p = pred[valid].long()
    if t.numel() and (int(t.max()) >= k or int(t.min()) < 0):
        raise ValueError(f"label value {int(t.max())} outside the {k} classes (ignore index {ignore_index})")
    confusion += torch.bincount(t * k + p, minlength=k * k).reshape(k, k).to(confusion)
    return confusion


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else math.nan


def metrics_from_confusion(confusion: Tensor | np.ndarray, class_names: list[str] | None = None,
                           exclude: list[str] | tuple[str, ...] = ()) -> dict:
    """Per-class IoU/Acc/F1 and mIoU, mAcc, mF1, OA (fractions in [0, 1]; NaN where undefined); the means skip
    the ``exclude`` classes (listed under ``excluded_from_means`` when any)."""
    cm = np.asarray(confusion.cpu() if isinstance(confusion, Tensor) else confusion, dtype=np.float64)
    tp = np.diag(cm)
    truth = cm.sum(1)
    pred = cm.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (truth + pred - tp)
        acc = tp / truth
        f1 = 2 * tp / (truth + pred)
    total = cm.sum()
    names = list(class_names) if class_names else [str(i) for i in range(len(tp))]
    unknown = [c for c in exclude if c not in names]
    if unknown:
        raise ValueError(f"classes to exclude from the means {unknown} are not among the classes {names}")
    keep = np.array([name not in exclude for name in names], dtype=bool)
    out = {
        "mIoU": _nanmean(iou[keep]),
        "mAcc": _nanmean(acc[keep]),
        "mF1": _nanmean(f1[keep]),
        "OA": float(tp.sum() / total) if total else math.nan,
        "per_class": {
            name: {"IoU": float(iou[i]), "Acc": float(acc[i]), "F1": float(f1[i])} for i, name in enumerate(names)
        },
    }
    if exclude:
        out["excluded_from_means"] = [n for n in names if n in exclude]
    return out


def mean_over_domains(per_domain: dict[str, dict], keys=("mIoU", "mAcc", "mF1", "OA")) -> dict:
    """Plain mean of each summary metric over the given domains."""
    return {k: _nanmean(np.array([m[k] for m in per_domain.values()], dtype=np.float64)) for k in keys}
