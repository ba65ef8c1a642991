"""What a checkpoint holds and `rsmoe params` counts: every model's trainable parts, named by prefix."""
from __future__ import annotations

from torch import Tensor, nn

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)


class TrainablePartsMixin:
    """For an ``nn.Module`` whose frozen children live under ``frozen_prefixes``.

    ``count_children``: top-level modules whose parameters are counted per child (e.g. ``adapter.t2f``)."""

    frozen_prefixes: tuple[str, ...] = ()
    count_children: tuple[str, ...] = ()

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Every tensor (parameters and buffers) outside the frozen children."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(self.frozen_prefixes)}

    def trainable_parameter_counts(self) -> dict[str, int]:
        """Trainable parameters per top-level module (per child for ``count_children``)."""
        counts: dict[str, int] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad or name.startswith(self.frozen_prefixes):
                continue
            parts = name.split(".")
            key = ".".join(parts[:2]) if parts[0] in self.count_children else parts[0]
            counts[key] = counts.get(key, 0) + p.numel()
        return counts

    def norm_parameter_names(self) -> set[str]:
        """Full names of the parameters of every normalisation layer outside the frozen children (never decayed)."""
        names = set()
        for mod_name, module in self.named_modules():
            if isinstance(module, NORM_TYPES) and not f"{mod_name}.".startswith(self.frozen_prefixes):
                names |= {f"{mod_name}.{n}" for n, _ in module.named_parameters(recurse=False)}
        return names


__all__ = ["NORM_TYPES", "TrainablePartsMixin"]
