"""Data loaders of a run: an iteration-based source-domain training stream and one evaluation loader per domain."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, RandomSampler

from ..config import Config
from ..data.prepared import DatasetInfo, PreparedDataset, load_dataset_info
from ..data.transforms import build_train_transforms, raw_value_range


def collate(samples: list[dict]) -> dict:
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "wavelengths": torch.stack([torch.as_tensor(s["wavelengths"]) for s in samples]),
        "domain": [s["domain"] for s in samples],
        "image_path": [s.get("meta", {}).get("image") for s in samples],  # MPerS's caption-store key
    }


def dataset_info(cfg: Config) -> DatasetInfo:
    if not cfg.data.root:
        raise ValueError("data.root is not set: give a prepared dataset folder (rsmoe prepare / rsmoe synth)")
    return load_dataset_info(cfg.data.root)


def train_loader(cfg: Config) -> DataLoader:
    d = cfg.data
    if not d.source_domains:
        raise ValueError("data.source_domains is empty: name the domain(s) to train on")
    info = load_dataset_info(d.root)
    transform = build_train_transforms(d.augment, info.mean, info.std, value_range=raw_value_range(info.dtype),
                                       ignore_index=info.ignore_index)
    ds = PreparedDataset(d.root, split=d.train_split, domains=d.source_domains, transform=transform, cache=d.cache)
    if len(ds) == 0:
        raise ValueError(f"{d.root}: no '{d.train_split}' tiles in domains {d.source_domains}")
    generator = torch.Generator().manual_seed(cfg.train.seed)
    sampler = RandomSampler(ds, replacement=True, num_samples=cfg.train.iterations * d.batch_size,
                            generator=generator)
    return DataLoader(ds, batch_size=d.batch_size, sampler=sampler, num_workers=d.num_workers, collate_fn=collate,
                      drop_last=True, persistent_workers=d.num_workers > 0)


def eval_splits(cfg: Config) -> list[tuple[str, str]]:
    """(domain, split) pairs evaluated: the source domains on the val split, the targets on the test split."""
    d = cfg.data
    pairs = [(dom, d.val_split) for dom in d.source_domains] + [(dom, d.test_split) for dom in d.target_domains]
    return pairs


def eval_loaders(cfg: Config) -> tuple[list[str], list[DataLoader]]:
    names, loaders = [], []
    for domain, split in eval_splits(cfg):
        ds = PreparedDataset(cfg.data.root, split=split, domains=[domain], cache=cfg.data.cache)
        if len(ds) == 0:
            continue
        names.append(domain)
        loaders.append(DataLoader(ds, batch_size=cfg.data.eval_batch_size, shuffle=False,
                                  num_workers=cfg.data.num_workers, collate_fn=collate))
    if not loaders:
        raise ValueError(f"{cfg.data.root}: nothing to evaluate for {eval_splits(cfg)}")
    return names, loaders
