"""The SpectralMoE plug-in against slow, direct implementations of docs/spectralmoe.md §4–§8 written here."""
import math

import pytest
import torch

from rsmoe.models.adapters import token_experts
from rsmoe.models.adapters.fusion import diagonal_attention_gate, fuse
from rsmoe.models.adapters.rein import build_rein
from rsmoe.models.adapters.routing import route
from rsmoe.models.adapters.spectralmoe import SpectralMoE

@pytest.fixture(autouse=True)
def seeded_torch():
    """Every test draws from torch's generator seeded with 0 (not from whatever state earlier tests left)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


# ----------------------------------------------------------------------------------------------- slow references
def ref_clean_logit(x, w, e, gating, p):
    col = [row[e] for row in w]
    if gating == "softmax":
        return float(sum(x[c] * col[c] for c in range(len(x))))
    if gating == "laplace":
        return -float(sum(abs(x[c] - col[c]) ** p for c in range(len(x))) ** (1.0 / p))
    return -float(sum((x[c] - col[c]) ** 2 for c in range(len(x))))


def ref_route(x, w_gate, w_noise, k, gating, p, noise=None):
    """Per-token loops: returns chosen experts (lists), gates, importance, load, loss (floats)."""
    t, num_e = x.shape[0], w_gate.shape[1]
    chosen, gates = [], []
    importance = [0.0] * num_e
    load = [0.0] * num_e
    for i in range(t):
        clean = [ref_clean_logit(x[i].tolist(), w_gate.tolist(), e, gating, p) for e in range(num_e)]
        if noise is not None:
            sig = [math.log1p(math.exp(float(x[i] @ w_noise[:, e]))) + 0.01 for e in range(num_e)]
            noisy = [clean[e] + float(noise[i, e]) * sig[e] for e in range(num_e)]
        else:
            noisy = clean
        order = sorted(range(num_e), key=lambda e: -noisy[e])
        top = order[:k]
        mx = max(noisy[e] for e in top)
        z = sum(math.exp(noisy[e] - mx) for e in top)
        g = [math.exp(noisy[e] - mx) / z for e in top]
        chosen.append(top)
        gates.append(g)
        for e, gv in zip(top, g):
            importance[e] += gv
        if noise is not None and k < num_e:
            t_in = noisy[order[k]]
            t_out = noisy[order[k - 1]]
            for e in range(num_e):
                thr = t_in if noisy[e] > t_in else t_out
                load[e] += 0.5 * (1 + math.erf((clean[e] - thr) / sig[e] / math.sqrt(2)))
        else:
            for e, gv in zip(top, g):
                load[e] += 1.0 if gv > 0 else 0.0

    def cv2(v):
        if len(v) == 1:
            return 0.0
        mean = sum(v) / len(v)
        var = sum((a - mean) ** 2 for a in v) / (len(v) - 1)
        return var / (mean**2 + 1e-10)

    return chosen, gates, importance, load, cv2(importance) + cv2(load)


def ref_refine_token(x, tokens, weight, bias, mode):
    """Δ for one token x (d) with one expert's tokens (m×d): first token in the softmax, not in the sum."""
    d = x.shape[0]
    m = tokens.shape[0]
    if mode == "official":
        logits = [float(x.sum()) * float(tokens[i].sum()) / math.sqrt(d) for i in range(m)]
    else:
        logits = [float(x @ tokens[i]) / math.sqrt(d) for i in range(m)]
    mx = max(logits)
    ex = [math.exp(v - mx) for v in logits]
    z = sum(ex)
    out = torch.zeros(d, dtype=torch.float64)
    for i in range(1, m):
        out += (ex[i] / z) * (weight.double() @ tokens[i].double() + bias.double())
    return out


def ref_layer(moe: SpectralMoE, layer, fv, fd):
    """The whole plug-in for one layer in eval mode, token by token (k = 1)."""
    b, n, d = fv.shape
    tokens = (moe.experts.experts_a[layer] @ moe.experts.experts_b[layer]).detach()
    w, bias = moe.t2f.weight.detach(), moe.t2f.bias.detach()

    def refine(x, modality):
        flat = x.reshape(b * n, d)
        chosen, *_rest, loss = ref_route(
            flat.detach(), moe.w_gate[layer, modality].detach(), None, 1, moe.gating, moe.distance_p
        )
        out = torch.stack([ref_refine_token(flat[i].detach(), tokens[chosen[i][0]], w, bias, moe.expert_logits)
                           for i in range(b * n)])
        return out.reshape(b, n, d), loss

    dv, lv = refine(fv, 0)
    dd, ld = refine(fd, 1)
    s = torch.softmax(dd @ dv.transpose(1, 2) / math.sqrt(d), dim=-1)  # B×N×N, depth query, visual key
    if moe.fusion == "official":
        fused = torch.diagonal(s, dim1=1, dim2=2).unsqueeze(-1) * dv
    elif moe.fusion == "cross_attention":
        fused = s @ dv
    else:
        fused = dv + dd
    upd = fused + fv.double()
    upd = upd @ moe.delta.weight.detach().double().t() + moe.delta.bias.detach().double()
    return fv.double() + float(moe.alpha.detach()) * upd, 1000 * (lv + ld)


def randomised(moe: SpectralMoE, scale=0.3):
    """Give every zero-initialised parameter random values so that the paths are exercised."""
    with torch.no_grad():
        for p in moe.parameters():
            p.copy_(torch.randn_like(p) * scale)
    return moe


# ------------------------------------------------------------------------------------------------------- routing
@pytest.mark.parametrize("gating,p", [("softmax", 2.0), ("gaussian", 2.0), ("laplace", 2.0), ("laplace", 1.0)])
@pytest.mark.parametrize("k", [1, 2])
def test_routing_eval_matches_loops(gating, p, k):
    x = torch.randn(13, 6, dtype=torch.float64)
    wg = torch.randn(6, 4, dtype=torch.float64)
    wn = torch.randn(6, 4, dtype=torch.float64)
    r = route(x, wg, wn, top_k=k, gating=gating, p=p, noisy=True, training=False)
    chosen, gates, imp, load, loss = ref_route(x, wg, None, k, gating, p)
    assert r.experts.tolist() == chosen
    torch.testing.assert_close(r.gates, torch.tensor(gates, dtype=torch.float64))
    torch.testing.assert_close(r.importance, torch.tensor(imp, dtype=torch.float64))
    torch.testing.assert_close(r.load, torch.tensor(load, dtype=torch.float64))
    assert r.loss.item() == pytest.approx(loss, rel=1e-9)
    if k == 1:
        assert torch.all(r.gates == 1)


@pytest.mark.parametrize("gating", ["softmax", "laplace", "gaussian"])
def test_noisy_routing_and_smooth_load_match_loops(gating):
    x = torch.randn(17, 5, dtype=torch.float64)
    wg = torch.randn(5, 4, dtype=torch.float64)
    wn = torch.randn(5, 4, dtype=torch.float64) * 0.5
    noise = torch.randn(17, 4, dtype=torch.float64)
    r = route(x, wg, wn, top_k=1, gating=gating, noisy=True, training=True, noise=noise)
    chosen, gates, imp, load, loss = ref_route(x, wg, wn, 1, gating, 2.0, noise=noise)
    assert r.experts.tolist() == chosen
    torch.testing.assert_close(r.load, torch.tensor(load, dtype=torch.float64))
    torch.testing.assert_close(r.importance, torch.tensor(imp, dtype=torch.float64))
    assert r.loss.item() == pytest.approx(loss, rel=1e-9)
    # the smooth load is fractional (not counts) and sums to at most T·(something) but differs from counts
    counts = torch.bincount(r.experts[:, 0], minlength=4).double()
    assert not torch.equal(r.load, counts)


def test_noise_only_in_training():
    x = torch.randn(64, 8)
    wg, wn = torch.randn(8, 6), torch.randn(8, 6)
    e1 = route(x, wg, wn, top_k=1, training=False).experts
    e2 = route(x, wg, wn, top_k=1, training=False).experts
    assert torch.equal(e1, e2)
    assert torch.equal(e1, (x @ wg).argmax(1, keepdim=True))
    torch.manual_seed(1)
    t1 = route(x, wg, wn * 5, top_k=1, training=True).experts
    t2 = route(x, wg, wn * 5, top_k=1, training=True).experts
    assert not torch.equal(t1, t2), "training-mode routing must draw fresh noise"
    assert torch.equal(route(x, wg, wn * 5, top_k=1, training=True, noisy=False).experts, e1)


def test_router_gradient_flows_only_through_load_loss_for_k1():
    x = torch.randn(32, 8)
    wg = torch.randn(8, 4, requires_grad=True)
    wn = torch.randn(8, 4, requires_grad=True)
    r = route(x, wg, wn, top_k=1, training=True)
    r.loss.backward()
    assert wg.grad is not None and wg.grad.abs().sum() > 0
    assert wn.grad is not None and wn.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ refinement
@pytest.mark.parametrize("mode", ["official", "dot"])
def test_expert_refinement_matches_per_token_loop(mode):
    d, m, num_e = 8, 5, 3
    x = torch.randn(11, d, dtype=torch.float64)
    tokens = torch.randn(num_e, m, d, dtype=torch.float64)
    t2f = torch.nn.Linear(d, d).double()
    experts = torch.randint(0, num_e, (11, 1))
    out = token_experts.refine_grouped(x, experts, torch.ones(11, 1, dtype=torch.float64), tokens,
                                       token_experts.token_values(tokens, t2f), mode=mode)
    for i in range(11):
        ref = ref_refine_token(x[i], tokens[experts[i, 0]], t2f.weight.detach(), t2f.bias.detach(), mode)
        torch.testing.assert_close(out[i].detach(), ref)


def test_official_logits_depend_only_on_feature_sum():
    tokens = torch.randn(7, 16)
    a = torch.randn(1, 16)
    b = torch.randn(1, 16)
    b = b - b.sum() / 16 + a.sum() / 16  # same feature sum, different vector
    wa = token_experts.expert_attention(a, tokens, "official")
    wb = token_experts.expert_attention(b, tokens, "official")
    torch.testing.assert_close(wa, wb)
    assert not torch.allclose(token_experts.expert_attention(a, tokens, "dot"),
                              token_experts.expert_attention(b, tokens, "dot"))


@pytest.mark.parametrize("combine", ["official", "weighted", "switch"])
def test_top2_combine(combine):
    d, m = 6, 4
    x = torch.randn(9, d, dtype=torch.float64)
    tokens = torch.randn(3, m, d, dtype=torch.float64)
    t2f = torch.nn.Linear(d, d).double()
    experts = torch.stack([torch.randperm(3)[:2] for _ in range(9)])
    gates = torch.softmax(torch.randn(9, 2, dtype=torch.float64), 1)
    out = token_experts.refine_grouped(x, experts, gates, tokens, token_experts.token_values(tokens, t2f),
                                       mode="dot", combine=combine)
    for i in range(9):
        parts = [ref_refine_token(x[i], tokens[e], t2f.weight.detach(), t2f.bias.detach(), "dot")
                 for e in experts[i].tolist()]
        if combine == "official":
            ref = torch.log(torch.exp(parts[0]) + torch.exp(parts[1]))
        else:
            ref = gates[i, 0] * parts[0] + gates[i, 1] * parts[1]
        torch.testing.assert_close(out[i].detach(), ref)


def test_switch_combine_scales_by_full_softmax_probability():
    """combine=switch: Δ of a token = p_e · Δ_e with p the softmax over all E router logits (eval: clean logits)."""
    torch.manual_seed(5)
    for k in (1, 2):
        moe = randomised(SpectralMoE(num_layers=1, dim=6, num_experts=3, num_tokens=4, rank=2, top_k=k,
                                     use_depth=False, fusion="none", combine="switch", query_dim=0)).double().eval()
        x = torch.randn(1, 7, 6, dtype=torch.float64)
        tokens = moe.experts.tokens(0).detach()
        values = token_experts.token_values(tokens, moe.t2f).detach()
        delta, _ = moe._route_and_refine(0, 0, x, tokens, values)
        w_gate = moe.w_gate[0, 0].detach()
        for n in range(7):
            logits = x[0, n] @ w_gate  # softmax gating
            probs = [math.exp(v) / sum(math.exp(u) for u in logits.tolist()) for v in logits.tolist()]
            chosen = sorted(range(3), key=lambda e: -logits[e].item())[:k]
            ref = sum(probs[e] * ref_refine_token(x[0, n], tokens[e], moe.t2f.weight.detach(),
                                                  moe.t2f.bias.detach(), "official") for e in chosen)
            torch.testing.assert_close(delta[0, n].detach(), ref)


@pytest.mark.parametrize("k", [1, 2])
def test_only_switch_gives_the_router_a_task_gradient(k):
    """The public combination uses no gate value, so the routers learn only from the balancing loss; with
    combine=switch the task loss reaches W_gate (and W_noise, through the noisy logits in training)."""
    grads = {}
    for combine in ("official", "switch"):
        torch.manual_seed(0)
        moe = randomised(SpectralMoE(num_layers=1, dim=8, num_experts=3, num_tokens=4, rank=2, top_k=k,
                                     combine=combine, query_dim=0)).train()
        fv, fd = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
        task = moe(0, fv, fd).tokens.square().sum()  # the task side only, no router loss
        grads[combine] = torch.autograd.grad(task, [moe.w_gate, moe.w_noise], allow_unused=True)
    assert grads["official"] == (None, None)
    assert all(g is not None and g.abs().sum() > 0 for g in grads["switch"])


def test_grouped_compute_touches_each_token_once_per_chosen_expert(monkeypatch):
    rows = []
    real = token_experts.expert_weights

    def counting(x, keys):
        rows.append(x.shape[0])
        return real(x, keys)

    monkeypatch.setattr(token_experts, "expert_weights", counting)
    x = torch.randn(50, 8)
    experts = torch.randint(0, 6, (50, 1))
    tokens = torch.randn(6, 5, 8)
    values = token_experts.token_values(tokens, torch.nn.Linear(8, 8))
    token_experts.refine_grouped(x, experts, torch.ones(50, 1), tokens, values)
    assert sum(rows) == 50 and len(rows) == len(torch.unique(experts))


# ---------------------------------------------------------------------------------------------------- fusion
def test_official_fusion_diagonal_without_full_matrix():
    q = torch.randn(2, 300, 16, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 300, 16, dtype=torch.float64, requires_grad=True)
    gate = diagonal_attention_gate(q, k, chunk=64)
    full = torch.softmax(q @ k.transpose(1, 2) / 4.0, dim=-1).diagonal(dim1=1, dim2=2)
    torch.testing.assert_close(gate, full)
    g1 = torch.autograd.grad(gate.sin().sum(), (q, k))
    g2 = torch.autograd.grad(full.sin().sum(), (q, k))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("mode", ["official", "cross_attention", "add", "none"])
def test_fusion_modes(mode):
    dv = torch.randn(2, 10, 8, dtype=torch.float64)
    dd = torch.randn(2, 10, 8, dtype=torch.float64)
    out = fuse(dv, dd if mode != "none" else None, mode)
    s = torch.zeros(2, 10, 10, dtype=torch.float64)
    for b in range(2):
        for n in range(10):
            logits = [float(dd[b, n] @ dv[b, j]) / math.sqrt(8) for j in range(10)]
            z = sum(math.exp(v) for v in logits)
            for j in range(10):
                s[b, n, j] = math.exp(logits[j]) / z
    expected = {
        "official": torch.stack([torch.stack([s[b, n, n] * dv[b, n] for n in range(10)]) for b in range(2)]),
        "cross_attention": torch.einsum("bnm,bmd->bnd", s, dv),
        "add": dv + dd,
        "none": dv,
    }[mode]
    torch.testing.assert_close(out, expected)


# -------------------------------------------------------------------------------------------------- the layer
@pytest.mark.parametrize("gating", ["softmax", "laplace", "gaussian"])
@pytest.mark.parametrize("fusion", ["official", "cross_attention", "add"])
@pytest.mark.parametrize("logits", ["official", "dot"])
def test_layer_matches_slow_reference(gating, fusion, logits):
    torch.manual_seed(3)
    moe = SpectralMoE(num_layers=2, dim=8, num_experts=3, num_tokens=5, rank=2, gating=gating, fusion=fusion,
                      expert_logits=logits, query_dim=4).double()
    randomised(moe)
    moe.eval()
    fv = torch.randn(2, 6, 8, dtype=torch.float64)
    fd = torch.randn(2, 6, 8, dtype=torch.float64)
    out = moe(1, fv, fd)
    ref, ref_loss = ref_layer(moe, 1, fv, fd)
    torch.testing.assert_close(out.tokens.detach(), ref)
    assert out.loss.item() == pytest.approx(ref_loss, rel=1e-9, abs=1e-9)


def test_alpha_update_and_zero_init_identity():
    moe = SpectralMoE(num_layers=1, dim=8, num_experts=2, num_tokens=4, rank=2, query_dim=0)
    moe.eval()
    fv, fd = torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    # B = 0 → tokens are 0 → Δ = Σ_{i≥2} a_i t2f(0) = (1 − a_1) · bias; check the α-scaled update exactly
    out = moe(0, fv, fd).tokens
    a1 = 1.0 / 4  # all logits equal (tokens zero) → uniform weights
    delta_v = (1 - a1) * moe.t2f.bias.detach().expand(1, 5, 8)
    fused = fuse(delta_v, delta_v.clone(), "official")
    expected = fv + moe.alpha.detach() * moe.delta(fused + fv).detach()
    torch.testing.assert_close(out.detach(), expected)
    with torch.no_grad():
        moe.alpha.fill_(0.0)
    torch.testing.assert_close(moe(0, fv, fd).tokens, fv)


def test_query_link_element_order():
    moe = randomised(SpectralMoE(num_layers=3, dim=6, num_experts=2, num_tokens=4, rank=2, query_dim=5))
    q = moe.query_embeddings()
    tokens = moe.experts.all_tokens().detach()  # L×E×m×d
    per_layer = [moe.query_link.transform(tokens[l].mean(0)).detach() for l in range(3)]  # m×q each
    merged = torch.zeros(4, 15)
    for i in range(4):
        for c in range(5):
            vals = [per_layer[l][i, c] for l in range(3)]
            merged[i, 3 * c + 0] = max(vals)
            merged[i, 3 * c + 1] = sum(vals) / 3
            merged[i, 3 * c + 2] = vals[-1]
    expected = moe.query_link.merge(merged).detach()
    torch.testing.assert_close(q.detach(), expected)


def test_rein_is_the_single_expert_special_case():
    rein = randomised(build_rein(num_layers=2, dim=8, num_tokens=5, rank=3, query_dim=4)).double()
    rein.train()  # no routers, no noise: training mode changes nothing
    f = torch.randn(2, 7, 8, dtype=torch.float64)
    out = rein(1, f)
    # Rein: tokens T = A B, a = softmax(f Tᵀ/√d), Δ = a[:, 1:] t2f(T[1:]), f + α·delta(Δ + f)
    t = (rein.experts.experts_a[1, 0] @ rein.experts.experts_b[1, 0]).detach()
    a = torch.softmax(f @ t.t() / math.sqrt(8), dim=-1)
    delta = a[..., 1:] @ rein.t2f(t[1:]).detach()
    expected = f + rein.alpha.detach() * rein.delta(delta + f).detach()
    torch.testing.assert_close(out.tokens.detach(), expected)
    assert out.loss.item() == 0.0
    assert not hasattr(rein, "w_gate")


def test_parameter_count_formula():
    d, m, L, E, r = 64, 10, 4, 3, 5
    moe = SpectralMoE(num_layers=L, dim=d, num_experts=E, num_tokens=m, rank=r, query_dim=32)
    expected = E * L * r * (m + d) + 2 * 2 * d * E * L + 2 * (d * d + d) + (d * 32 + 32) + (96 * 32 + 32) + 1
    assert sum(p.numel() for p in moe.parameters()) == expected


def test_invalid_configs_are_clear_errors():
    with pytest.raises(ValueError, match="gating"):
        SpectralMoE(num_layers=1, dim=4, gating="cosine")
    with pytest.raises(ValueError, match="fusion"):
        SpectralMoE(num_layers=1, dim=4, use_depth=False, fusion="official")
    with pytest.raises(ValueError, match="top_k"):
        SpectralMoE(num_layers=1, dim=4, num_experts=2, top_k=3)


# ------------------------------------------------- the grouped compute: gradients, shortcuts, bfloat16 autocast
def per_token_refinement(x, experts, tokens, values, mode):
    """Δ of every token with its own expert, one token at a time through autograd (no grouping, no sorting)."""
    rows = []
    for i in range(x.shape[0]):
        attn = token_experts.expert_attention(x[i : i + 1], tokens[experts[i]], mode)
        rows.append(attn[:, 1:] @ values[experts[i]])
    return torch.cat(rows)


@pytest.mark.parametrize("mode", ["official", "dot"])
@pytest.mark.parametrize("assignment", ["mixed", "one_expert_empty_others", "all_to_one"])
def test_grouped_refinement_gradients_match_per_token_autograd(mode, assignment):
    d, m, num_e, t = 8, 5, 4, 23
    x = torch.randn(t, d, dtype=torch.float64, requires_grad=True)
    tokens = torch.randn(num_e, m, d, dtype=torch.float64, requires_grad=True)
    values = torch.randn(num_e, m - 1, d, dtype=torch.float64, requires_grad=True)
    experts = {"mixed": torch.randint(0, num_e, (t,)),
               "one_expert_empty_others": torch.tensor([0, 2] * 11 + [2]),  # experts 1 and 3 get nothing
               "all_to_one": torch.full((t,), 3)}[assignment]
    out = token_experts.refine_grouped(x, experts[:, None], torch.ones(t, 1, dtype=torch.float64), tokens, values,
                                       mode=mode)
    ref = per_token_refinement(x, experts, tokens, values, mode)
    torch.testing.assert_close(out, ref)
    weight = torch.randn(t, d, dtype=torch.float64)
    grads = torch.autograd.grad((out * weight).sum(), (x, tokens, values))
    ref_grads = torch.autograd.grad((ref * weight).sum(), (x, tokens, values))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("fusion", ["official", "cross_attention", "add"])
def test_layer_under_bfloat16_autocast_is_close_to_float32(fusion):
    """The plug-in runs under CPU bfloat16 autocast (train.precision: bf16-mixed) and stays near the float32 result."""
    moe = randomised(SpectralMoE(num_layers=1, dim=32, num_experts=3, num_tokens=6, rank=4, gating="laplace",
                                 fusion=fusion, query_dim=0), scale=0.1).train()
    fv, fd = torch.randn(2, 20, 32), torch.randn(2, 20, 32)
    with torch.random.fork_rng(devices=[]):
        ref = moe(0, fv, fd)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = moe(0, fv, fd)
    assert out.tokens.dtype == torch.float32  # the residual stream keeps its dtype
    torch.testing.assert_close(out.tokens, ref.tokens, rtol=2e-2, atol=2e-2)
    (out.tokens.square().mean() + out.loss).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in moe.parameters() if p.requires_grad)


def test_official_gate_unchunked_path_and_bfloat16():
    """Small B·N² takes the one-piece path (kept for backward, no recomputation); gradients are the full softmax's,
    and under bfloat16 autocast the gate (a float32 result) stays within bfloat16 rounding of it."""
    q = torch.randn(2, 40, 16, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 40, 16, dtype=torch.float64, requires_grad=True)
    gate = diagonal_attention_gate(q, k)
    full = torch.softmax(q @ k.transpose(1, 2) / 4.0, dim=-1).diagonal(dim1=1, dim2=2)
    torch.testing.assert_close(gate, full)
    for a, b in zip(torch.autograd.grad(gate.cos().sum(), (q, k)), torch.autograd.grad(full.cos().sum(), (q, k))):
        torch.testing.assert_close(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = diagonal_attention_gate(q.detach().float(), k.detach().float(), chunk=16)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low.double(), full.detach(), rtol=0, atol=0.05)
