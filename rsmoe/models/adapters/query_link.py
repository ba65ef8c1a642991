"""Token → query link: the expert tokens become Mask2Former's query positional embeddings (docs/spectralmoe.md §7).

Per layer the expert tokens are averaged over experts → (L, m, d) → ``transform`` Linear(d, q) → over the layer
axis take max, mean and the last layer, stacked on a new last axis → (m, q, 3), flattened channel-major to
(m, 3q) so element 3c + {0: max, 1: mean, 2: last} → ``merge`` Linear(3q, q) → m query positional embeddings (m×q).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class QueryLink(nn.Module):
    def __init__(self, dim: int, query_dim: int = 256):
        super().__init__()
        self.transform = nn.Linear(dim, query_dim)
        self.merge = nn.Linear(3 * query_dim, query_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens L×E×m×d (every layer's expert tokens) → m×q query positional embeddings."""
        per_layer = self.transform(tokens.mean(1))  # L×m×q
        stacked = torch.stack([per_layer.max(0).values, per_layer.mean(0), per_layer[-1]], dim=-1)  # m×q×3
        return self.merge(stacked.flatten(-2))
