"""DOFA backbone: public checkpoint keys, token shapes, the generated kernel, block-by-block forward, errors.

The reference computations here are written out by hand from the public DOFA code (zhu-xlab/DOFA
``wave_dynamic_layer.py``, TorchGeo ``models/dofa.py``), not taken from the module under test.
"""
from __future__ import annotations

import argparse
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from rsmoe.errors import CheckpointError
from rsmoe.models.backbones.base import tokens_to_map
from rsmoe.models.backbones.dofa import (
    DOFA_SIZES,
    DOFABackbone,
    DOFAConfig,
    resample_pos_embed,
    sincos_pos_embed_2d,
)

# Random test files are no known DOFA release: the SHA-256 warning is expected everywhere except where tested.
pytestmark = pytest.mark.filterwarnings("ignore:.*not a known post-fix DOFA release:UserWarning")

# A tiny DOFA: width 32, 2 blocks, 2 heads, patch 4, 4×4 pre-training grid (16-pixel images).
D, DEPTH, HEADS, P, G = 32, 2, 2, 4, 4
TINY = DOFAConfig(embed_dim=D, depth=DEPTH, num_heads=HEADS, patch_size=P, pretrain_grid=G)
WAVES4 = [0.49, 0.56, 0.665, 0.842]  # blue, green, red, NIR (µm)
WAVES32 = torch.linspace(0.40, 2.45, 32).tolist()


def public_dofa_shapes(dim: int, depth: int, patch: int, grid: int) -> dict[str, tuple[int, ...]]:
    """Key → shape of a DOFA v1 backbone as the public ``OFAViT`` / TorchGeo ``DOFA`` modules name them."""
    wave, ff, mlp = 128, 2048, 4 * dim  # generator width, encoder feed-forward, ViT MLP hidden
    gen = "patch_embed.weight_generator."
    enc = gen + "transformer_encoder.layers.0."
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, 1 + grid * grid, dim),
        "patch_embed.fclayer.w1.weight": (wave, wave),
        "patch_embed.fclayer.w1.bias": (wave,),
        "patch_embed.fclayer.w2.weight": (wave, wave),
        "patch_embed.fclayer.w2.bias": (wave,),
        gen + "weight_tokens": (128, wave),
        gen + "bias_token": (1, wave),
        enc + "self_attn.in_proj_weight": (3 * wave, wave),
        enc + "self_attn.in_proj_bias": (3 * wave,),
        enc + "self_attn.out_proj.weight": (wave, wave),
        enc + "self_attn.out_proj.bias": (wave,),
        enc + "linear1.weight": (ff, wave),
        enc + "linear1.bias": (ff,),
        enc + "linear2.weight": (wave, ff),
        enc + "linear2.bias": (wave,),
        enc + "norm1.weight": (wave,),
        enc + "norm1.bias": (wave,),
        enc + "norm2.weight": (wave,),
        enc + "norm2.bias": (wave,),
        gen + "fc_weight.weight": (patch * patch * dim, wave),
        gen + "fc_weight.bias": (patch * patch * dim,),
        gen + "fc_bias.weight": (dim, wave),
        gen + "fc_bias.bias": (dim,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        shapes |= {
            b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
            b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
            b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
            b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
            b + "mlp.fc1.weight": (mlp, dim), b + "mlp.fc1.bias": (mlp,),
            b + "mlp.fc2.weight": (dim, mlp), b + "mlp.fc2.bias": (dim,),
        }  # fmt: skip
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        t = torch.randn(shape, generator=g) * 0.05
        if key.endswith(("norm1.weight", "norm2.weight")):
            t += 1.0
        state[key] = t
    return state


# Extras of the authors' pre-training file (README: unexpected mask_token, norm.*, projector.*) and of a
# fine-tuned classifier (fc_norm.*, head.*); TorchGeo's files hold the backbone keys only.
AUTHOR_EXTRAS = {"mask_token": (1, 1, D), "norm.weight": (D,), "norm.bias": (D,),
                 "projector.weight": (512, D), "projector.bias": (512,)}  # fmt: skip
CLASSIFIER_EXTRAS = {"fc_norm.weight": (D,), "fc_norm.bias": (D,), "head.weight": (45, D), "head.bias": (45,)}


@pytest.fixture(scope="module")
def public_state() -> dict[str, torch.Tensor]:
    return random_state(public_dofa_shapes(D, DEPTH, P, G))


@pytest.fixture(scope="module")
def model(public_state, tmp_path_factory) -> DOFABackbone:
    path = tmp_path_factory.mktemp("dofa") / "DOFA_ViT_tiny_e100.pth"
    torch.save(public_state | random_state(AUTHOR_EXTRAS, seed=1), path)
    return DOFABackbone.from_checkpoint(path, size=TINY)


# ---------------------------------------------------------------------------------------------------------------
# Loading


@pytest.mark.parametrize("naming", ["authors", "torchgeo", "classifier", "wrapped"])
def test_public_state_dict_loads_with_no_missing_keys(public_state, tmp_path, naming):
    state = dict(public_state)
    if naming == "authors":
        state |= random_state(AUTHOR_EXTRAS, seed=1)
    elif naming == "classifier":
        state |= random_state(CLASSIFIER_EXTRAS, seed=2)
    path = tmp_path / f"{naming}.pth"
    torch.save({"model": state, "epoch": 99} if naming == "wrapped" else state, path)

    m = DOFABackbone.from_checkpoint(path, size=TINY, strict=True)

    assert m.load_report["missing"] == [] and m.load_report["unexpected"] == []
    mine = m.state_dict()
    assert set(mine) == set(public_state)
    for key, value in public_state.items():
        assert torch.equal(mine[key], value), key
    assert m.pretrain_grid == (G, G)


def test_frozen_and_eval(model):
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training and not any(m.training for m in model.modules())


def test_from_config_is_deterministic():
    a = DOFABackbone.from_config(TINY, seed=3).state_dict()
    b = DOFABackbone.from_config(TINY, seed=3).state_dict()
    c = DOFABackbone.from_config(TINY, seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], c["blocks.0.attn.qkv.weight"])
    assert set(a) == set(public_dofa_shapes(D, DEPTH, P, G))
    assert {k: tuple(v.shape) for k, v in a.items()} == public_dofa_shapes(D, DEPTH, P, G)


def test_named_sizes():
    for name, dims in {"small": (384, 12, 6, 16), "base": (768, 12, 12, 16),
                       "large": (1024, 24, 16, 16), "huge": (1280, 32, 16, 14)}.items():  # fmt: skip
        c = DOFAConfig.of(name)
        assert (c.embed_dim, c.depth, c.num_heads, c.patch_size) == dims
        assert c.pretrain_grid == 224 // c.patch_size
    assert DOFAConfig.of({"size": "large", "depth": 4}) == DOFAConfig.of("large", depth=4)
    with pytest.raises(ValueError, match="unknown DOFA config fields"):
        DOFAConfig.of({"size": "base", "dept": 4})


# ---------------------------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("waves", [WAVES4, WAVES32], ids=["4-band", "32-band"])
@pytest.mark.parametrize("size", [(16, 16), (18, 19), (24, 16)])
def test_token_shapes(model, waves, size):
    h, w = size
    image = torch.randn(2, len(waves), h, w)
    tokens, ctx = model.embed(image, waves)
    grid = (h // P, w // P)  # 18 and 19 leave 2 and 3 pixels over: padding 1 would give one more row/column
    assert ctx.grid == grid
    assert tokens.shape == (2, 1 + grid[0] * grid[1], D)
    out = model.forward_patch_tokens(image, waves)
    assert len(out) == DEPTH and all(o.shape == (2, grid[0] * grid[1], D) for o in out)
    assert tokens_to_map(out[-1], ctx.grid).shape == (2, D, *grid)


def test_batched_wavelengths(model):
    image = torch.randn(3, 4, 16, 16)
    rows = torch.tensor([WAVES4, [0.45, 0.55, 0.65, 0.85], WAVES4])
    together = model(image, rows)
    for i in range(3):
        alone = model(image[i : i + 1], rows[i])
        torch.testing.assert_close(together[i : i + 1], alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(image, rows[[0, 0, 0]]), model(image, rows[0]), rtol=0, atol=0)


def test_bad_wavelengths(model):
    image = torch.randn(1, 4, 16, 16)
    with pytest.raises(ValueError, match="3 wavelengths for an image with 4 bands"):
        model.embed(image, WAVES4[:3])
    with pytest.raises(ValueError, match="µm"):
        model.embed(image, [490.0, 560.0, 665.0, 842.0])


# ---------------------------------------------------------------------------------------------------------------
# The generated kernel, computed directly


def reference_kernel(sd: dict[str, torch.Tensor], waves: list[float], layout: str = "band_major"):
    """DOFA's patch kernel written out: sin-cos(nm) → FCResLayer → post-norm encoder → linear maps × 0.01."""
    g = "patch_embed.weight_generator."
    e = g + "transformer_encoder.layers.0."
    lin = lambda x, name: x @ sd[name + ".weight"].T + sd[name + ".bias"]  # noqa: E731

    nm = torch.tensor(waves, dtype=torch.float32) * 1000
    omega = 1.0 / 10000 ** (torch.arange(64, dtype=torch.float32) / 64.0)
    angles = nm[:, None] * omega[None, :]
    code = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # C × 128
    code = code + torch.relu(lin(torch.relu(lin(code, "patch_embed.fclayer.w1")), "patch_embed.fclayer.w2"))

    seq = torch.cat([sd[g + "weight_tokens"], code, sd[g + "bias_token"]])  # (128 + C + 1) × 128
    qkv = seq @ sd[e + "self_attn.in_proj_weight"].T + sd[e + "self_attn.in_proj_bias"]
    q, k, v = qkv.split(128, dim=1)
    heads = [slice(i * 32, (i + 1) * 32) for i in range(4)]
    att = torch.cat([torch.softmax(q[:, s] @ k[:, s].T / math.sqrt(32), dim=-1) @ v[:, s] for s in heads], dim=1)
    x = F.layer_norm(seq + lin(att, e + "self_attn.out_proj"), (128,), sd[e + "norm1.weight"], sd[e + "norm1.bias"])
    ff = lin(F.gelu(lin(x, e + "linear1")), e + "linear2")
    out = F.layer_norm(x + ff, (128,), sd[e + "norm2.weight"], sd[e + "norm2.bias"])

    c = len(waves)
    rows = lin(out[128 : 128 + c] + code, g + "fc_weight")  # C × (P·P·D): band c's kernel slice
    bias = lin(out[-1], g + "fc_bias") * 0.01
    weight = torch.empty(D, c, P, P)
    if layout == "band_major":  # fixed code: row c read as P × P × D, i.e. element (y·P + x)·D + o
        for band in range(c):
            for y in range(P):
                for xx in range(P):
                    start = (y * P + xx) * D
                    weight[:, band, y, xx] = rows[band, start : start + D]
    else:  # pre-fix code: the C·P·P·D numbers, in row order, read as a D × C × P × P array
        flat = [float(v) for v in rows.flatten()]
        for o in range(D):
            for band in range(c):
                for y in range(P):
                    for xx in range(P):
                        weight[o, band, y, xx] = flat[((o * c + band) * P + y) * P + xx]
    return weight * 0.01, bias


@pytest.mark.parametrize("waves", [WAVES4, WAVES32], ids=["4-band", "32-band"])
def test_generated_kernel_matches_direct_computation(model, public_state, waves):
    weight, bias = model.patch_kernel(waves)
    ref_weight, ref_bias = reference_kernel(public_state, waves)
    assert weight.shape == (D, len(waves), P, P)
    torch.testing.assert_close(weight, ref_weight, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(bias, ref_bias, rtol=1e-4, atol=1e-6)


def test_legacy_kernel_layout(public_state, tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save(public_state, path)
    m = DOFABackbone.from_checkpoint(path, size=TINY, kernel_layout="legacy")
    weight, _ = m.patch_kernel(WAVES4)
    torch.testing.assert_close(weight, reference_kernel(public_state, WAVES4, "legacy")[0], rtol=1e-4, atol=1e-6)
    band_major = reference_kernel(public_state, WAVES4, "band_major")[0]
    assert (weight - band_major).abs().max() > 1e-3  # the two layouts really differ


# ---------------------------------------------------------------------------------------------------------------
# Kernel layout: stored by `rsmoe convert dofa-*`, inferred from known release hashes, warned about otherwise


@pytest.fixture
def tiny_is_a_size(monkeypatch):
    """Let size inference recognise the tiny test architecture (as it recognises 'base' for a real file)."""
    monkeypatch.setitem(DOFA_SIZES, "tiny", TINY)


@pytest.mark.parametrize("layout", ["band_major", "legacy"])
def test_convert_then_load_keeps_the_layout(public_state, tmp_path, tiny_is_a_size, layout):
    from rsmoe.convert import run_convert_from_args
    from rsmoe.convert.cli import add_convert_arguments
    from rsmoe.models.backbones import build_backbone

    src = tmp_path / "DOFA_ViT_tiny_e100.pth"
    torch.save(public_state | random_state(AUTHOR_EXTRAS, seed=1), src)
    out = tmp_path / f"dofa_{layout}.safetensors"
    parser = argparse.ArgumentParser()
    add_convert_arguments(parser)
    assert run_convert_from_args(parser.parse_args(["dofa-original", str(src), str(out),
                                                    "--kernel-layout", layout])) == 0
    m = build_backbone("dofa", pretrained=str(out), config={})  # backbone.pretrained, no kernel_layout given
    assert m.patch_embed.kernel_layout == layout and m.config.embed_dim == D
    for waves in (WAVES4, WAVES32[:7]):
        ref_weight, ref_bias = reference_kernel(public_state, waves, layout)
        weight, bias = m.patch_kernel(waves)
        torch.testing.assert_close(weight, ref_weight, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(bias, ref_bias, rtol=1e-4, atol=1e-6)
    other = "legacy" if layout == "band_major" else "band_major"
    with pytest.raises(CheckpointError, match=f"converted with kernel_layout '{layout}'.*asks for '{other}'"):
        build_backbone("dofa", pretrained=str(out), config={"kernel_layout": other})


def test_config_layout_without_size_infers_the_size(public_state, tmp_path, tiny_is_a_size):
    from rsmoe.models.backbones import build_backbone

    path = tmp_path / "DOFA_ViT_tiny_e100.pth"
    torch.save(public_state, path)
    m = build_backbone("dofa", pretrained=str(path), config={"kernel_layout": "legacy"})
    assert (m.config.embed_dim, m.config.depth, m.config.num_heads, m.config.patch_size) == (D, DEPTH, HEADS, P)
    assert m.patch_embed.kernel_layout == "legacy"
    torch.testing.assert_close(m.patch_kernel(WAVES4)[0], reference_kernel(public_state, WAVES4, "legacy")[0],
                               rtol=1e-4, atol=1e-6)


def test_release_hashes_decide_and_warn(public_state, tmp_path, monkeypatch):
    from rsmoe.models.backbones import dofa_weights
    from rsmoe.models.backbones.dofa_weights import file_sha256

    path = tmp_path / "dofa_base_patch16_224-xxxxxxxx.pth"
    torch.save(public_state, path)
    sha = file_sha256(path)
    with pytest.warns(UserWarning, match=f"SHA-256 {sha[:12]}… is not a known post-fix DOFA release"):
        assert DOFABackbone.from_checkpoint(path, size=TINY).patch_embed.kernel_layout == "band_major"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit legacy request: nothing to warn about
        assert DOFABackbone.from_checkpoint(path, size=TINY, kernel_layout="legacy").patch_embed.kernel_layout == \
            "legacy"
    monkeypatch.setitem(dofa_weights.POST_FIX_SHA256, sha, "DOFA_ViT_tiny_e100.pth (test)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known post-fix release: band_major, silently
        assert DOFABackbone.from_checkpoint(path, size=TINY).patch_embed.kernel_layout == "band_major"
    monkeypatch.delitem(dofa_weights.POST_FIX_SHA256, sha)
    monkeypatch.setitem(dofa_weights.PRE_FIX_TORCHGEO_PREFIXES, sha[:8], "dofa_tiny-prefix.pth (test)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known pre-fix TorchGeo file: legacy without being asked
        assert DOFABackbone.from_checkpoint(path, size=TINY).patch_embed.kernel_layout == "legacy"
    with pytest.warns(UserWarning, match="needs kernel_layout 'legacy', but 'band_major' is used"):
        DOFABackbone.from_checkpoint(path, size=TINY, kernel_layout="band_major")


def test_known_release_table():
    """The hashes quoted from the releases (authors' re-uploads; TorchGeo's file-name prefixes before/after #2256)."""
    from rsmoe.models.backbones.dofa_weights import known_release

    base = "4720985e42b918ac0307009eb06121a3435d9bbce6fd95446f84824a538165b1"
    large = "ea9910bc026268ca36c30b76fd1169aeaca9ea51af5eaff840a20f150ea03d49"
    assert known_release(base)[0] == known_release(large)[0] == "band_major"
    assert known_release("7cc0f413" + "0" * 56)[0] == known_release("fbd47fa9" + "0" * 56)[0] == "legacy"
    assert known_release("a0275954" + "0" * 56)[0] == known_release("0ff904d3" + "0" * 56)[0] == "band_major"
    assert known_release("4720985e" + "0" * 56) == (None, None)  # the authors' files are matched in full


# ---------------------------------------------------------------------------------------------------------------
# Forward


def reference_forward(sd: dict[str, torch.Tensor], image: torch.Tensor, waves: list[float]) -> torch.Tensor:
    """Conv (stride P, padding 1, cropped to H//P × W//P) + pos + CLS, then pre-norm ViT blocks by hand."""
    weight, bias = reference_kernel(sd, waves)
    h, w = image.shape[-2] // P, image.shape[-1] // P
    x = F.conv2d(image, weight, bias, stride=P, padding=1)[:, :, :h, :w].flatten(2).transpose(1, 2)
    assert (h, w) == (G, G), "reference uses the stored position table as is"
    x = x + sd["pos_embed"][:, 1:]
    cls = (sd["cls_token"] + sd["pos_embed"][:, :1]).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1)
    hd = D // HEADS
    for i in range(DEPTH):
        b = f"blocks.{i}."
        y = F.layer_norm(x, (D,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps=1e-6)
        qkv = y @ sd[b + "attn.qkv.weight"].T + sd[b + "attn.qkv.bias"]
        q, k, v = (t.unflatten(-1, (HEADS, hd)).transpose(1, 2) for t in qkv.split(D, dim=-1))
        a = (torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1) @ v).transpose(1, 2).flatten(2)
        x = x + a @ sd[b + "attn.proj.weight"].T + sd[b + "attn.proj.bias"]
        y = F.layer_norm(x, (D,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps=1e-6)
        y = F.gelu(y @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"])
        x = x + y @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"]
    return x


def test_block_by_block_equals_full_forward(model, public_state):
    image = torch.randn(2, 4, 16, 16)
    tokens, ctx = model.embed(image, WAVES4)
    for i in range(model.num_layers):
        tokens = model.block(i, tokens, ctx)
        prefix, patches = model.split_prefix(tokens)
        assert prefix.shape == (2, 1, D)
        tokens = model.join_prefix(prefix, patches)
    full = model(image, WAVES4)
    torch.testing.assert_close(tokens, full, rtol=0, atol=0)
    torch.testing.assert_close(full, reference_forward(public_state, image, WAVES4), rtol=1e-4, atol=1e-5)


def test_position_embedding_interpolation(model, public_state):
    pe = public_state["pos_embed"]
    torch.testing.assert_close(resample_pos_embed(pe, (G, G), (G, G)), pe, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.position_embedding((G, G)), pe, rtol=0, atol=1e-6)
    wide = model.position_embedding((6, 3))
    assert wide.shape == (1, 1 + 18, D)
    torch.testing.assert_close(wide[:, :1], pe[:, :1], rtol=0, atol=0)  # CLS row kept


def test_sincos_table_follows_mae():
    """First half of the channels encodes the column, second half the row, CLS row zero (MAE)."""
    dim, h, w = 16, 3, 5
    table = sincos_pos_embed_2d(dim, (h, w))[0]
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    assert torch.equal(table[0], torch.zeros(dim))
    for r in range(h):
        for c in range(w):
            expect = torch.cat([torch.sin(c * omega), torch.cos(c * omega), torch.sin(r * omega), torch.cos(r * omega)])
            torch.testing.assert_close(table[1 + r * w + c], expect.float())


# ---------------------------------------------------------------------------------------------------------------
# Errors


def test_missing_file_error(tmp_path):
    path = tmp_path / "nope" / "DOFA_ViT_base_e100.pth"
    with pytest.raises(CheckpointError) as err:
        DOFABackbone.from_checkpoint(path, size="base")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_shape_mismatch_error(public_state, tmp_path):
    state = dict(public_state)
    state["blocks.1.attn.qkv.weight"] = torch.zeros(3 * D, D + 8)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        DOFABackbone.from_checkpoint(path, size=TINY)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    assert f"blocks.1.attn.qkv.weight: checkpoint ({3 * D}, {D + 8}) vs model ({3 * D}, {D})" in msg


def test_missing_and_unexpected_key_errors(public_state, tmp_path):
    state = {k: v for k, v in public_state.items() if k != "patch_embed.weight_generator.bias_token"}
    state["decoder_pred.weight"] = torch.zeros(3, 3)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        DOFABackbone.from_checkpoint(path, size=TINY)
    msg = str(err.value)
    assert "\n" not in msg
    assert "missing 1 key(s): patch_embed.weight_generator.bias_token" in msg
    assert "unexpected 1 key(s): decoder_pred.weight" in msg
    with pytest.warns(UserWarning, match="bias_token"):
        m = DOFABackbone.from_checkpoint(path, size=TINY, strict=False)
    assert torch.equal(m.state_dict()["blocks.0.attn.qkv.weight"], public_state["blocks.0.attn.qkv.weight"])


def test_wrong_size_is_a_shape_mismatch(public_state, tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(public_state, path)
    expected = r"shape mismatch for DOFA-small: cls_token: checkpoint \(1, 1, 32\) vs model \(1, 1, 384\)"
    with pytest.raises(ValueError, match=expected):
        DOFABackbone.from_checkpoint(path, size="small")
    with pytest.raises(ValueError, match="match no DOFA size"):
        DOFABackbone.from_checkpoint(path)
