"""Low-rank token experts and their refinement of routed tokens (docs/spectralmoe.md §3, §5).

Expert e of layer ℓ owns m learned tokens T_{ℓ,e} = A_{ℓ,e} B_{ℓ,e} ∈ R^{m×d}, with A ∈ R^{m×r} (Kaiming-uniform,
a = √5) and B ∈ R^{r×d} (zeros). A token x sent to expert e gets the refinement

    Δ(x) = Σ_{i=2..m} a_i · t2f(t_i)

where a = softmax over all m tokens of the expert logits (the first token joins the normalisation but not the sum):

- ``official``: logits_i = (Σ_c x_c)(Σ_c t_{i,c}) / √d — what the public code computes (sum times sum);
- ``dot``:      logits_i = x · t_i / √d — the dot product the paper and Rein describe.

Compute is grouped by expert: each expert only sees the tokens routed to it (never all E for every token).
The per-expert refinements of a token are combined by ``combine``:

- ``official``: log Σ_e exp(Δ_e) over the chosen experts, without gate weights (the public combiner; identity for
  k = 1). The router then gets no gradient from the task, only from the load-balancing loss;
- ``weighted``: Σ_e gate_e · Δ_e, gates = softmax over the k kept logits (k = 1: the gate is 1, again no task
  gradient);
- ``switch``: Σ_e p_e · Δ_e over the chosen experts, p = softmax over **all** E router logits (Switch Transformer,
  Fedus et al. 2021, eq. 2): the chosen expert's probability scales its refinement, so the router learns from the
  task at every k. Not in the paper or the public code: an rsmoe option.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

EXPERT_LOGITS = ("official", "dot")
COMBINES = ("official", "weighted", "switch")


class TokenExperts(nn.Module):
    """A_{ℓ,e} and B_{ℓ,e} for L layers × E experts, stored as two stacked parameters.

    experts_a: L×E×m×r, experts_b: L×E×r×d.
    """

    def __init__(self, num_layers: int, num_experts: int, num_tokens: int, rank: int, dim: int):
        super().__init__()
        self.num_layers, self.num_experts = num_layers, num_experts
        self.num_tokens, self.rank, self.dim = num_tokens, rank, dim
        self.experts_a = nn.Parameter(torch.empty(num_layers, num_experts, num_tokens, rank))
        self.experts_b = nn.Parameter(torch.zeros(num_layers, num_experts, rank, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Kaiming-uniform with a = √5 on each m×r matrix: bound = 1/√r (fan_in = r)
        if self.experts_a.device.type == "meta":
            return
        for layer in range(self.num_layers):
            for e in range(self.num_experts):
                nn.init.kaiming_uniform_(self.experts_a.data[layer, e], a=math.sqrt(5))
        nn.init.zeros_(self.experts_b)

    def tokens(self, layer: int) -> Tensor:
        """E×m×d expert tokens of one layer."""
        return self.experts_a[layer] @ self.experts_b[layer]

    def all_tokens(self) -> Tensor:
        """L×E×m×d expert tokens of every layer."""
        return self.experts_a @ self.experts_b


def expert_attention(x: Tensor, tokens: Tensor, mode: str) -> Tensor:
    """Attention weights of tokens x (n×d) over one expert's m tokens (m×d) → n×m (softmax over m)."""
    d = x.shape[-1]
    if mode == "official":
        logits = x.sum(-1, keepdim=True) * tokens.sum(-1)[None, :] / math.sqrt(d)
    elif mode == "dot":
        logits = x @ tokens.t() / math.sqrt(d)
    else:
        raise ValueError(f"unknown expert_logits {mode!r}; expected one of {EXPERT_LOGITS}")
    return torch.softmax(logits, dim=-1)


def logit_operands(x: Tensor, tokens: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """(row keys R, expert keys K) such that the expert logits of token n with expert e are R[n] @ K[e].

    ``official``: R = Σ_c x_c (T×1) and K[e] = (Σ_c t_{e,i,c})/√d (E×1×m): the public logits see only the two sums,
    so nothing T×d is gathered for them. ``dot``: R = x (T×d) and K[e] = T_eᵀ/√d (E×d×m)."""
    scale = 1.0 / math.sqrt(x.shape[-1])
    if mode == "official":
        return x.sum(-1, keepdim=True), (tokens.sum(-1) * scale).unsqueeze(1)
    if mode == "dot":
        return x, tokens.transpose(1, 2) * scale
    raise ValueError(f"unknown expert_logits {mode!r}; expected one of {EXPERT_LOGITS}")


def expert_weights(rows: Tensor, keys: Tensor) -> Tensor:
    """Attention weights (n×m, softmax over m) of n rows (n×c row keys) over one expert's m tokens (keys c×m)."""
    return torch.softmax(rows @ keys, dim=-1)


def grouped_refinement(rows: Tensor, experts: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """Δ (R×d) of R rows, row r sent to expert ``experts[r]`` (R int64); ``rows`` R×c and ``keys`` E×c×m from
    :func:`logit_operands`, ``values`` E×(m−1)×d.

    The rows are sorted by expert once (one gather), each expert's block gets one softmax and one matmul against its
    values, and the blocks go back to row order with one more gather; an expert that gets every row skips both."""
    counts = torch.bincount(experts, minlength=values.shape[0]).tolist()
    present = [e for e, c in enumerate(counts) if c]
    if len(present) == 1:
        e = present[0]
        return expert_weights(rows, keys[e])[:, 1:] @ values[e]
    order = torch.argsort(experts, stable=True)
    blocks = rows.index_select(0, order).split(counts)
    parts = [expert_weights(blocks[e], keys[e])[:, 1:] @ values[e] for e in present]
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return torch.cat(parts).index_select(0, inverse)


def token_values(tokens: Tensor, t2f: nn.Module) -> Tensor:
    """E×m×d expert tokens → E×(m−1)×d values t2f(t_i) for i = 2..m (the first token is never summed)."""
    return t2f(tokens[:, 1:])


def refine_grouped(
    x: Tensor,
    experts: Tensor,
    gates: Tensor,
    tokens: Tensor,
    values: Tensor,
    *,
    mode: str = "official",
    combine: str = "official",
) -> Tensor:
    """Refinement Δ (T×d) of tokens x (T×d) routed to ``experts`` (T×k, gates T×k: for ``combine`` weighted the
    softmax over the kept logits, for switch the full-softmax probabilities of the chosen experts).

    ``tokens``: E×m×d expert tokens (the attention keys); ``values``: E×(m−1)×d, t2f of every token but the first
    (:func:`token_values`; computed once per layer and shared by both modalities). Each expert computes only on the
    tokens routed to it.
    """
    num_tokens, k = experts.shape
    if combine not in COMBINES:
        raise ValueError(f"unknown combine {combine!r}; expected one of {COMBINES}")
    rows, keys = logit_operands(x, tokens, mode)
    if k == 1:
        delta = grouped_refinement(rows, experts[:, 0], keys, values)
        return delta * gates if combine == "switch" else delta
    # slot j of token n is row n·k + j
    slot_out = grouped_refinement(rows.repeat_interleave(k, dim=0), experts.reshape(-1), keys, values)
    slot_out = slot_out.reshape(num_tokens, k, -1)
    if combine in ("weighted", "switch"):
        return (gates.unsqueeze(-1) * slot_out).sum(1)
    return torch.logsumexp(slot_out, dim=1)
