"""The training stream: which tile each training sample is, and how it is augmented, as pure functions of the run
seed and the sample's position in the stream.

A run of ``train.iterations`` steps of ``data.batch_size`` samples reads the positions 0, 1, 2, … of one endless
stream of tile draws (with replacement, uniform over the training tiles). The tile at a position and the random
numbers its augmentation uses depend only on ``(train.seed, position)``, never on what was drawn before, on
prefetching or on worker processes. So a run resumed at step k (:class:`ResumableLoader` stores how many samples
were consumed, Lightning saves it in ``last.ckpt``) reads exactly the samples an uninterrupted run reads after
step k — the first condition of a bitwise-exact resume (the other is the model's random state:
:mod:`rsmoe.engine.resume`).

Under DDP with W processes, process r takes the positions r, r + W, r + 2W, … of the same stream.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

#: draws are generated in chunks of this many positions (one small generator per chunk)
CHUNK = 4096
MASK64 = (1 << 64) - 1


def mix(*values: int) -> int:
    """A 63-bit seed mixed from integers (splitmix64 over each value in turn): nearby inputs give unrelated
    seeds."""
    state = 0x9E3779B97F4A7C15
    for v in values:
        state = (state + (int(v) & MASK64) + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        state = z ^ (z >> 31)
    return state >> 1


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless torch.distributed is initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class StreamSampler(DistributedSampler):
    """Yields ``(position, tile index)`` pairs of this process's share of the stream, from ``start`` (samples this
    process has already consumed) to ``samples_per_process``.

    It is a :class:`DistributedSampler` (that shards itself, reading the rank when iterated), so Lightning does not
    wrap it in another one."""

    def __init__(self, num_tiles: int, samples_per_process: int, seed: int):  # noqa: D107 (no super(): no dist yet)
        self.num_tiles = int(num_tiles)
        self.samples_per_process = int(samples_per_process)
        self.seed = int(seed)
        self.start = 0
        self.num_replicas, self.rank, self.epoch, self.shuffle, self.drop_last = 1, 0, 0, False, True

    def tiles_at(self, chunk: int) -> torch.Tensor:
        """The tile indices of positions ``chunk·CHUNK … (chunk+1)·CHUNK − 1``."""
        generator = torch.Generator().manual_seed(mix(self.seed, chunk))
        return torch.randint(self.num_tiles, (CHUNK,), generator=generator)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rank, world = process_rank()
        chunk, tiles = -1, None
        for i in range(self.start, self.samples_per_process):
            position = i * world + rank
            if position // CHUNK != chunk:
                chunk = position // CHUNK
                tiles = self.tiles_at(chunk)
            yield position, int(tiles[position % CHUNK])

    def __len__(self) -> int:
        return self.samples_per_process

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this every epoch; the stream does not depend on epochs."""


class SeededSamples(Dataset):
    """``dataset[index]`` for a ``(position, index)`` key, computed with torch's CPU generator seeded from
    ``(seed, position)``: the transforms' random draws belong to the position, and the caller's random state is
    left as it was."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        position, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix(self.seed, 1, position))
            return self.dataset[index]


class ResumableLoader(DataLoader):
    """The training DataLoader with ``state_dict``/``load_state_dict`` (Lightning saves them in ``last.ckpt`` and
    restores them on resume): the number of samples this process has consumed. :meth:`track` tells it how many
    optimisation steps are done (the trainer's ``global_step``), which prefetching cannot blur."""

    def __init__(self, dataset: Dataset, sampler: StreamSampler, batch_size: int, **kwargs: Any):
        super().__init__(SeededSamples(dataset, sampler.seed), batch_size=batch_size, sampler=sampler,
                         drop_last=True, **kwargs)
        self.steps_done: Callable[[], int] = lambda: 0

    def track(self, steps_done: Callable[[], int]) -> None:
        self.steps_done = steps_done

    def state_dict(self) -> dict[str, int]:
        return {"samples_consumed": int(self.steps_done()) * int(self.batch_size), "seed": self.sampler.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.start = int(state["samples_consumed"])


__all__ = ["CHUNK", "ResumableLoader", "SeededSamples", "StreamSampler", "mix", "process_rank"]
