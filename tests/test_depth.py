"""The frozen depth encoder (Depth Anything V2 / Prompt Depth Anything ViT) and RGB band selection."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoBackbone,
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    Dinov2Config,
    PromptDepthAnythingConfig,
    PromptDepthAnythingForDepthEstimation,
)

from rsmoe.models.backbones import DepthEncoder, build_backbone, build_depth_encoder, select_rgb_bands

# a tiny Depth Anything backbone: DINOv2, patch 14, pretraining grid 4×4 (image_size 56)
TINY_DFM = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": 56, "patch_size": 14}
# a tiny DINOv3 with the same width and depth, patch 16
TINY_VFM = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 128,
            "patch_size": 16, "num_register_tokens": 4, "image_size": 64}

OHS_NM = [466, 480, 500, 520, 536, 550, 566, 580, 596, 610, 626, 640, 656, 670, 686, 700, 716, 730, 746, 760, 776,
          790, 806, 820, 836, 850, 866, 880, 896, 910, 926, 940]


def _image(c, h=64, w=64, b=2, seed=1):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def dfm():
    return DepthEncoder.from_config(TINY_DFM, seed=0, target_patch_size=16)


# ---------------------------------------------------------------------------------------------------------------
# band selection
# ---------------------------------------------------------------------------------------------------------------
def test_select_rgb_bands_bgrn():
    assert select_rgb_bands([0.49, 0.56, 0.665, 0.842]) == [2, 1, 0]
    assert select_rgb_bands(torch.tensor([0.665, 0.56, 0.49])) == [0, 1, 2]
    # GF-2 as stored by the public code (NIR, R, G, B) → bands 1..3, as it slices by hand
    assert select_rgb_bands([0.83, 0.66, 0.555, 0.485]) == [1, 2, 3]
    # a (B, C) tensor with identical rows is one selection; different rows are refused here
    assert select_rgb_bands(torch.tensor([[0.49, 0.56, 0.665]] * 2)) == [2, 1, 0]
    with pytest.raises(ValueError, match="differ"):
        select_rgb_bands(torch.tensor([[0.49, 0.56, 0.665], [0.665, 0.56, 0.49]]))
    with pytest.raises(ValueError, match="µm"):
        select_rgb_bands([490, 560, 665])


def test_select_rgb_bands_ohs():
    wl = [nm / 1000 for nm in OHS_NM]
    expected = []
    for centre_nm in (665, 560, 490):  # brute force in integer nm; ties → lower index
        dists = [abs(nm - centre_nm) for nm in OHS_NM]
        expected.append(dists.index(min(dists)))
    assert expected == [13, 6, 1]  # 670 nm, 566 nm, 480 nm (480 and 500 tie at 10 nm from 490 → the lower index)
    assert OHS_NM[13] == 670 and OHS_NM[6] == 566 and OHS_NM[1] == 480
    assert select_rgb_bands(wl) == expected


# ---------------------------------------------------------------------------------------------------------------
# the encoder
# ---------------------------------------------------------------------------------------------------------------
def test_grid_equals_vfm_grid(dfm):
    vfm = build_backbone("dinov3", pretrained=None, config=TINY_VFM, num_bands=4, band_init="cyclic",
                         wavelengths=None, seed=0)
    image = _image(4)
    wl = torch.tensor([0.49, 0.56, 0.665, 0.842])
    _, ctx = vfm.embed(image, wl)
    assert ctx.grid == (4, 4)
    out = dfm(image, wl, ctx.grid)
    assert len(out) == dfm.num_layers == vfm.num_layers
    assert dfm.embed_dim == vfm.embed_dim
    assert all(t.shape == (2, 16, 64) for t in out)  # CLS dropped: 4×4 patch tokens
    assert (dfm.patch_size, dfm.source_patch_size, dfm.num_prefix_tokens) == (16, 14, 1)
    with pytest.raises(ValueError, match="VFM grid"):
        dfm(image, wl, (8, 8))
    with pytest.raises(ValueError, match="divisible"):
        dfm(_image(4, h=60), wl, (4, 4))


def test_kernel_resize_is_bicubic_interpolate(dfm):
    plain = DepthEncoder.from_config(TINY_DFM, seed=0, target_patch_size=14)  # same seed: same weights
    w14 = plain.embeddings.patch_embeddings.projection.weight
    conv16 = dfm.embeddings.patch_embeddings.projection
    expected = F.interpolate(w14, size=(16, 16), mode="bicubic", align_corners=False)
    assert conv16.weight.shape == (64, 3, 16, 16) and conv16.stride == (16, 16)
    assert torch.equal(conv16.weight, expected)
    assert torch.equal(conv16.bias, plain.embeddings.patch_embeddings.projection.bias)


def test_position_embedding_interpolated_to_vfm_grid(dfm):
    # embeddings for a 96×64 image (6×4 grid) = conv16 + bicubic resize of the 4×4 pretraining grid to 6×4
    x = _image(3, h=96, w=64, b=1)
    with torch.no_grad():
        got = dfm.embeddings(x)
        emb = dfm.embeddings
        pos = emb.position_embeddings
        grid_pos = pos[:, 1:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
        grid_pos = F.interpolate(grid_pos, size=(6, 4), mode="bicubic", align_corners=False)
        patches = emb.patch_embeddings.projection(x).flatten(2).transpose(1, 2) + grid_pos.flatten(2).transpose(1, 2)
        cls = emb.cls_token + pos[:, :1]
        expected = torch.cat([cls, patches], dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_matches_backbone_without_resize():
    # target patch = source patch: the encoder is the transformers backbone's blocks, token for token
    enc = DepthEncoder.from_config(TINY_DFM, seed=0, target_patch_size=14)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = AutoBackbone.from_config(DepthEncoder.backbone_config(TINY_DFM)).eval()
    image = _image(3, h=56, w=56)
    with torch.no_grad():
        ref = backbone(image, output_hidden_states=True).hidden_states
    out = enc(image, None, (4, 4))
    for mine, theirs in zip(out, ref[1:]):
        assert torch.equal(mine, theirs[:, 1:])


def test_band_selection_drives_the_tokens(dfm):
    wl = [0.49, 0.56, 0.665, 0.842, 1.61]  # B, G, R, NIR, SWIR
    image = _image(5)
    base = dfm(image, wl, (4, 4))
    rgb = image[:, [2, 1, 0]]
    torch.testing.assert_close(base[-1], dfm(rgb, None, (4, 4))[-1], rtol=0, atol=0)
    other = image.clone()
    other[:, 3] += 5.0  # NIR is not used
    other[:, 4] *= -1.0  # nor SWIR
    assert all(torch.equal(a, b) for a, b in zip(base, dfm(other, wl, (4, 4))))
    red = image.clone()
    red[:, 2] += 1.0  # red is
    assert not torch.allclose(base[0], dfm(red, wl, (4, 4))[0])


def test_per_sample_wavelengths(dfm):
    image = _image(4, b=1)
    wl = torch.tensor([0.49, 0.56, 0.665, 0.842])
    perm = [3, 2, 1, 0]  # the same scene stored N, R, G, B
    batch = torch.cat([image, image[:, perm]])
    wls = torch.stack([wl, wl[perm]])
    out = dfm(batch, wls, (4, 4))
    assert torch.equal(out[-1][0], out[-1][1])
    with pytest.raises(ValueError, match="do not match"):
        dfm(batch, wl[:3], (4, 4))
    with pytest.raises(ValueError, match="wavelengths"):
        dfm(batch, None, (4, 4))  # 4 bands, no wavelengths


def test_frozen_no_grad_eval(dfm):
    assert all(not p.requires_grad for p in dfm.parameters())
    parent = nn.ModuleList([dfm, nn.Linear(2, 2)])
    parent.train()
    assert not any(m.training for m in dfm.modules())
    image = _image(3).requires_grad_(True)
    out = dfm(image, None, (4, 4))
    assert not out[-1].requires_grad


@pytest.mark.parametrize("kind", ["depth_anything", "prompt_depth_anything"])
def test_from_pretrained(tmp_path, kind):
    cfg_cls, model_cls = {
        "depth_anything": (DepthAnythingConfig, DepthAnythingForDepthEstimation),
        "prompt_depth_anything": (PromptDepthAnythingConfig, PromptDepthAnythingForDepthEstimation),
    }[kind]
    backbone_cfg = Dinov2Config(**TINY_DFM, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    cfg = cfg_cls(backbone_config=backbone_cfg, reassemble_hidden_size=64, neck_hidden_sizes=[8, 16, 32, 64],
                  fusion_hidden_size=8, head_hidden_size=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = model_cls(cfg)
    model.save_pretrained(tmp_path / kind)
    enc = build_depth_encoder(pretrained=str(tmp_path / kind), config=None, target_patch_size=16, seed=0)
    expected = DepthEncoder.from_backbone(model.backbone, target_patch_size=16)
    image = _image(3)
    assert all(torch.equal(a, b) for a, b in zip(enc(image, None, (4, 4)), expected(image, None, (4, 4))))
    assert not any(n.startswith(("neck", "head")) for n, _ in enc.named_parameters())
    with pytest.raises(FileNotFoundError, match="missing"):
        DepthEncoder.from_pretrained(tmp_path / "missing")
    # a config next to the checkpoint is checked on the architecture fields only
    build_depth_encoder(pretrained=str(tmp_path / kind), config=dict(TINY_DFM, intermediate_size=256),
                        target_patch_size=16, seed=0)
    with pytest.raises(ValueError, match="hidden_size"):
        build_depth_encoder(pretrained=str(tmp_path / kind), config=dict(TINY_DFM, hidden_size=1024),
                            target_patch_size=16, seed=0)


def test_factory_config_forms():
    a = build_depth_encoder(pretrained=None, config=TINY_DFM, target_patch_size=16, seed=3)
    b = build_depth_encoder(pretrained=None, config=DepthAnythingConfig(backbone_config=Dinov2Config(**TINY_DFM)),
                            target_patch_size=16, seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    c = build_depth_encoder(pretrained=None, config=dict(TINY_DFM, intermediate_size=256), target_patch_size=16,
                            seed=3)  # intermediate_size = hidden × mlp_ratio (DINOv2's field): same model
    assert all(torch.equal(sa[k], v) for k, v in c.state_dict().items())
    with pytest.raises(ValueError, match="needs"):
        build_depth_encoder(pretrained=None, config=None, target_patch_size=16, seed=0)
    with pytest.raises(ValueError, match="unknown config keys"):
        build_depth_encoder(pretrained=None, config=dict(TINY_DFM, num_layers=4), target_patch_size=16, seed=0)
