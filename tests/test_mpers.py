"""MPerS: dilated attention against a per-pixel loop, DMTE and LQGA against hand computations, neck taps and
pyramid shapes, decoders, a tiny model that learns, ablation configs, and captions at evaluation that never see
ground truth."""
import math

import pytest
import torch

from rsmoe.models.backbones import build_backbone
from rsmoe.models.mpers import (DMTE, LQGA, DilateBlock, DilatedAttention, MPerS, MultiHeadSelfAttention,
                                dilated_attention, dilated_attention_unfold)

WAVELENGTHS = [0.485, 0.555, 0.66, 0.83]


# ------------------------------------------------------------------------------------------- dilated attention
def loop_dilated_attention(q, k, v, heads, kernel, dilation):
    """Direct definition: per pixel and head, k×k dilated neighbours, zero vectors outside the map (in the softmax)."""
    b, c, h, w = q.shape
    d = c // heads
    half = (kernel - 1) // 2
    out = torch.zeros_like(q)
    for n in range(b):
        for head in range(heads):
            ch = slice(head * d, (head + 1) * d)
            for i in range(h):
                for j in range(w):
                    query = q[n, ch, i, j] / math.sqrt(d)
                    scores, values = [], []
                    for a in range(-half, half + 1):
                        for bb in range(-half, half + 1):
                            y, x = i + dilation * a, j + dilation * bb
                            inside = 0 <= y < h and 0 <= x < w
                            key = k[n, ch, y, x] if inside else torch.zeros(d, dtype=q.dtype)
                            values.append(v[n, ch, y, x] if inside else torch.zeros(d, dtype=q.dtype))
                            scores.append(torch.dot(query, key))
                    attn = torch.softmax(torch.stack(scores), 0)
                    out[n, ch, i, j] = (attn[:, None] * torch.stack(values)).sum(0)
    return out


@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_dilated_attention_matches_per_pixel_loop(dilation):
    g = torch.Generator().manual_seed(dilation)
    q, k, v = (torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64) for _ in range(3))
    expected = loop_dilated_attention(q, k, v, heads=2, kernel=3, dilation=dilation)
    torch.testing.assert_close(dilated_attention(q, k, v, 2, 3, dilation), expected)
    torch.testing.assert_close(dilated_attention_unfold(q, k, v, 2, 3, dilation), expected)
    # on a 1×1 map all 8 neighbours are padding: zero keys, each exp(0) = 1 in the softmax, zero values
    one = [t[:1, :2, 2:3, 2:3] for t in (q, k, v)]
    score = (one[0].flatten() @ one[1].flatten()) / math.sqrt(2)
    weight = torch.exp(score) / (torch.exp(score) + 8)
    torch.testing.assert_close(dilated_attention(*one, 1, 3, dilation).flatten(), weight * one[2].flatten())


def test_dilated_attention_kernel5_and_backward_match_reference():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 6, 7, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    torch.testing.assert_close(dilated_attention(q, k, v, 3, 5, 2), loop_dilated_attention(q, k, v, 3, 5, 2))
    # the hand-written backward against autograd through the unfold reference
    weight = torch.randn(1, 6, 7, 5, generator=g, dtype=torch.float64)
    grads = [torch.autograd.grad((fn(q, k, v, 3, 3, 2) * weight).sum(), (q, k, v))
             for fn in (dilated_attention, dilated_attention_unfold)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_dilate_block_and_mhsa_modules():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 5)
    shift = DilatedAttention(8, num_heads=2, dilation=2)
    unfold = DilatedAttention(8, num_heads=2, dilation=2, impl="unfold")
    unfold.load_state_dict(shift.state_dict())
    torch.testing.assert_close(shift(x), unfold(x))
    # MHSA: q, k, v from the 1×1 conv, softmax over all positions, Linear projection
    mhsa = MultiHeadSelfAttention(8, num_heads=2)
    qkv = mhsa.qkv(x).flatten(2)  # B, 3C, N
    q, k, v = qkv.chunk(3, dim=1)
    heads = []
    for hd in range(2):
        s = slice(hd * 4, hd * 4 + 4)
        attn = torch.softmax(q[:, s].transpose(1, 2) @ k[:, s] / 2.0, dim=-1)  # B, N, N
        heads.append(attn @ v[:, s].transpose(1, 2))  # B, N, d
    expected = mhsa.proj(torch.cat(heads, -1)).transpose(1, 2).reshape(2, 8, 6, 5)
    torch.testing.assert_close(mhsa(x), expected, rtol=1e-4, atol=1e-5)
    for attention in ("dilate", "mhsa"):
        block = DilateBlock(8, num_heads=2, dilation=3, attention=attention)
        assert block(x).shape == x.shape


# ------------------------------------------------------------------------------------------------------ DMTE
def test_dmte_hand_computation_with_missing_expert_and_prompt():
    """Zero attention weights (Y = X), a gate MLP with known output: Φ_m are prompt means, G = σ(b), T = Σ W G Φ."""
    dmte = DMTE(text_dim=2, num_experts=3, num_heads=1, gate_hidden=4)
    with torch.no_grad():
        for p in dmte.parameters():
            p.zero_()
        dmte.gate[2].bias.copy_(torch.tensor([0.0, math.log(3.0), math.log(1 / 3)]))  # G = 1/2, 3/4, 1/4
        dmte.expert_weight.copy_(torch.tensor([2.0, 3.0, 5.0]))
    text = torch.tensor([[[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],        # expert 0: all three prompts
                          [[2.0, 0.0], [0.0, 2.0], [100.0, 100.0]],    # expert 1: prompt 3 missing
                          [[9.0, 9.0], [9.0, 9.0], [9.0, 9.0]]]])      # expert 2: MLLM failed
    mask = torch.tensor([[[True, True, True], [True, True, False], [False, False, False]]])
    out = dmte(text, mask)
    phi0, phi1 = torch.tensor([3.0, 4.0]), torch.tensor([1.0, 1.0])
    expected = 2.0 * 0.5 * phi0 + 3.0 * 0.75 * phi1
    torch.testing.assert_close(out.text[0], expected)
    torch.testing.assert_close(out.gates[0], torch.tensor([0.5, 0.75, 0.25]))
    assert out.present.tolist() == [True] and out.expert_mask.tolist() == [[True, True, False]]
    # B×M mask form: expert 1 with all prompts, expert 2 missing
    out = dmte(text, torch.tensor([[True, True, False]]))
    torch.testing.assert_close(out.text[0], 2.0 * 0.5 * phi0 + 3.0 * 0.75 * torch.tensor([34.0, 34.0]))


def test_dmte_matches_loop_reimplementation_and_ignores_masked_expert():
    torch.manual_seed(0)
    d, m, p, heads = 8, 3, 3, 2
    dmte = DMTE(text_dim=d, num_experts=m, num_heads=heads, gate_hidden=5)
    text = torch.randn(2, m, p, d)
    mask = torch.tensor([[True, False, True], [True, True, True]])
    out = dmte(text, mask)

    attn = dmte.attention[0]
    wq, wk, wv = attn.qkv.weight.chunk(3)
    bq, bk, bv = attn.qkv.bias.chunk(3)
    dh = d // heads
    for b in range(2):
        phis = []
        for e in range(m):
            x = text[b, e]
            y = torch.zeros(p, d)
            for hd in range(heads):
                s = slice(hd * dh, (hd + 1) * dh)
                qh, kh, vh = (x @ wq.T + bq)[:, s], (x @ wk.T + bk)[:, s], (x @ wv.T + bv)[:, s]
                y[:, s] = torch.softmax(qh @ kh.T / math.sqrt(dh), -1) @ vh
            phis.append((x + attn.proj(y)).mean(0))
        present = [e for e in range(m) if mask[b, e]]
        mean = sum(phis[e] for e in present) / len(present)
        gates = torch.sigmoid(dmte.gate(mean))
        expected = sum(dmte.expert_weight[e] * gates[e] * phis[e] for e in present)
        torch.testing.assert_close(out.text[b], expected, rtol=1e-5, atol=1e-6)
    # a masked-out expert's embeddings do not matter at all
    poisoned = text.clone()
    poisoned[0, 1] = float("nan")
    torch.testing.assert_close(dmte(poisoned, mask).text, out.text)


# ------------------------------------------------------------------------------------------------------ LQGA
def test_lqga_hand_computation():
    lqga = LQGA(text_dim=2, channels=2)
    with torch.no_grad():
        for lin in (lqga.query, lqga.key, lqga.value):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
        lqga.fuse.weight.copy_(torch.cat([torch.eye(2), 2 * torch.eye(2)], 1)[..., None, None])  # Z = F′ + 2F
        lqga.fuse.bias.zero_()
    f = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).T.reshape(1, 2, 1, 2)  # positions (1, 0) and (0, 2)
    t = torch.tensor([[1.0, 1.0]])
    # scores q·k/√2 = [1, 2]/√2; u = a1 (1, 0) + a2 (0, 2); w = u / mean|u|; F′ = (1 + w) F
    a1 = 1 / (1 + math.exp(1 / math.sqrt(2)))
    a2 = 1 - a1
    u = torch.tensor([a1, 2 * a2])
    w = u / u.abs().mean()
    expected = (1 + w)[:, None] * f[0, :, 0] + 2 * f[0, :, 0]
    torch.testing.assert_close(lqga(f, t)[0, :, 0], expected)
    # no text, or a sample without captions: w = 0 → Z = F + 2F
    torch.testing.assert_close(lqga(f, None), 3 * f)
    torch.testing.assert_close(lqga(f, t, torch.tensor([False])), 3 * f)
    # ξ near zero: u = 0 gives w = 0 (not NaN)
    with torch.no_grad():
        lqga.value.weight.zero_()
    torch.testing.assert_close(lqga(f, t), 3 * f)


# ----------------------------------------------------------------------------------------- neck, decoders, model
def tiny_backbone(layers=4, patch=8, hidden=32):
    cfg = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=2 * hidden,
               patch_size=patch, num_register_tokens=4, image_size=64)
    return build_backbone("dinov3", pretrained=None, config=cfg, num_bands=4, band_init="cyclic",
                          wavelengths=WAVELENGTHS, seed=0)


def tiny_mpers(backbone=None, num_classes=5, **kw):
    torch.manual_seed(0)
    args = dict(neck_channels=(32, 16), ldpe_widths=(8, 8, 16, 16), adapter_heads=2, text_dim=16,
                captioners=["statistics", "llava"], linguistic_heads=2, gate_hidden=8, decoder_channels=(16, 16, 8))
    args.update(kw)
    return MPerS(backbone or tiny_backbone(), num_classes, **args)


@pytest.mark.parametrize("layers,taps", [(24, [5, 11, 17, 23]), (12, [2, 5, 8, 11])])
def test_neck_taps_and_pyramid(layers, taps):
    model = tiny_mpers(tiny_backbone(layers=layers, patch=16, hidden=16))
    assert model.taps == taps
    seen = {}
    real_neck = model.neck.forward

    def recording_neck(maps):
        seen["maps"] = maps
        out = real_neck(maps)
        seen["out"] = out
        return out

    model.neck.forward = recording_neck
    model.eval()
    image = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        feats = model.visual_features(image, torch.tensor(WAVELENGTHS))
        reference = model.backbone.forward_patch_tokens(image, torch.tensor(WAVELENGTHS))
    for tap, m in zip(taps, seen["maps"]):  # the taps are the patch tokens after exactly those blocks
        torch.testing.assert_close(m, reference[tap].transpose(1, 2).reshape(1, 16, 4, 4))
    assert [tuple(o.shape) for o in seen["out"]] == [(1, 16, 16, 16), (1, 16, 8, 8), (1, 16, 4, 4), (1, 16, 2, 2)]
    assert [tuple(f.shape) for f in feats] == [(1, 16, 16, 16), (1, 16, 8, 8), (1, 16, 4, 4), (1, 16, 2, 2)]


@pytest.mark.parametrize("kind", ["unet", "semantic_fpn", "pixelup"])
def test_decoder_output_shapes(kind):
    from rsmoe.models.heads import build_head

    feats = [torch.randn(2, c, s, s) for c, s in zip((16, 24, 32, 40), (32, 16, 8, 4))]
    head = build_head(kind, [16, 24, 32, 40], 7, channels=(32, 16, 8))
    assert head(feats).shape == (2, 7, 32, 32)
    assert head.predict(head(feats), (64, 64)).shape == (2, 7, 64, 64)


def test_tiny_mpers_learns_one_batch_and_keeps_frozen_parts_frozen():
    model = tiny_mpers()
    model.train()
    assert not model.backbone.training and model.ldpe.training
    g = torch.Generator().manual_seed(1)
    image, mask = torch.randn(2, 4, 32, 32, generator=g), torch.randint(0, 5, (2, 32, 32), generator=g)
    text, text_mask = torch.randn(2, 2, 3, 16, generator=g), torch.tensor([[True, False], [True, True]])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(6):
        terms = model.loss({"image": image, "wavelengths": torch.tensor(WAVELENGTHS), "mask": mask, "text": text,
                            "text_mask": text_mask})
        opt.zero_grad()
        terms["loss"].backward()
        if step == 0:  # the text path is trained, the backbone is not
            assert model.dmte.gate[0].weight.grad.abs().sum() > 0
            assert model.lqga["4"].query.weight.grad.abs().sum() > 0
            assert all(p.grad is None for p in model.backbone.parameters())
        opt.step()
        losses.append(terms["loss"].item())
    assert losses[-1] < losses[0] - 0.05, losses
    assert set(terms) == {"loss", "loss_ce", "loss_task"}  # no router: no router term
    state = model.trainable_state_dict()
    assert state and not any(k.startswith("backbone.") for k in state)
    assert any(k.startswith("adapters.dino4.") for k in state) and any(k.startswith("adapters.ldpe4.") for k in state)
    assert "dmte.expert_weight" in model.no_weight_decay_names()
    assert sum(model.trainable_parameter_counts().values()) == sum(
        p.numel() for p in model.parameters() if p.requires_grad)
    # text changes the prediction; no text runs (unguided)
    model.eval()
    with torch.no_grad():
        guided = model(image, torch.tensor(WAVELENGTHS), text, text_mask)
        plain = model(image, torch.tensor(WAVELENGTHS))
    assert guided.shape == plain.shape == (2, 5, 32, 32)
    assert not torch.allclose(guided, plain)


# ------------------------------------------------------------------------------ engine: training, captions at eval
TINY_MPERS = ["model=mpers", "mpers.neck_channels=[32, 16]", "mpers.ldpe_widths=[8, 8, 16, 16]",
              "mpers.adapter_heads=2", "mpers.text_encoder=tiny", "mpers.text_dim=16", "mpers.linguistic_heads=2",
              "mpers.gate_hidden=8", "mpers.decoder_channels=[16, 16, 8]"]
def mpers_cfg(bench, out, *extra):
    from rsmoe.config import load_config
    from rsmoe.demo import demo_config_path

    return load_config(demo_config_path(), [f"data.root={bench}", f"output_dir={out}", "train.iterations=2",
                                            "data.batch_size=2", "data.target_domains=[GF-1]", *TINY_MPERS, *extra])


def test_engine_trains_saves_and_reloads_mpers(bench, tmp_path):
    from rsmoe.engine.checkpoints import load_checkpoint
    from rsmoe.engine.runner import evaluate_checkpoint, train

    metrics = train(mpers_cfg(bench, tmp_path / "run"), progress=False)
    assert metrics["step"] == 2 and set(metrics["domains"]) == {"GF-2", "GF-1"}
    model, meta = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert isinstance(model, MPerS) and model.class_names == meta.class_names
    again = evaluate_checkpoint(tmp_path / "run" / "model.safetensors", progress=False)
    for domain, m in metrics["domains"].items():
        assert again["domains"][domain]["confusion"] == m["confusion"]


def test_eval_captions_come_from_pass_one_predictions_never_ground_truth(bench, tmp_path, monkeypatch):
    """Record every label map the statistics captioner sees during evaluation, with the evaluated masks intact and
    poisoned: the recorded maps are the model's own pass-1 predictions and do not change when the masks do."""
    import numpy as np

    import rsmoe.text.statistics as statistics
    from rsmoe.data.prepared import PreparedDataset
    from rsmoe.engine.data import eval_loaders
    from rsmoe.engine.runner import build_for_config, evaluate

    cfg = mpers_cfg(bench, tmp_path / "leak")
    model, meta = build_for_config(cfg)
    with torch.no_grad():  # a non-trivial model: random trainable weights so that predictions vary per pixel
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    model.eval()
    seen: list[np.ndarray] = []
    real = statistics.statistics_captions

    def recording(label_map, class_names, ignore_index=255):
        seen.append(np.array(label_map, copy=True))
        return real(label_map, class_names, ignore_index)

    monkeypatch.setattr(statistics, "statistics_captions", recording)
    clean = evaluate(cfg, model, meta.class_names, progress=False)
    clean_seen = list(seen)

    # pass-1 predictions computed here, without any text, over the same loaders
    expected = []
    with torch.no_grad():
        for loader in eval_loaders(cfg)[1]:
            for batch in loader:
                expected += list(model(batch["image"], batch["wavelengths"]).argmax(1).numpy())
    assert len(clean_seen) == len(expected) > 0
    for got, want in zip(clean_seen, expected):
        np.testing.assert_array_equal(got, want)

    real_getitem = PreparedDataset.__getitem__

    def poisoned(self, index):
        sample = real_getitem(self, index)
        sample["mask"] = (sample["mask"] + 1 + index) % len(meta.class_names)  # every label wrong
        return sample

    seen.clear()
    monkeypatch.setattr(PreparedDataset, "__getitem__", poisoned)
    dirty = evaluate(cfg, model, meta.class_names, progress=False)
    assert len(seen) == len(clean_seen)
    for a, b in zip(seen, clean_seen):
        np.testing.assert_array_equal(a, b)
    assert dirty["domains"]["GF-2"]["confusion"] != clean["domains"]["GF-2"]["confusion"]  # the poison did land


def test_caption_inputs_read_the_store_by_tile_and_mask_statistics_at_eval(bench, tmp_path):
    """MLLM slots come from the store by manifest path; the statistics slot is live ground truth in training and
    masked at evaluation even when the store holds (label-derived) statistics vectors."""

    from rsmoe.data.prepared import PreparedDataset
    from rsmoe.engine.data import collate
    from rsmoe.text.encoders import TextEncoder
    from rsmoe.text.fields import CachedTextEncoder, CaptionFields, statistics_slot
    from rsmoe.text.store import CaptionStore

    ds = PreparedDataset(bench, split="train", domains=["GF-2"])
    batch = collate([ds[0], ds[1]])
    ids = [r["image"] for r in ds.rows[:2]]
    store_path = tmp_path / "captions.sqlite"
    vec = {}
    with CaptionStore(store_path) as store:
        keys = []
        for i, image_id in enumerate(ids[:1]):  # tile 1 has no llava caption: its slot stays masked
            for captioner in ("llava", "statistics"):
                for pid in (1, 2, 3):
                    store.put_caption(image_id, "h", captioner, pid, f"{captioner} {pid}")
                    keys.append((image_id, captioner, pid))
        vectors = torch.arange(len(keys) * 16, dtype=torch.float32).reshape(len(keys), 16)
        store.put_embeddings("enc", keys, vectors)
        vec = {k: v for k, v in zip(keys, vectors)}
    encoder = CachedTextEncoder(TextEncoder.tiny(seed=0, dim=16))
    store = CaptionStore(store_path, readonly=True)
    common = dict(store=store, encoder_name="enc", encoder=encoder, class_names=ds.classes)
    train = CaptionFields(["statistics", "llava"], 3, 16, statistics="live", **common)(dict(batch))
    assert train["text_mask"][:, 1].tolist() == [[True] * 3, [False] * 3]
    for pid in range(3):
        torch.testing.assert_close(train["text"][0, 1, pid], vec[(ids[0], "llava", pid + 1)])
    assert train["text_mask"][:, 0].all()  # live ground-truth statistics for both tiles, not the store's vectors
    live = statistics_slot(batch["mask"], ds.classes, 255, encoder, 3)
    torch.testing.assert_close(train["text"][:, 0], live)
    stored = CaptionFields(["statistics", "llava"], 3, 16, statistics="store", **common)(dict(batch))
    torch.testing.assert_close(stored["text"][0, 0, 0], vec[(ids[0], "statistics", 1)])
    evald = CaptionFields(["statistics", "llava"], 3, 16, statistics="none", **common)(dict(batch))
    assert not evald["text_mask"][:, 0].any() and evald["text_mask"][0, 1].all()
    assert not evald["text"][:, 0].any()  # the store's (label-derived) statistics vectors never reach evaluation
    store.close()


# ----------------------------------------------------------------------------------------------- ablation configs
def test_model_and_ablation_configs_build(monkeypatch):
    """Every point of supplementary Tables 1–4 builds (ViT-L shapes on the meta device, no weights or text encoder
    loaded) and actually carries the ablated setting."""
    from types import SimpleNamespace

    from rsmoe.config import load_config
    from rsmoe.models.build import build_model
    from rsmoe.models.heads.pixelup import PixelUpHead
    from rsmoe.models.heads.semantic_fpn import SemanticFPNHead
    from rsmoe.models.heads.unet import UNetHead
    from rsmoe.sweep import load_grid, point_config

    import rsmoe.models.backbones as backbones

    real_build_backbone, cache = backbones.build_backbone, {}

    def cached_backbone(kind, **kw):  # every point shares the ViT-L backbone: build its meta shapes once
        if kind not in cache:
            cache[kind] = real_build_backbone(kind, **kw)
        return cache[kind]

    monkeypatch.setattr(backbones, "build_backbone", cached_backbone)

    def build(cfg):
        stub = SimpleNamespace(dim=cfg.mpers.text_dim or 64, name="stub")
        with torch.device("meta"):
            return build_model(cfg, 6, [0.665, 0.56, 0.49], load_text_encoder=False,
                               text_encoder=stub if cfg.mpers.lqga_stages else None)

    base = build(load_config("configs/models/mpers_dinov3_vitl.yaml"))
    assert base.taps == [5, 11, 17, 23] and base.backbone.embed_dim == 1024
    assert set(base.adapters) == {"dino4", "ldpe4"} and list(base.lqga) == ["4"]
    assert isinstance(base.head, UNetHead) and base.dmte.num_experts == 3 and base.text_dim == 512
    counts = base.trainable_parameter_counts()
    assert all(n > 0 for n in counts.values()) and "backbone" not in counts

    seen = {}
    for grid in ("text_encoder", "dilation", "decoder", "stages"):
        _, points = load_grid(f"configs/ablations/mpers_{grid}.yaml")
        seen[grid] = [build(point_config(p)) for p in points]
    te = seen["text_encoder"]
    assert len(te) == 6 and te[0].dmte is None and len(te[0].lqga) == 0
    assert [m.text_dim for m in te[1:]] == [64, 512, 64, 768, 512]
    attn = [m.adapters["dino4"][0].attn for m in seen["dilation"]]
    assert isinstance(attn[0], MultiHeadSelfAttention) and [a.dilation for a in attn[1:]] == [1, 2, 3]
    assert [type(m.head) for m in seen["decoder"]] == [PixelUpHead, SemanticFPNHead, UNetHead]
    assert [list(m.lqga) for m in seen["stages"]] == [["1"], ["2"], ["3"], ["4"], ["3", "4"]]
