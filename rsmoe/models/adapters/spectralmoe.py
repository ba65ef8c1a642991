"""The SpectralMoE plug-in: dual-gated token experts after every block of a frozen ViT (docs/spectralmoe.md §2–§8).

After block ℓ of the vision model, with f^v (B×N×d) its patch tokens and f^d (B×N×d) the depth model's tokens
after its own block ℓ:

1. the visual router (layer ℓ, modality v) sends each visual token to k of E experts, the depth router (ℓ, d) does
   the same for each depth token, independently (:mod:`.routing`);
2. each expert refines the tokens sent to it: Δf^v from the visual tokens, Δf^d from the depth tokens, with the
   experts' low-rank tokens shared by both modalities (:mod:`.token_experts`);
3. the depth refinement steers the visual one: δ = fuse(Δf^v, Δf^d) (:mod:`.fusion`);
4. Δf = delta(δ + f^v) and f^v ← f^v + α·Δf (computed as f^v + (α·W_delta)(δ + f^v) + α·b_delta).

The router loss of the layer is 1000 · Σ_j [cv²(importance^j) + cv²(load^j)]; the model adds the mean over layers.

Rein (Wei et al. 2024) is the special case E = 1, no routers, no depth, ``dot`` logits, ``fusion: none``
(:func:`rsmoe.models.adapters.rein.build_rein`).

Parameters (L layers, E experts, m tokens, rank r, width d): experts E·L·r·(m + d); routers 2·2·d·E·L (only when
routing); ``t2f`` and ``delta`` 2·(d² + d); query link (d·q + q) + (3q·q + q); α 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fusion import FUSIONS, fuse
from .query_link import QueryLink
from .routing import GATINGS, route
from .token_experts import COMBINES, EXPERT_LOGITS, TokenExperts, refine_grouped, token_values

LOAD_LOSS_SCALE = 1000.0
VISUAL, DEPTH = 0, 1


@dataclass
class AdapterOutput:
    """Updated patch tokens (B×N×d) and the layer's router loss (scalar; 0 without routers)."""

    tokens: Tensor
    loss: Tensor


class SpectralMoE(nn.Module):
    """Token experts with dual routers for every one of ``num_layers`` blocks.

    Args:
        num_layers: L, blocks of the vision model (one plug-in after each).
        dim: d, token width (the depth model's width must be the same).
        num_experts: E. num_tokens: m tokens per expert. rank: r of T = A B.
        top_k: experts per token. gating: ``softmax | gaussian | laplace``; distance_p: the norm of ``laplace``.
        noisy: noisy gating while training. routing: False drops the routers (needs E = 1; Rein).
        use_depth: route and refine depth tokens and fuse them in. expert_logits: ``official | dot``.
        fusion: ``official | cross_attention | add | none``. combine: ``official | weighted | switch`` (see :mod:`.token_experts`).
        alpha_init: initial α. query_dim: width of the query link's output (Mask2Former's 256); 0 = no link.
    """

    def __init__(
        self,
        num_layers: int,
        dim: int,
        num_experts: int = 6,
        num_tokens: int = 100,
        rank: int = 16,
        top_k: int = 1,
        gating: str = "softmax",
        distance_p: float = 2.0,
        noisy: bool = True,
        routing: bool = True,
        use_depth: bool = True,
        expert_logits: str = "official",
        fusion: str = "official",
        combine: str = "official",
        alpha_init: float = 1e-3,
        query_dim: int = 256,
    ):
        super().__init__()
        for name, value, allowed in (
            ("gating", gating, GATINGS),
            ("expert_logits", expert_logits, EXPERT_LOGITS),
            ("fusion", fusion, FUSIONS),
            ("combine", combine, COMBINES),
        ):
            if value not in allowed:
                raise ValueError(f"adapter.{name}: got {value!r}, expected one of {allowed}")
        if not routing and num_experts != 1:
            raise ValueError(f"adapter without routers needs num_experts = 1, got {num_experts}")
        if use_depth == (fusion == "none"):
            raise ValueError(
                f"adapter.fusion {fusion!r} does not fit use_depth={use_depth}: "
                "fusion 'none' is for no depth branch; the other modes need one"
            )
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"adapter.top_k must be in [1, {num_experts}], got {top_k}")
        self.num_layers, self.dim, self.num_experts = num_layers, dim, num_experts
        self.top_k, self.gating, self.distance_p, self.noisy = top_k, gating, distance_p, noisy
        self.routing, self.use_depth = routing, use_depth
        self.expert_logits, self.fusion, self.combine = expert_logits, fusion, combine

        self.experts = TokenExperts(num_layers, num_experts, num_tokens, rank, dim)
        if routing:
            modalities = 2 if use_depth else 1
            self.w_gate = nn.Parameter(torch.zeros(num_layers, modalities, dim, num_experts))
            self.w_noise = nn.Parameter(torch.zeros(num_layers, modalities, dim, num_experts))
        self.t2f = nn.Linear(dim, dim)
        self.delta = nn.Linear(dim, dim)
        self.alpha = nn.Parameter(torch.tensor(alpha_init))
        self.query_link = QueryLink(dim, query_dim) if query_dim > 0 else None

    def no_weight_decay_names(self) -> set[str]:
        """Parameter names (relative to this module) that AdamW must not decay (docs/spectralmoe.md §11)."""
        names = {"experts.experts_a", "experts.experts_b", "alpha"}
        if self.routing:
            names |= {"w_gate", "w_noise"}
        return names

    def _route_and_refine(self, layer: int, modality: int, x: Tensor, tokens: Tensor,
                          values: Tensor) -> tuple[Tensor, Tensor]:
        """x B×N×d → (Δ B×N×d, router loss scalar); tokens E×m×d, values E×(m−1)×d of this layer."""
        b, n, d = x.shape
        flat = x.reshape(b * n, d)
        if self.routing:
            r = route(
                flat,
                self.w_gate[layer, modality],
                self.w_noise[layer, modality],
                top_k=self.top_k,
                gating=self.gating,
                p=self.distance_p,
                noisy=self.noisy,
                training=self.training,
            )
            experts, loss = r.experts, r.loss
            gates = r.probs.gather(1, experts) if self.combine == "switch" else r.gates
        else:
            experts = torch.zeros(b * n, 1, dtype=torch.long, device=x.device)
            gates = torch.ones(b * n, 1, dtype=x.dtype, device=x.device)
            loss = x.new_zeros(())
        delta = refine_grouped(
            flat, experts, gates, tokens, values, mode=self.expert_logits, combine=self.combine
        )
        return delta.reshape(b, n, d), loss

    def forward(self, layer: int, visual: Tensor, depth: Tensor | None = None) -> AdapterOutput:
        """Refine the visual patch tokens (B×N×d) after block ``layer``; depth tokens B×N×d when ``use_depth``."""
        if self.use_depth and depth is None:
            raise ValueError("SpectralMoE with use_depth needs the depth tokens of every block")
        tokens = self.experts.tokens(layer)  # E×m×d
        values = token_values(tokens, self.t2f)  # once per layer, shared by both modalities
        delta_v, loss = self._route_and_refine(layer, VISUAL, visual, tokens, values)
        delta_d = None
        if self.use_depth:
            if depth.shape != visual.shape:
                raise ValueError(
                    f"depth tokens {tuple(depth.shape)} must match the visual tokens {tuple(visual.shape)}"
                )
            delta_d, loss_d = self._route_and_refine(layer, DEPTH, depth, tokens, values)
            loss = loss + loss_d
        mixed = fuse(delta_v, delta_d, self.fusion, residual=visual)  # δ + f^v
        # α folded into delta's weights: f + α·(W h + b) = f + (αW) h + αb scales d² weights instead of the B·N·d
        # update, and keeps no scaled copy of the update for the backward pass
        update = F.linear(mixed, self.alpha * self.delta.weight, self.alpha * self.delta.bias)
        return AdapterOutput(tokens=visual + update, loss=LOAD_LOSS_SCALE * loss)

    def query_embeddings(self) -> Tensor | None:
        """m×q query positional embeddings for Mask2Former, or None without a link."""
        if self.query_link is None:
            return None
        return self.query_link(self.experts.all_tokens())
