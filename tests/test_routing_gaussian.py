"""Gaussian gating is bit-exact with the public SpectralMoE router, forward and backward.

The reference below is the public router's gaussian branch written out step by step from the authors' code
(github.com/daxichen/SpectralMoE-main, ``SpectralMoE/models/backbones/depthmoe.py``: ``_get_logits``,
``_top_k_gating``, ``_prob_in_top_k``, ``cv_squared``): clean logits −cdist(x, Wᵀ)², noise scale
softplus(x·W_noise) + 0.01, top-k of the noisy logits, gates exp(l − logsumexp(l)) over the kept logits, the load
as the probability of staying in the top k under fresh noise (a standard normal CDF), and cv² of importance and
load. Nothing here calls rsmoe's routing code.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rsmoe.models.adapters.routing import route

T, DIM, E = 300, 64, 6  # tokens, width, experts (the published configs use 6 experts, top-1)


def public_gaussian_router(x, w_gate, w_noise, noise, k):
    """(experts, gates of the kept experts, loss) as the public layer computes them while training."""
    clean = -torch.pow(torch.cdist(x, torch.t(w_gate)), 2)
    sigma = F.softplus(x @ w_noise) + 1e-2
    noisy = clean + noise * sigma
    top_values, top_indices = noisy.topk(min(k + 1, E), dim=1)
    kept, experts = top_values[:, :k], top_indices[:, :k]
    gates_k = torch.exp(kept - torch.logsumexp(kept, dim=1, keepdim=True))
    gates = torch.zeros_like(noisy).scatter(1, experts, gates_k)
    flat = top_values.flatten()
    first = torch.arange(x.shape[0]) * top_values.shape[1] + k  # (k+1)-th value of each row
    threshold_in = flat.gather(0, first).unsqueeze(1)
    threshold_out = flat.gather(0, first - 1).unsqueeze(1)
    normal = torch.distributions.normal.Normal(torch.tensor([0.0]), torch.tensor([1.0]))
    prob = torch.where(noisy > threshold_in, normal.cdf((clean - threshold_in) / sigma),
                       normal.cdf((clean - threshold_out) / sigma))
    load = prob.sum(0)
    importance = gates.sum(0)

    def cv2(v):
        return v.float().var() / (v.float().mean() ** 2 + 1e-10)

    return experts, gates_k, cv2(importance) + cv2(load)


def _inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, DIM, generator=g)
    w_gate = torch.randn(DIM, E, generator=g) * 0.5
    w_noise = torch.randn(DIM, E, generator=g) * 0.05
    noise = torch.randn(T, E, generator=g)
    weights = torch.randn(T, 1, generator=g)  # a downstream use of the gates, so they carry gradient too
    return x, w_gate, w_noise, noise, weights


def _grads(fn, x, w_gate, w_noise, noise, weights, k):
    leaves = [t.clone().requires_grad_(True) for t in (x, w_gate, w_noise)]
    experts, gates, loss = fn(*leaves, noise, k)
    (loss + (gates * weights).sum()).backward()
    return experts, gates, loss, [t.grad for t in leaves]


def _rsmoe(x, w_gate, w_noise, noise, k):
    r = route(x, w_gate, w_noise, top_k=k, gating="gaussian", noisy=True, training=True, noise=noise)
    return r.experts, r.gates, r.loss


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_router_is_bit_exact_with_the_public_code(seed):
    inputs = _inputs(seed)
    got = _grads(_rsmoe, *inputs, k=1)
    want = _grads(public_gaussian_router, *inputs, k=1)
    assert torch.equal(got[0], want[0])  # same experts
    assert torch.equal(got[1], want[1])  # same gates
    assert torch.equal(got[2], want[2])  # same router loss, bit for bit
    for name, mine, theirs in zip(("x", "w_gate", "w_noise"), got[3], want[3]):
        assert torch.equal(mine, theirs), f"gradient of {name} differs"
    assert len(set(got[0].flatten().tolist())) > 2  # tokens really spread over several experts


def test_expanding_the_square_would_not_be_bit_exact():
    """The same data through ‖x‖² − 2x·w + ‖w‖² (the former formula) misses bit-exactness: the test above can
    tell the two apart."""

    x, w_gate, _, _, _ = _inputs(0)
    expanded = (x * x).sum(-1, keepdim=True) - 2 * x @ w_gate + (w_gate * w_gate).sum(0)[None, :]
    assert not torch.equal(-expanded.clamp_min(0), -torch.cdist(x, w_gate.t()) ** 2)


@pytest.mark.parametrize("k", [2, 3])
def test_gaussian_router_top_k_matches_the_public_code(k):
    """k > 1: the gates are a softmax here and exp(l − logsumexp l) in the public code. With gaussian logits of
    size ~10², float32 rounds l − logsumexp(l) to ~1e-5 relative; the router loss's gradient cancels most of its
    terms, which magnifies that to ~0.5 % of the gradient norm (with the public gate formula substituted, the
    two are bit-identical here too). Experts are identical; everything else agrees to that rounding."""
    inputs = _inputs(2)
    got = _grads(_rsmoe, *inputs, k=k)
    want = _grads(public_gaussian_router, *inputs, k=k)
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(got[2], want[2], rtol=2e-5, atol=1e-6)
    for mine, theirs in zip(got[3], want[3]):
        assert float((mine - theirs).norm() / theirs.norm()) < 1e-2
