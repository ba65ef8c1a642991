"""Mask2Former head: deformable attention, matching, losses, inference, and the whole head on a tiny config."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from rsmoe.models.heads.deformable_attention import (
    MultiScaleDeformableAttention,
    level_reference_points,
    ms_deform_attn_sample,
)
from rsmoe.models.heads.mask2former import (
    Mask2FormerHead,
    MaskedAttentionDecoderLayer,
    attention_mask_from_logits,
    gn_groups,
    semantic_inference,
    sine_positional_encoding,
)
from rsmoe.models.heads.matching import hungarian_match, uncertain_point_coords

TINY = dict(channels=32, num_queries=8, pixel_decoder_layers=2, decoder_layers=2, num_heads=4, num_points=2,
            ffn_pixel=64, ffn_decoder=64, num_points_loss=1024)


@pytest.fixture(autouse=True)
def _one_thread():
    """These ops are tiny: one thread is as fast idle and several times faster on a busy 2-core machine (no
    OpenMP spin-waiting against other processes)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_head(num_classes=3, in_ch=16, **kw):
    return Mask2FormerHead([in_ch] * 4, num_classes, **{**TINY, **kw})


# ---------------------------------------------------------------- deformable attention


def _bilinear(img, x, y):
    """Hand bilinear read of img (C × H × W, nested python access) at pixel coords (x, y); zero outside."""
    C, H, W = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = torch.zeros(C, dtype=img.dtype)
    for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
        wgt = (1 - abs(x - xx)) * (1 - abs(y - yy))
        if 0 <= xx < W and 0 <= yy < H:
            out += wgt * img[:, yy, xx]
    return out


def test_deformable_attention_matches_direct_per_point_computation():
    torch.manual_seed(0)
    B, Lq, C, M, L, P = 2, 5, 12, 3, 3, 2
    shapes = [(3, 4), (2, 5), (4, 2)]  # H ≠ W everywhere, so an x/y swap shows
    attn = MultiScaleDeformableAttention(C, M, L, P).double()
    with torch.no_grad():  # big random offsets: many points fall partly or wholly outside the maps
        attn.sampling_offsets.weight.normal_(0, 1.5)
        attn.attention_weights.weight.normal_(0, 1.0)
    query = torch.randn(B, Lq, C, dtype=torch.float64)
    value_in = torch.randn(B, sum(h * w for h, w in shapes), C, dtype=torch.float64)
    ref = torch.rand(B, Lq, L, 2, dtype=torch.float64)
    got = attn(query, ref, value_in, shapes)

    # direct: projections by hand, then explicit loops
    Dh = C // M
    value = value_in @ attn.value_proj.weight.T + attn.value_proj.bias
    offs = query @ attn.sampling_offsets.weight.T + attn.sampling_offsets.bias
    logits = query @ attn.attention_weights.weight.T + attn.attention_weights.bias
    starts = [0, 12, 22]
    expected = torch.zeros(B, Lq, C, dtype=torch.float64)
    for b in range(B):
        for q in range(Lq):
            for m in range(M):
                lg = [logits[b, q, (m * L + lvl) * P + p].item() for lvl in range(L) for p in range(P)]
                z = sum(math.exp(v) for v in lg)
                acc = torch.zeros(Dh, dtype=torch.float64)
                for lvl, (H, W) in enumerate(shapes):
                    img = value[b, starts[lvl]:starts[lvl] + H * W, m * Dh:(m + 1) * Dh].T.reshape(Dh, H, W)
                    for p in range(P):
                        k = (m * L + lvl) * P + p
                        ox, oy = offs[b, q, 2 * k].item(), offs[b, q, 2 * k + 1].item()
                        lx = ref[b, q, lvl, 0].item() + ox / W  # offsets are in pixels of the level
                        ly = ref[b, q, lvl, 1].item() + oy / H
                        a = math.exp(lg[lvl * P + p]) / z
                        acc += a * _bilinear(img, lx * W - 0.5, ly * H - 0.5)
                expected[b, q, m * Dh:(m + 1) * Dh] = acc
    expected = expected @ attn.output_proj.weight.T + attn.output_proj.bias
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


def test_deformable_attention_reads_own_pixel_with_zero_offsets():
    """Reference points are pixel centres in (x, y) order: zero offsets, one point → the query's own pixel."""
    shapes = [(3, 5)]
    value = torch.randn(1, 15, 4)
    ref = level_reference_points(shapes)[None]
    loc = ref[:, :, None, None, None, :]  # B Lq M=1 L=1 P=1 2
    out = ms_deform_attn_sample(value.view(1, 15, 1, 4), shapes, loc, torch.ones(1, 15, 1, 1, 1))
    assert torch.allclose(out, value, atol=1e-6)


# ---------------------------------------------------------------- matching


def test_hungarian_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    for Q, G in [(4, 3)] * 15 + [(3, 3)] * 5 + [(5, 2)] * 5 + [(2, 3)] * 3:
        cost = torch.rand(Q, G, generator=g) * 4 - 2
        rows, cols = hungarian_match(cost)
        assert len(rows) == min(Q, G)
        got = cost[rows, cols].sum().item()
        if Q >= G:
            best = min(sum(cost[perm[t], t].item() for t in range(G)) for perm in itertools.permutations(range(Q), G))
        else:
            best = min(sum(cost[q, perm[q]].item() for q in range(Q)) for perm in itertools.permutations(range(G), Q))
        assert got == pytest.approx(best, abs=1e-6)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)


# ---------------------------------------------------------------- losses vs hand computation


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def _bce(x, t):
    return max(x, 0.0) - x * t + math.log1p(math.exp(-abs(x)))


@pytest.mark.parametrize("ignore_mode", ["exclude", "negative"])
def test_losses_match_hand_computation(ignore_mode):
    torch.manual_seed(3)
    K, Q, S = 3, 3, 4
    head = tiny_head(num_classes=K, num_queries=Q, ignore_mode=ignore_mode)
    sem = torch.tensor(
        [
            [[0, 0, 2, 2], [0, 0, 2, 2], [0, 255, 2, 2], [1, 1, 1, 2]],
            [[2, 2, 2, 2], [2, 2, 2, 2], [255, 255, 2, 2], [2, 2, 2, 2]],
        ]
    )
    cls = torch.randn(2, Q, K + 1) * 2
    masks = torch.randn(2, Q, S, S) * 2
    # every pixel centre once: bilinear reads are then exact pixel values
    ys, xs = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    coords = torch.stack([(xs.flatten() + 0.5) / S, (ys.flatten() + 0.5) / S], -1)
    pts = [(int(y), int(x)) for y, x in zip(ys.flatten(), xs.flatten())]

    exp_cls_num = exp_cls_den = exp_bce = exp_dice = 0.0
    num_masks = 0
    expected_match = []
    for b in range(2):
        labels = sorted({int(v) for v in sem[b].flatten()} - {255})
        valid = [p for p in pts if ignore_mode == "negative" or int(sem[b][p]) != 255]

        def terms(q, lab):
            xs_ = [masks[b, q][p].item() for p in valid]
            ts_ = [1.0 if int(sem[b][p]) == lab else 0.0 for p in valid]
            bce = sum(_bce(x, t) for x, t in zip(xs_, ts_)) / len(valid)
            ps = [_sig(x) for x in xs_]
            dice = 1 - (2 * sum(p * t for p, t in zip(ps, ts_)) + 1) / (sum(ps) + sum(ts_) + 1)
            return bce, dice

        def prob(q, k):
            z = sum(math.exp(v) for v in cls[b, q].tolist())
            return math.exp(cls[b, q, k].item()) / z

        cost = [[-2.0 * prob(q, lab) + 5.0 * terms(q, lab)[0] + 5.0 * terms(q, lab)[1] for lab in labels]
                for q in range(Q)]
        best = min(itertools.permutations(range(Q), len(labels)),
                   key=lambda perm: sum(cost[perm[g]][g] for g in range(len(labels))))
        expected_match.append({best[g]: g for g in range(len(labels))})
        for q in range(Q):
            if q in expected_match[b]:
                lab = labels[expected_match[b][q]]
                bce, dice = terms(q, lab)
                exp_bce, exp_dice, num_masks = exp_bce + bce, exp_dice + dice, num_masks + 1
                w = 1.0
            else:
                lab, w = K, 0.1
            exp_cls_num += w * -math.log(prob(q, lab))
            exp_cls_den += w

    pred = {"pred_logits": cls, "pred_masks": masks}
    targets = head.prepare_targets(sem)
    with pytest.raises(ValueError):  # a label that is neither a class nor ignore is a data bug, not a silent drop
        head.prepare_targets(torch.full((1, 2, 2), K))
    for b, (qi, ti) in enumerate(head.match(pred, targets, coords=coords)):
        assert dict(zip(qi.tolist(), ti.tolist())) == expected_match[b]
    got = head.loss_single(pred, targets, match_coords=coords, loss_coords=coords)
    assert got["loss_cls"].item() == pytest.approx(2.0 * exp_cls_num / exp_cls_den, rel=1e-5)
    assert got["loss_mask"].item() == pytest.approx(5.0 * exp_bce / num_masks, rel=1e-5)
    assert got["loss_dice"].item() == pytest.approx(5.0 * exp_dice / num_masks, rel=1e-5)

    # deep supervision: the total sums the terms of every prediction, aux and final alike
    out = {**pred, "aux": [pred, {"pred_logits": cls.flip(1), "pred_masks": masks.flip(1)}]}
    losses = head.loss(out, sem, match_coords=coords, loss_coords=coords)
    assert len(losses) == 3 * 3 + 1
    flipped = head.loss_single(out["aux"][1], targets, match_coords=coords, loss_coords=coords)
    assert losses["aux1.loss_dice"].item() == pytest.approx(flipped["loss_dice"].item(), rel=1e-6)
    total = 2 * sum(got.values()) + sum(flipped.values())
    assert losses["loss"].item() == pytest.approx(total.item(), rel=1e-5)


def test_uncertainty_sampling_keeps_uncertain_points_and_skips_ignored():
    logits = torch.full((2, 8, 8), 10.0)
    logits[:, :, :4] = 0.0  # left half maximally uncertain (exactly 0 for x < 3.5/8)
    g = torch.Generator().manual_seed(0)
    coords = uncertain_point_coords(logits, 64, 3.0, 0.75, generator=g)
    assert coords.shape == (2, 64, 2)
    assert (coords[:, :48, 0] <= 3.5 / 8 + 1e-6).all()  # the 48 kept points are all on the uncertain half
    assert (coords[:, 48:, 0] > 0.5).any()  # the 16 random ones are not restricted
    valid = torch.ones(8, 8)
    valid[:, :2] = 0  # ignored strip: validity exactly 0 for x < 1.5/8
    coords = uncertain_point_coords(logits, 64, 3.0, 0.75, valid=valid, generator=g)
    assert (coords[:, :48, 0] >= 1.5 / 8).all()


# ---------------------------------------------------------------- inference and attention masks


def test_semantic_inference_matches_direct_loop():
    torch.manual_seed(0)
    B, Q, K, h, w = 2, 3, 3, 5, 6
    cls, masks = torch.randn(B, Q, K + 1), torch.randn(B, Q, h, w) * 3
    for size in [(h, w), (10, 12)]:
        got = semantic_inference(cls, masks, size)
        up = F.interpolate(masks, size=size, mode="bilinear", align_corners=False) if size != (h, w) else masks
        assert got.shape == (B, K, *size)
        for b in range(B):
            for k in range(K):
                for y in range(0, size[0], 3):
                    for x in range(0, size[1], 2):
                        e = 0.0
                        for q in range(Q):
                            p = math.exp(cls[b, q, k].item()) / sum(math.exp(v) for v in cls[b, q].tolist())
                            e += p * _sig(up[b, q, y, x].item())
                        assert got[b, k, y, x].item() == pytest.approx(e, rel=1e-5)
    head = tiny_head()
    assert torch.allclose(head.predict({"pred_logits": cls, "pred_masks": masks}, (10, 12)),
                          semantic_inference(cls, masks, (10, 12)))


def test_attention_mask_threshold_unmask_and_layout():
    logits = torch.full((2, 2, 2, 2), -5.0)
    logits[0, 1, 0, 0] = 5.0  # image 0, query 1 sees only position 0; query 0 would see nothing → unmasked
    logits[1, 0] = 5.0  # image 1, query 0 sees everything; query 1 nothing → unmasked
    m = attention_mask_from_logits(logits, (2, 2), num_heads=3)
    assert m.shape == (6, 2, 4) and m.dtype == torch.bool
    for h in range(3):  # batch-major: rows b·heads + h
        assert m[h, 0].tolist() == [False] * 4
        assert m[h, 1].tolist() == [False, True, True, True]
        assert not m[3 + h].any()


def test_masked_cross_attention_ignores_masked_memory():
    torch.manual_seed(0)
    layer = MaskedAttentionDecoderLayer(16, 4, 32).eval()
    q, qpos = torch.randn(1, 3, 16), torch.randn(1, 3, 16)
    mem, mpos = torch.randn(1, 6, 16), torch.randn(1, 6, 16)
    mask = torch.zeros(4, 3, 6, dtype=torch.bool)
    mask[:, :, 4:] = True  # every query barred from positions 4, 5
    base = layer(q, qpos, mem, mpos, mask)
    mem2 = mem.clone()
    mem2[:, 4:] += 10 * torch.randn(1, 2, 16)
    assert torch.allclose(layer(q, qpos, mem2, mpos, mask), base, atol=1e-6)
    assert not torch.allclose(layer(q, qpos, mem2, mpos, None), layer(q, qpos, mem, mpos, None), atol=1e-3)


def test_sine_positional_encoding_and_groups():
    H, W, F_ = 3, 5, 8
    pe = sine_positional_encoding(H, W, F_)
    assert pe.shape == (2 * F_, H, W)
    i, j = 1, 3
    y, x = (i + 1) / H * 2 * math.pi, (j + 1) / W * 2 * math.pi
    assert pe[0, i, j].item() == pytest.approx(math.sin(y), abs=1e-5)  # y half first, sin/cos interleaved
    assert pe[1, i, j].item() == pytest.approx(math.cos(y), abs=1e-5)
    assert pe[2, i, j].item() == pytest.approx(math.sin(y / 10000 ** (2 / F_)), abs=1e-5)
    assert pe[F_, i, j].item() == pytest.approx(math.sin(x), abs=1e-5)
    assert [gn_groups(c) for c in (256, 32, 48, 20)] == [32, 32, 24, 20]


# ---------------------------------------------------------------- the whole head


def _sample(B=2, H=64, in_ch=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(B, in_ch, H // s, H // s, generator=g) for s in (4, 8, 16, 32)]
    sem = torch.zeros(B, H, H, dtype=torch.long)
    sem[:, :, H // 2:] = 1
    sem[0, H // 2:, :] = 2
    sem[1, :8] = 255
    return feats, sem


def test_head_forward_backward_and_loss_decreases():
    torch.manual_seed(0)
    head = tiny_head(num_points_loss=256)
    feats, sem = _sample()
    out = head(feats)
    assert out["pred_logits"].shape == (2, 8, 4)
    assert out["pred_masks"].shape == (2, 8, 16, 16)
    assert len(out["aux"]) == 2  # before layer 1, after layer 1; the final one is out itself
    assert all(a["pred_masks"].shape == (2, 8, 16, 16) for a in out["aux"])
    assert head.predict(out, (64, 64)).shape == (2, 3, 64, 64)
    losses = head.loss(out, sem)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    # (the pixel decoder's level embedding gets no gradient at step 0: the deformable attention starts with zero
    # offset/weight projections, so its query does not matter yet — Deformable DETR's initialisation)
    for name in ["query_feat.weight", "query_pos.weight", "level_embed.weight",
                 "pixel_decoder.layers.0.self_attn.sampling_offsets.weight"]:
        grad = dict(head.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name

    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    history = []
    for _ in range(20):
        opt.zero_grad()
        loss = head.loss(head(feats), sem)["loss"]
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert all(math.isfinite(v) for v in history)
    for name, p in head.named_parameters():  # after a few steps every parameter takes part
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert sum(history[-3:]) / 3 < 0.5 * history[0], history


def test_query_pos_is_used():
    torch.manual_seed(0)
    head = tiny_head().eval()
    feats, _ = _sample()
    with torch.no_grad():
        base = head(feats)
        same = head(feats, query_pos=head.query_pos.weight.clone())
    assert torch.equal(base["pred_masks"], same["pred_masks"])  # default = the head's own embedding
    qp = torch.randn(8, 32, requires_grad=True)
    other = head(feats, query_pos=qp)
    assert not torch.allclose(other["pred_masks"], base["pred_masks"], atol=1e-4)
    assert not torch.allclose(other["pred_logits"], base["pred_logits"], atol=1e-4)
    # the prediction before the first layer comes from the content queries alone
    assert torch.allclose(other["aux"][0]["pred_logits"], base["aux"][0]["pred_logits"])
    other["pred_logits"].sum().backward()
    assert qp.grad is not None and qp.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        head(feats, query_pos=torch.randn(7, 32))


def test_paper_config_parameter_count():
    head = Mask2FormerHead([1024] * 4, 24)
    n = sum(p.numel() for p in head.parameters())
    # 1024·d + 257·K + 19,511,745 for channels 256, 100 queries, 6 + 9 layers
    assert n == 1024 * 1024 + 257 * 24 + 19_511_745 == 20_566_489
