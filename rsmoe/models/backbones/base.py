"""The contract every frozen vision backbone in rsmoe fulfils.

A backbone is run *block by block* by the :class:`~rsmoe.models.segmentor.Segmentor`, so that an adapter can act
on the patch tokens after every block:

.. code-block:: python

    tokens, ctx = backbone.embed(image, wavelengths)      # B × (P + N) × d
    for i in range(backbone.num_layers):
        tokens = backbone.block(i, tokens, ctx)
        prefix, patches = backbone.split_prefix(tokens)  # B × P × d, B × N × d
        patches = adapter(i, patches, ...)               # the plug-in sees patch tokens only
        tokens = backbone.join_prefix(prefix, patches)   # prefix tokens re-attached unchanged

:meth:`FrozenBackbone.patch_tokens` is that loop, written once for every model.

P = ``num_prefix_tokens`` (CLS + register tokens), N = h·w patch tokens on the ``ctx.grid`` (h, w) grid,
d = ``embed_dim``. Wavelengths are in µm, shape (C,) or (B, C).

Backbones are frozen: every parameter has ``requires_grad = False`` and the module stays in eval mode even when
the Segmentor is put in training mode (DINOv3's RoPE would otherwise jitter positions; dropout would be live).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


@dataclass
class BlockContext:
    """What the blocks of one forward pass share: the patch grid and model-specific extras (e.g. RoPE cos/sin)."""

    grid: tuple[int, int]
    extras: dict[str, Any] = field(default_factory=dict)


class FrozenModule(nn.Module):
    """A module that never trains: no parameter requires grad, and it stays in eval mode under ``.train()``."""

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenModule":  # noqa: ARG002 - frozen: always eval
        return super().train(False)


class FrozenBackbone(FrozenModule):
    """Base class: frozen, always in eval mode, block-by-block forward.

    Subclasses set ``embed_dim``, ``num_layers``, ``num_prefix_tokens``, ``patch_size`` and implement
    :meth:`embed` and :meth:`block`.
    """

    embed_dim: int
    num_layers: int
    num_prefix_tokens: int
    patch_size: int

    def embed(self, image: Tensor, wavelengths: Tensor) -> tuple[Tensor, BlockContext]:
        """Image B×C×H×W (normalised), wavelengths (C,) or (B, C) in µm → tokens B×(P+N)×d and the context."""
        raise NotImplementedError

    def block(self, index: int, tokens: Tensor, ctx: BlockContext) -> Tensor:
        """Run block ``index`` (0-based) on B×(P+N)×d tokens."""
        raise NotImplementedError

    def split_prefix(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        p = self.num_prefix_tokens
        return tokens[:, :p], tokens[:, p:]

    @staticmethod
    def join_prefix(prefix: Tensor, patches: Tensor) -> Tensor:
        return torch.cat([prefix, patches], dim=1)

    def patch_tokens(self, image: Tensor, wavelengths: Tensor, taps: Sequence[int],
                     refine: Callable[[int, Tensor], Tensor] | None = None,
                     checkpoint_blocks: bool = False) -> tuple[list[Tensor], BlockContext]:
        """Patch tokens B×N×d after each block in ``taps`` (ascending), and the context (``ctx.grid``).

        ``refine(i, patches) -> patches`` runs on the patch tokens after every block ``i`` (prefix tokens split off
        and re-attached unchanged): the plug-in loop of SpectralMoE and Rein. Without it, the blocks after the last
        tap are skipped.

        ``checkpoint_blocks``: while autograd records, each block together with its ``refine`` call runs under
        activation checkpointing (``torch.utils.checkpoint``, non-reentrant, the RNG state of the routers' noise
        restored for the recomputation): only the B×(P+N)×d tokens entering each block are kept for the backward
        pass, which runs the block and its plug-in call again. Values and gradients are those of the plain loop;
        ``refine`` is called a second time per block during the backward pass (its side effects must tolerate it)."""
        tokens, ctx = self.embed(image, wavelengths)
        wanted = set(taps)
        last = self.num_layers - 1 if refine is not None else max(wanted)
        out = []
        for i in range(last + 1):
            if checkpoint_blocks and torch.is_grad_enabled() and (refine is not None or tokens.requires_grad):
                tokens = checkpoint(self.refined_block, i, tokens, ctx, refine, use_reentrant=False)
            else:
                tokens = self.refined_block(i, tokens, ctx, refine)
            if i in wanted:
                out.append(self.split_prefix(tokens)[1])
        return out, ctx

    def refined_block(self, index: int, tokens: Tensor, ctx: BlockContext,
                      refine: Callable[[int, Tensor], Tensor] | None = None) -> Tensor:
        """Block ``index`` on B×(P+N)×d tokens, then ``refine(index, patches)`` on its patch tokens (if given)."""
        tokens = self.block(index, tokens, ctx)
        if refine is None:
            return tokens
        prefix, patches = self.split_prefix(tokens)
        return self.join_prefix(prefix, refine(index, patches))

    def forward_patch_tokens(self, image: Tensor, wavelengths: Tensor) -> list[Tensor]:
        """Patch tokens (B×N×d) after every block, without any adapter (used by tests and the depth branch)."""
        return self.patch_tokens(image, wavelengths, range(self.num_layers))[0]


def tokens_to_map(patches: Tensor, grid: tuple[int, int]) -> Tensor:
    """B×N×d patch tokens on an (h, w) grid → B×d×h×w map (row-major token order)."""
    b, n, d = patches.shape
    h, w = grid
    if n != h * w:
        raise ValueError(f"expected {h}×{w}={h * w} patch tokens, got {n}")
    return patches.transpose(1, 2).reshape(b, d, h, w)
