"""Frozen VFM backbones: band-adapted patch kernels, DINOv3 / DINOv2 block-by-block forward, factories, converter."""
import pytest
import torch
from torch import nn
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from rsmoe.models.backbones import (
    DINOv2Backbone,
    DINOv3Backbone,
    adapt_patch_kernel,
    build_backbone,
    load_dinov3_original_state_dict,
    rgb_channel_for_band,
    tokens_to_map,
)

TINY_V3 = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 128,
           "patch_size": 8, "num_register_tokens": 4, "image_size": 64}
TINY_V2 = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "image_size": 56, "patch_size": 14}


def _image(c=3, h=64, w=48, b=2, seed=1):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def _run_blocks(backbone, image):
    tokens, ctx = backbone.embed(image, None)
    per_block = []
    for i in range(backbone.num_layers):
        tokens = backbone.block(i, tokens, ctx)
        per_block.append(tokens)
    return per_block, ctx


# ---------------------------------------------------------------------------------------------------------------
# band-adapted kernels
# ---------------------------------------------------------------------------------------------------------------
def test_cyclic_kernel_tiles_rgb():
    w = torch.randn(6, 3, 4, 4)
    out = adapt_patch_kernel(w, None, 7, "cyclic")
    assert out.shape == (6, 7, 4, 4)
    for i in range(7):
        assert torch.equal(out[:, i], w[:, i % 3])
    assert torch.equal(adapt_patch_kernel(w, None, 3, "cyclic"), w)
    out[:, 0] += 1  # a copy, not a view
    assert not torch.equal(out[:, 0], w[:, 0])


def test_wavelength_kernel_band_by_band():
    w = torch.randn(6, 3, 4, 4)
    # (band centre µm, expected pretrained channel: 0 = R, 1 = G, 2 = B)
    cases = [
        (0.443, 2),  # coastal → nearest B (0.490)
        (0.490, 2),
        (0.520, 2),  # |0.52 − 0.49| = 0.03 < |0.52 − 0.56| = 0.04
        (0.525, 1),  # exact tie G/B (0.035 each) → channel listed first (G)
        (0.560, 1),
        (0.600, 1),  # 0.04 to G < 0.065 to R
        (0.665, 0),
        (0.690, 0),
        (0.705, 0),  # red edge: beyond 0.700 → red
        (0.842, 0),  # NIR → red
        (1.610, 0),  # SWIR → red
    ]
    wl = [c[0] for c in cases]
    out = adapt_patch_kernel(w, wl, len(wl), "wavelength")
    for i, (lam, ch) in enumerate(cases):
        assert rgb_channel_for_band(lam) == ch, lam
        assert torch.equal(out[:, i], w[:, ch]), lam
    # RGB-ordered wavelengths reproduce the pretrained kernel; a tensor works as well as a list
    assert torch.equal(adapt_patch_kernel(w, torch.tensor([0.665, 0.56, 0.49]), 3, "wavelength"), w)


def test_kernel_errors():
    w = torch.randn(6, 3, 4, 4)
    with pytest.raises(ValueError, match="wavelength"):
        adapt_patch_kernel(w, None, 4, "wavelength")
    with pytest.raises(ValueError, match="4 bands"):
        adapt_patch_kernel(w, [0.49, 0.56, 0.665], 4, "wavelength")
    with pytest.raises(ValueError, match="µm"):
        adapt_patch_kernel(w, [490.0, 560.0, 665.0, 842.0], 4, "wavelength")
    with pytest.raises(ValueError, match="band_init"):
        adapt_patch_kernel(w, None, 4, "random")
    with pytest.raises(ValueError, match="out×3"):
        adapt_patch_kernel(torch.randn(6, 4, 4, 4), None, 4, "cyclic")


# ---------------------------------------------------------------------------------------------------------------
# DINOv3
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def v3():
    return DINOv3Backbone.from_config(TINY_V3, seed=0)


def test_dinov3_attributes(v3):
    assert (v3.embed_dim, v3.num_layers, v3.num_prefix_tokens, v3.patch_size) == (64, 4, 5, 8)
    tokens, ctx = v3.embed(_image(), None)
    assert ctx.grid == (8, 6)
    assert tokens.shape == (2, 5 + 48, 64)
    cos, sin = ctx.extras["rope"]
    assert cos.shape == sin.shape == (48, 16)  # N × head_dim
    prefix, patches = v3.split_prefix(tokens)
    assert prefix.shape == (2, 5, 64) and patches.shape == (2, 48, 64)
    assert tokens_to_map(patches, ctx.grid).shape == (2, 64, 8, 6)


def test_dinov3_block_by_block_equals_model(v3):
    image = _image()
    per_block, _ = _run_blocks(v3, image)
    with torch.no_grad():
        ref = v3.model(image, output_hidden_states=True)
    assert len(ref.hidden_states) == v3.num_layers + 1  # embeddings, then one per block
    for mine, theirs in zip(per_block, ref.hidden_states[1:]):
        assert torch.equal(mine, theirs)
    assert torch.equal(v3.final_norm(per_block[-1]), ref.last_hidden_state)
    # forward_patch_tokens (base class) returns the same patch tokens
    patches = v3.forward_patch_tokens(image, None)
    assert all(torch.equal(p, t[:, 5:]) for p, t in zip(patches, per_block))


def test_dinov3_frozen_and_eval():
    bb = DINOv3Backbone.from_config(TINY_V3, seed=0)
    assert all(not p.requires_grad for p in bb.parameters())
    parent = nn.ModuleDict({"backbone": bb, "head": nn.Linear(2, 2)})
    parent.train()
    assert parent.training and parent["head"].training
    assert not any(m.training for m in bb.modules())
    bb.train(True)
    assert not any(m.training for m in bb.modules())
    # eval-mode RoPE: two passes agree (training-mode RoPE would jitter the coordinates)
    image = _image(b=1)
    a, _ = _run_blocks(bb, image)
    b, _ = _run_blocks(bb, image)
    assert torch.equal(a[-1], b[-1])


def test_dinov3_seeded_and_rng_untouched():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = DINOv3Backbone.from_config(TINY_V3, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    b = DINOv3Backbone.from_config(DINOv3ViTConfig(**TINY_V3), seed=7)
    c = DINOv3Backbone.from_config(TINY_V3, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.embeddings.patch_embeddings.weight"],
                           sc["model.embeddings.patch_embeddings.weight"])


def test_dinov3_multiband_cyclic(v3):
    bb5 = DINOv3Backbone.from_config(TINY_V3, num_bands=5, band_init="cyclic", seed=0)
    w3 = v3.model.embeddings.patch_embeddings.weight
    conv5 = bb5.model.embeddings.patch_embeddings
    assert conv5.weight.shape == (64, 5, 8, 8)
    assert all(torch.equal(conv5.weight[:, i], w3[:, i % 3]) for i in range(5))
    assert torch.equal(conv5.bias, v3.model.embeddings.patch_embeddings.bias)
    assert not conv5.weight.requires_grad
    # bands 3, 4 set to zero → the 5-band model sees exactly what the 3-band model sees
    x3 = _image()
    x5 = torch.cat([x3, torch.zeros_like(x3[:, :2])], dim=1)
    t3, _ = _run_blocks(v3, x3)
    t5, _ = _run_blocks(bb5, x5)
    torch.testing.assert_close(t5[-1], t3[-1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="5 bands"):
        bb5.embed(x3, None)


def test_dinov3_wavelength_init_reorders_bgr(v3):
    bgr = DINOv3Backbone.from_config(TINY_V3, num_bands=3, band_init="wavelength",
                                     wavelengths=[0.49, 0.56, 0.665], seed=0)
    w = v3.model.embeddings.patch_embeddings.weight
    assert torch.equal(bgr.model.embeddings.patch_embeddings.weight, w.flip(1))
    x_rgb = _image()
    t_rgb, _ = _run_blocks(v3, x_rgb)
    t_bgr, _ = _run_blocks(bgr, x_rgb.flip(1))
    torch.testing.assert_close(t_bgr[-1], t_rgb[-1], rtol=1e-5, atol=1e-5)


def test_dinov3_size_must_divide(v3):
    with pytest.raises(ValueError, match="divisible by the patch size 8"):
        v3.embed(torch.randn(1, 3, 60, 64), None)


def test_dinov3_from_pretrained_roundtrip(tmp_path, v3):
    v3.model.save_pretrained(tmp_path / "v3")
    loaded = DINOv3Backbone.from_pretrained(str(tmp_path / "v3"), num_bands=4, band_init="cyclic")
    assert loaded.model.embeddings.patch_embeddings.weight.shape[1] == 4
    w4, w3 = loaded.model.embeddings.patch_embeddings.weight, v3.model.embeddings.patch_embeddings.weight
    assert torch.equal(w4[:, 3], w3[:, 0])
    same = DINOv3Backbone.from_pretrained(tmp_path / "v3")
    image = _image()
    assert torch.equal(_run_blocks(same, image)[0][-1], _run_blocks(v3, image)[0][-1])
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as err:
        DINOv3Backbone.from_pretrained(str(missing))
    assert str(missing) in str(err.value) and "\n" not in str(err.value)


# -- original Meta checkpoint → transformers ------------------------------------------------------------------------
def _to_original_naming(hf: dict, num_layers: int, gated: bool) -> dict:
    """The inverse of the converter, written independently: transformers keys → original DINOv3 keys."""
    out = {
        "cls_token": hf["embeddings.cls_token"],
        "mask_token": hf["embeddings.mask_token"][:, 0],  # original: 1 × D
        "storage_tokens": hf["embeddings.register_tokens"],
        "patch_embed.proj.weight": hf["embeddings.patch_embeddings.weight"],
        "patch_embed.proj.bias": hf["embeddings.patch_embeddings.bias"],
        "norm.weight": hf["norm.weight"],
        "norm.bias": hf["norm.bias"],
        "rope_embed.periods": torch.arange(4.0) + 1,
    }
    mlp = {"gate_proj": "w1", "up_proj": "w2", "down_proj": "w3"} if gated else {"up_proj": "fc1", "down_proj": "fc2"}
    for i in range(num_layers):
        h, o = f"model.layer.{i}.", f"blocks.{i}."
        att = h + "attention."
        out[o + "attn.qkv.weight"] = torch.cat([hf[att + f"{n}_proj.weight"] for n in "qkv"])
        q_bias = hf[att + "q_proj.bias"]
        out[o + "attn.qkv.bias"] = torch.cat([q_bias, torch.randn_like(q_bias), hf[att + "v_proj.bias"]])
        out[o + "attn.qkv.bias_mask"] = torch.cat([torch.ones_like(q_bias), torch.zeros_like(q_bias),
                                                  torch.ones_like(q_bias)])
        out[o + "attn.proj.weight"] = hf[att + "o_proj.weight"]
        out[o + "attn.proj.bias"] = hf[att + "o_proj.bias"]
        for j in (1, 2):
            out[o + f"norm{j}.weight"] = hf[h + f"norm{j}.weight"]
            out[o + f"norm{j}.bias"] = hf[h + f"norm{j}.bias"]
            out[o + f"ls{j}.gamma"] = hf[h + f"layer_scale{j}.lambda1"]
        for hf_name, orig_name in mlp.items():
            out[o + f"mlp.{orig_name}.weight"] = hf[h + f"mlp.{hf_name}.weight"]
            out[o + f"mlp.{orig_name}.bias"] = hf[h + f"mlp.{hf_name}.bias"]
    return out


@pytest.mark.parametrize("gated", [False, True])
def test_dinov3_original_checkpoint_conversion(tmp_path, gated):
    cfg = dict(TINY_V3, use_gated_mlp=gated, hidden_act="silu" if gated else "gelu", layerscale_value=0.5)
    src = DINOv3Backbone.from_config(cfg, seed=3)
    hf = {k: v.clone() for k, v in src.model.state_dict().items()}
    # make the layer scales non-trivial so a mix-up would show
    for k in hf:
        if "lambda1" in k:
            hf[k] = torch.rand_like(hf[k])
    src.model.load_state_dict(hf)
    original = _to_original_naming(hf, cfg["num_hidden_layers"], gated)
    path = tmp_path / "dinov3_tiny.pth"
    torch.save(original, path)

    converted = load_dinov3_original_state_dict(path)
    assert set(converted) == set(hf)
    for k in hf:
        assert torch.equal(converted[k], hf[k]), k

    dst = build_backbone("dinov3", pretrained=str(path), config=cfg, num_bands=3, band_init="cyclic",
                         wavelengths=None, seed=99)
    image = _image()
    assert torch.equal(_run_blocks(dst, image)[0][-1], _run_blocks(src, image)[0][-1])

    torch.save({**original, "blocks.0.unexpected": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(KeyError, match="blocks.0.unexpected"):
        load_dinov3_original_state_dict(tmp_path / "bad.pth")


# ---------------------------------------------------------------------------------------------------------------
# DINOv2
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("registers", [0, 2])
def test_dinov2_block_by_block_equals_model(registers):
    bb = DINOv2Backbone.from_config(dict(TINY_V2, num_register_tokens=registers), seed=0)
    assert (bb.embed_dim, bb.num_layers, bb.patch_size, bb.num_prefix_tokens) == (32, 3, 14, 1 + registers)
    assert all(not p.requires_grad for p in bb.parameters())
    bb.train()
    assert not any(m.training for m in bb.modules())
    for h, w in [(56, 56), (42, 70)]:  # the second needs the position embedding interpolated to a 3×5 grid
        image = _image(h=h, w=w)
        per_block, ctx = _run_blocks(bb, image)
        assert ctx.grid == (h // 14, w // 14)
        assert per_block[-1].shape == (2, 1 + registers + (h // 14) * (w // 14), 32)
        with torch.no_grad():
            ref = bb.model(image, output_hidden_states=True)
        for mine, theirs in zip(per_block, ref.hidden_states[1:]):
            assert torch.equal(mine, theirs)
        assert torch.equal(bb.final_norm(per_block[-1]), ref.last_hidden_state)


def test_dinov2_multiband_and_pretrained(tmp_path):
    bb = DINOv2Backbone.from_config(TINY_V2, num_bands=4, band_init="wavelength",
                                    wavelengths=[0.49, 0.56, 0.665, 0.842], seed=0)
    ref = DINOv2Backbone.from_config(TINY_V2, seed=0)
    w = bb.model.embeddings.patch_embeddings.projection.weight
    w3 = ref.model.embeddings.patch_embeddings.projection.weight
    assert w.shape == (32, 4, 14, 14)
    for band, ch in enumerate([2, 1, 0, 0]):
        assert torch.equal(w[:, band], w3[:, ch])
    tokens, ctx = bb.embed(_image(c=4, h=28, w=42), None)
    assert tokens.shape == (2, 1 + 6, 32) and ctx.grid == (2, 3)
    ref.model.save_pretrained(tmp_path / "v2")
    loaded = DINOv2Backbone.from_pretrained(tmp_path / "v2")
    image = _image(h=28, w=28)
    assert torch.equal(_run_blocks(loaded, image)[0][-1], _run_blocks(ref, image)[0][-1])
    with pytest.raises(FileNotFoundError, match="nope"):
        DINOv2Backbone.from_pretrained(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------------------------
# factory
# ---------------------------------------------------------------------------------------------------------------
def test_build_backbone_from_tiny_configs():
    v3 = build_backbone("dinov3", pretrained=None, config=TINY_V3, num_bands=4, band_init="cyclic",
                        wavelengths=[0.49, 0.56, 0.665, 0.842], seed=0)
    assert isinstance(v3, DINOv3Backbone) and v3.num_prefix_tokens == 5
    assert v3.forward_patch_tokens(_image(c=4, h=32, w=32), None)[-1].shape == (2, 16, 64)
    v2 = build_backbone("dinov2", pretrained=None, config=TINY_V2, num_bands=3, band_init="cyclic",
                        wavelengths=None, seed=0)
    assert isinstance(v2, DINOv2Backbone)
    with pytest.raises(ValueError, match="backbone.kind: got .vit."):
        build_backbone("vit", pretrained=None, config=TINY_V3, num_bands=3, band_init="cyclic",
                       wavelengths=None, seed=0)
    with pytest.raises(ValueError, match="needs"):
        build_backbone("dinov3", pretrained=None, config=None, num_bands=3, band_init="cyclic",
                       wavelengths=None, seed=0)
    with pytest.raises(ValueError, match=r"unknown config keys \['hiden_size'\]"):
        build_backbone("dinov3", pretrained=None, config={"hiden_size": 64}, num_bands=3, band_init="cyclic",
                       wavelengths=None, seed=0)


def test_build_backbone_pretrained_with_config(tmp_path):
    src = DINOv3Backbone.from_config(TINY_V3, seed=0)
    src.model.save_pretrained(tmp_path / "v3")
    kw = dict(num_bands=3, band_init="cyclic", wavelengths=None, seed=0)
    # an empty config (the config dataclass default) or a matching one: the checkpoint loads
    for config in ({}, None, dict(TINY_V3, image_size=512, layerscale_value=1e-5)):
        bb = build_backbone("dinov3", pretrained=str(tmp_path / "v3"), config=config, **kw)
        assert torch.equal(bb.model.embeddings.cls_token, src.model.embeddings.cls_token)
    with pytest.raises(ValueError, match="num_hidden_layers: config 24 vs checkpoint 4"):
        build_backbone("dinov3", pretrained=str(tmp_path / "v3"), config=dict(TINY_V3, num_hidden_layers=24), **kw)
    with pytest.raises(FileNotFoundError, match="/no/such/dir"):
        build_backbone("dinov3", pretrained="/no/such/dir", config={}, **kw)
    with pytest.raises(ValueError, match="needs `config`"):
        build_backbone("dinov3", pretrained=str(tmp_path / "x.pth"), config={}, **kw)


def test_dinov3_presets_and_dinov2_intermediate_size():
    cfg = DINOv3Backbone.make_config("vitl16")
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size,
            cfg.num_register_tokens, cfg.patch_size) == (1024, 24, 16, 4096, 4, 16)
    v2 = DINOv2Backbone.make_config(dict(TINY_V2, intermediate_size=96))
    assert v2.mlp_ratio == 3
    with pytest.raises(ValueError, match="multiple"):
        DINOv2Backbone.make_config(dict(TINY_V2, intermediate_size=100))


def test_constructor_accepts_model_and_rejects_others():
    model = DINOv3ViTModel(DINOv3ViTConfig(**TINY_V3))
    assert model.training  # transformers builds in training mode …
    bb = DINOv3Backbone(model)
    assert bb.model is model and not model.training  # … the backbone pins eval
    with pytest.raises(TypeError):
        DINOv3Backbone(nn.Linear(2, 2))


def test_adapted_model_saves_and_reloads(tmp_path):
    bb = DINOv3Backbone.from_config(TINY_V3, num_bands=5, band_init="cyclic", seed=0)
    bb.model.save_pretrained(tmp_path / "v3x5")
    again = DINOv3Backbone.from_pretrained(tmp_path / "v3x5", num_bands=5)  # already 5 bands: used as is
    image = _image(c=5)
    assert torch.equal(_run_blocks(again, image)[0][-1], _run_blocks(bb, image)[0][-1])
    with pytest.raises(ValueError, match="takes 5 bands"):
        DINOv3Backbone.from_pretrained(tmp_path / "v3x5", num_bands=4)


def test_explicit_band_channels_pick_the_rgb_kernels():
    from rsmoe.models.backbones.bands import adapt_patch_kernel

    w = torch.randn(8, 3, 4, 4)
    out = adapt_patch_kernel(w, None, 4, [0, 2, 1, 0])
    for band, channel in enumerate([0, 2, 1, 0]):
        assert torch.equal(out[:, band], w[:, channel])
    with pytest.raises(ValueError, match="one RGB channel"):
        adapt_patch_kernel(w, None, 4, [0, 1, 3, 0])
    v3 = build_backbone("dinov3", pretrained=None, config=TINY_V3, num_bands=4, band_init=[2, 1, 0, 0], seed=0)
    rgb = build_backbone("dinov3", pretrained=None, config=TINY_V3, num_bands=3, band_init="cyclic", seed=0)
    k4, k3 = v3.model.embeddings.patch_embeddings.weight, rgb.model.embeddings.patch_embeddings.weight  # DINOv3: a conv
    assert torch.equal(k4[:, 0], k3[:, 2]) and torch.equal(k4[:, 3], k3[:, 0])
