"""Deterministic random draws that leave the caller's random state alone."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's CPU generator seeded with ``seed``; the caller's RNG state is restored afterwards.

    Used wherever weights are drawn "from a seed" (random backbones, depth encoders, text encoders), so building a
    model never shifts the training run's random stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


__all__ = ["seeded"]
