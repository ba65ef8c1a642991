"""Data loaders of a run: an iteration-based source-domain training stream and one evaluation loader per domain.

Every pipeline ends with the dataset's :class:`~rsmoe.data.normalize.Normalize` (the training split's statistics,
the same object a checkpoint stores for evaluation and ``rsmoe predict``). Models that read captions get them as
batch fields from :func:`rsmoe.text.fields.caption_fields_for` (added after collation, so training captions
describe the augmented crop).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from ..config import Config
from ..config_checks import check_against_dataset
from ..data.prepared import DatasetInfo, PreparedDataset, load_dataset_info
from ..data.transforms import build_train_transforms, raw_value_range
from ..errors import ConfigError, DataError
from ..text.fields import caption_fields_for
from .stream import ResumableLoader, StreamSampler


def stack_samples(samples: list[dict]) -> dict:
    """Collate sample dicts into a batch (see :mod:`rsmoe.models.protocol` for the fields)."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "wavelengths": torch.stack([torch.as_tensor(s["wavelengths"]) for s in samples]),
        "domain": [s["domain"] for s in samples],
        "tile": [s.get("meta", {}).get("tile") for s in samples],
    }


class Collate:
    """:func:`stack_samples`, then the batch-level field builders (e.g. caption fields) in order."""

    def __init__(self, fields: list[Callable[[dict], dict]] | None = None):
        self.fields = [f for f in (fields or []) if f is not None]

    def __call__(self, samples: list[dict]) -> dict:
        batch = stack_samples(samples)
        for field in self.fields:
            batch = field(batch)
        return batch


def collate(samples: list[dict]) -> dict:
    """Plain collation without batch fields."""
    return stack_samples(samples)


def dataset_info(cfg: Config) -> DatasetInfo:
    """The prepared dataset of ``data.root``, with the config's domains and class names checked against it."""
    if not cfg.data.root:
        raise ConfigError("data.root is not set: give a prepared dataset folder (rsmoe prepare / rsmoe synth)")
    info = load_dataset_info(cfg.data.root)
    check_against_dataset(cfg, info.domains, info.classes)
    return info


def train_loader(cfg: Config) -> ResumableLoader:
    """The source-domain training stream of :mod:`rsmoe.engine.stream` (``train.iterations`` batches per process,
    resumable at any step)."""
    d = cfg.data
    info = dataset_info(cfg)
    transform = build_train_transforms(d.augment, info.normalizer(), value_range=raw_value_range(info.dtype),
                                       ignore_index=info.ignore_index)
    ds = PreparedDataset(d.root, split=d.train_split, domains=d.source_domains, transform=transform, cache=d.cache)
    if len(ds) == 0:
        raise DataError(f"{d.root}: no '{d.train_split}' tiles in domains {d.source_domains}")
    sampler = StreamSampler(len(ds), cfg.train.iterations * d.batch_size, cfg.train.seed)
    fields = caption_fields_for(cfg, info, training=True)
    # the loader's own generator: creating its iterator never draws from the run's global random state
    return ResumableLoader(ds, sampler, d.batch_size, num_workers=d.num_workers, collate_fn=Collate([fields]),
                           persistent_workers=d.num_workers > 0, generator=torch.Generator().manual_seed(0))


def eval_splits(cfg: Config) -> list[tuple[str, str]]:
    """(domain, split) pairs evaluated: the source domains on the val split, the targets on the test split."""
    d = cfg.data
    return [(dom, d.val_split) for dom in d.source_domains] + [(dom, d.test_split) for dom in d.target_domains]


def eval_name(cfg: Config, domain: str, split: str) -> str:
    """The name a (domain, split) pair is reported under: the domain, or ``domain/split`` when the domain is both a
    source and a target (e.g. Potsdam/val and Potsdam/test in the ISPRS caption-guided tasks), so neither result
    hides the other."""
    both = domain in cfg.data.source_domains and domain in cfg.data.target_domains
    return f"{domain}/{split}" if both else domain


def target_names(cfg: Config, names: list[str]) -> list[str]:
    """The evaluated names that are target domains (their mean is the run's ``target_mean``)."""
    targets = {eval_name(cfg, d, cfg.data.test_split) for d in cfg.data.target_domains}
    return [n for n in names if n in targets]


def eval_loaders(cfg: Config) -> tuple[list[str], list[DataLoader]]:
    info = dataset_info(cfg)
    collate_fn = Collate([caption_fields_for(cfg, info, training=False)])
    names, loaders = [], []
    for domain, split in eval_splits(cfg):
        ds = PreparedDataset(cfg.data.root, split=split, domains=[domain], transform=info.normalizer(),
                             cache=cfg.data.cache)
        if len(ds) == 0:
            continue
        names.append(eval_name(cfg, domain, split))
        loaders.append(DataLoader(ds, batch_size=cfg.data.eval_batch_size, shuffle=False,
                                  num_workers=cfg.data.num_workers, collate_fn=collate_fn,
                                  generator=torch.Generator().manual_seed(0)))
    if not loaders:
        raise DataError(f"{cfg.data.root}: nothing to evaluate for {eval_splits(cfg)}")
    return names, loaders


__all__ = ["Collate", "collate", "dataset_info", "eval_loaders", "eval_name", "eval_splits", "stack_samples",
           "target_names", "train_loader"]
