"""Sliding-window evaluation (mmsegmentation's ``slide_inference``): logits averaged over overlapping windows."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
    if min(pair) <= 0:
        raise ValueError(f"sliding window {name} must be positive, got {value}")
    return pair


def _starts(size: int, window: int, stride: int) -> list[tuple[int, int]]:
    """(start, end) of each window along one axis: every ``stride`` pixels, the last one shifted back to end at
    the border; one window covering everything when the side is not longer than the window."""
    grids = max(size - window + stride - 1, 0) // stride + 1
    out = []
    for i in range(grids):
        end = min(i * stride + window, size)
        out.append((max(end - window, 0), end))
    return out


def window_boxes(height: int, width: int, window: int | tuple[int, int],
                 stride: int | tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(y1, y2, x1, x2) of every window, row by row."""
    (wh, ww), (sh, sw) = _pair(window, "window"), _pair(stride, "stride")
    return [(y1, y2, x1, x2) for y1, y2 in _starts(height, wh, sh) for x1, x2 in _starts(width, ww, sw)]


def window_coverage(height: int, width: int, window: int | tuple[int, int],
                    stride: int | tuple[int, int]) -> Tensor:
    """H×W int64: how many windows cover each pixel (every pixel ≥ 1)."""
    count = torch.zeros(height, width, dtype=torch.int64)
    for y1, y2, x1, x2 in window_boxes(height, width, window, stride):
        count[y1:y2, x1:x2] += 1
    return count


@torch.no_grad()
def slide_inference(model_fn: Callable[[Tensor], Tensor], image: Tensor, window: int | tuple[int, int],
                    stride: int | tuple[int, int], num_classes: int) -> Tensor:
    """Class scores B×K×H×W of ``image`` (B×C×H×W) from ``model_fn`` run on each window.

    Windows start every ``stride`` pixels; the last one in each direction is moved back to end at the border, so
    every window has the full ``window`` size unless the image is smaller (then the window is the whole side).
    Each pixel's scores are the mean of the scores of the windows that cover it. ``model_fn`` maps a B×C×h×w
    crop to B×K×h×w scores (e.g. ``lambda x: segmentor(x, wavelengths)``).
    """
    if image.ndim != 4:
        raise ValueError(f"slide_inference expects a B×C×H×W image, got shape {tuple(image.shape)}")
    b, _, h, w = image.shape
    scores: Tensor | None = None
    count = torch.zeros(1, 1, h, w, dtype=torch.int64, device=image.device)
    for y1, y2, x1, x2 in window_boxes(h, w, window, stride):
        out = model_fn(image[:, :, y1:y2, x1:x2])
        if out.shape != (b, num_classes, y2 - y1, x2 - x1):
            raise ValueError(f"model output {tuple(out.shape)} for a window of {y2 - y1}×{x2 - x1}; expected "
                             f"{(b, num_classes, y2 - y1, x2 - x1)}")
        if scores is None:
            dtype = out.dtype if out.is_floating_point() else torch.float32
            scores = torch.zeros(b, num_classes, h, w, dtype=dtype, device=out.device)
        scores[:, :, y1:y2, x1:x2] += out
        count[:, :, y1:y2, x1:x2] += 1
    assert scores is not None
    return scores / count.to(scores)
