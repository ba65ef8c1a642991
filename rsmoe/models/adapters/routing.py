"""Noisy top-k token routing and the load-balancing loss of SpectralMoE (arXiv 2603.13352; supplementary §8.1 for
the gating functions; the public router is ``SpectralMoE/models/backbones/depthmoe.py`` in
github.com/daxichen/SpectralMoE-main).

One router per layer and modality sends every token x ∈ R^d to k of E experts. Shapes use T for the number of
routed tokens (B·N flattened).

Clean logits h_e (``gating``):

- ``softmax``:  h_e = x · w_e
- ``laplace``:  h_e = −‖x − w_e‖_p   (p = ``distance_p``, default 2 as in the public code)
- ``gaussian``: h_e = −‖x − w_e‖₂²

where w_e is column e of W_gate. While training with noise, h̃_e = h_e + ε_e·(softplus(x · W_noise[:, e]) + 0.01),
ε ~ N(0, 1); no noise in eval. The top-k of h̃ are kept and their gates are the softmax over the kept logits only.

Load balancing (Shazeer et al. 2017): importance_e = Σ_tokens gate_e; load_e = Σ_tokens P(e in top-k under fresh
noise) while training with noise (the smooth estimate), otherwise the count of tokens with gate_e > 0. The router
loss of one modality is cv²(importance) + cv²(load), cv²(v) = var(v) / (mean(v)² + 1e-10), unbiased variance,
0 when E = 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

GATINGS = ("softmax", "gaussian", "laplace")
NOISE_FLOOR = 0.01


@dataclass
class Routing:
    """Result of routing T tokens to k of E experts.

    experts: T×k int64 expert indices (best first); gates: T×k gate values (sum to 1 per token);
    probs: T×E softmax over all E (noisy, when noise is used) logits (the Switch-style ``combine: switch`` gate);
    importance, load: (E,) float; loss: scalar cv²(importance) + cv²(load).
    """

    experts: Tensor
    gates: Tensor
    probs: Tensor
    importance: Tensor
    load: Tensor
    loss: Tensor


def clean_logits(x: Tensor, w_gate: Tensor, gating: str, p: float = 2.0) -> Tensor:
    """x T×d, w_gate d×E → T×E clean router logits."""
    if gating == "softmax":
        return x @ w_gate
    centres = w_gate.t()  # E×d
    if gating == "laplace":
        return -torch.cdist(x, centres, p=p)
    if gating == "gaussian":
        # the square of torch.cdist, as the public code computes it (SpectralMoE's depthmoe.py `_get_logits`:
        # -torch.pow(torch.cdist(x, w_gate.t()), 2)). Expanding ‖x‖² − 2x·w + ‖w‖² instead rounds differently,
        # and the noisy load estimate amplifies that into training gradients ~1e-4 (relative) off the public layer.
        return -torch.cdist(x, centres) ** 2
    raise ValueError(f"unknown gating {gating!r}; expected one of {GATINGS}")


def cv_squared(v: Tensor) -> Tensor:
    """Squared coefficient of variation with unbiased variance; 0 for a single element."""
    if v.numel() <= 1:
        return v.new_zeros(())
    if v.dtype in (torch.float16, torch.bfloat16):
        v = v.float()
    return v.var() / (v.mean() ** 2 + 1e-10)


def _normal_cdf(z: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(z / 2**0.5))


def route(
    x: Tensor,
    w_gate: Tensor,
    w_noise: Tensor,
    *,
    top_k: int,
    gating: str = "softmax",
    p: float = 2.0,
    noisy: bool = True,
    training: bool = False,
    noise: Tensor | None = None,
) -> Routing:
    """Route tokens x (T×d) with one router (W_gate, W_noise: d×E).

    ``noise`` (T×E standard normal) may be passed to make a training-mode call reproducible; by default it is drawn
    with ``torch.randn_like``. Noise is used only when ``noisy and training``.
    """
    num_experts = w_gate.shape[1]
    if not 1 <= top_k <= num_experts:
        raise ValueError(f"top_k must be in [1, {num_experts}], got {top_k}")
    clean = clean_logits(x, w_gate, gating, p)
    use_noise = noisy and training
    if use_noise:
        sigma = F.softplus(x @ w_noise) + NOISE_FLOOR
        eps = torch.randn_like(clean) if noise is None else noise
        logits = clean + eps * sigma
    else:
        logits = clean

    keep = min(top_k + 1, num_experts)
    top_values, top_indices = logits.topk(keep, dim=1)
    experts = top_indices[:, :top_k]
    kept = top_values[:, :top_k]
    gates = torch.softmax(kept, dim=1)
    dense = torch.zeros_like(logits).scatter(1, experts, gates)
    importance = dense.sum(0)

    if use_noise and top_k < num_experts:
        t_in = top_values[:, top_k : top_k + 1]  # (k+1)-th largest noisy logit
        t_out = top_values[:, top_k - 1 : top_k]  # k-th largest
        is_in = logits > t_in
        prob = torch.where(is_in, _normal_cdf((clean - t_in) / sigma), _normal_cdf((clean - t_out) / sigma))
        load = prob.sum(0)
    else:
        load = (dense > 0).sum(0).to(dense.dtype)

    loss = cv_squared(importance) + cv_squared(load)
    return Routing(experts=experts, gates=gates, probs=torch.softmax(logits, dim=1), importance=importance,
                   load=load, loss=loss)
