"""DilateFormer blocks → MPerS adapter blocks: `rsmoe convert dilateformer`, `mpers.adapter_pretrained`, and the
configurable LayerNorm eps / qkv bias.

The checkpoint here is a random state dict in the public naming (github.com/JIAOJIAYUASD/dilateformer,
``models/dilateformer.py``: ``stages.{s}.blocks.{b}.pos_embed / norm1 / attn.qkv / attn.proj / norm2 / mlp.fc1 /
mlp.fc2``, a 1×1-conv q, k, v in the dilated stages and a ``Linear`` one in the global stages, plus the patch
embedding, merging layers, final norm and classifier). The reference forwards below are written from the
public blocks' definitions and read that state dict directly; they never call rsmoe's modules.
"""
from __future__ import annotations

import argparse
import warnings

import pytest
import torch
import torch.nn.functional as F

from rsmoe.convert import run_convert_from_args
from rsmoe.convert.cli import add_convert_arguments
from rsmoe.errors import CheckpointError, ConfigError
from rsmoe.models.mpers.dilateformer import DilateAdapter, load_pretrained_adapter

WIDTHS, HEADS, DEPTHS = (24, 48, 96, 192), (3, 6, 12, 24), (2, 1, 2, 1)  # heads as in every released model


def public_state(seed: int = 0, qkv_bias: bool = True) -> dict[str, torch.Tensor]:
    """A tiny DilateFormer: stages 0–1 dilated (conv q, k, v), 2–3 global (Linear q, k, v)."""
    g = torch.Generator().manual_seed(seed)
    t = lambda *s, scale=0.2: torch.randn(*s, generator=g) * scale  # noqa: E731
    sd = {"patch_embed.proj.0.weight": t(12, 3, 3, 3), "norm.weight": 1 + t(192), "head.weight": t(10, 192)}
    for s, (c, depth) in enumerate(zip(WIDTHS, DEPTHS)):
        for b in range(depth):
            p = f"stages.{s}.blocks.{b}."
            sd |= {p + "pos_embed.weight": t(c, 1, 3, 3), p + "pos_embed.bias": t(c),
                   p + "norm1.weight": 1 + t(c), p + "norm1.bias": t(c),
                   p + "attn.qkv.weight": t(3 * c, c, 1, 1) if s < 2 else t(3 * c, c),
                   p + "attn.proj.weight": t(c, c), p + "attn.proj.bias": t(c),
                   p + "norm2.weight": 1 + t(c), p + "norm2.bias": t(c),
                   p + "mlp.fc1.weight": t(4 * c, c), p + "mlp.fc1.bias": t(4 * c),
                   p + "mlp.fc2.weight": t(c, 4 * c), p + "mlp.fc2.bias": t(c)}
            if qkv_bias:
                sd[p + "attn.qkv.bias"] = t(3 * c)
        if s < 3:
            sd[f"stages.{s}.downsample.proj.0.weight"] = t(2 * c, c, 3, 3)
    return sd


def _dilated_heads(q, k, v, heads, rate, kernel=3):
    """One rate group: q, k, v B × c × H × W (c = heads · d) → B × H × W × c, keys gathered with unfold."""
    b, c, h, w = q.shape
    d = c // heads
    qh = q.reshape(b, heads, d, 1, h * w).permute(0, 1, 4, 3, 2)
    pad = rate * (kernel - 1) // 2
    ku = F.unfold(k, kernel, dilation=rate, padding=pad).reshape(b, heads, d, kernel * kernel, h * w)
    vu = F.unfold(v, kernel, dilation=rate, padding=pad).reshape(b, heads, d, kernel * kernel, h * w)
    attn = ((qh @ ku.permute(0, 1, 4, 2, 3)) * d ** -0.5).softmax(-1)
    return (attn @ vu.permute(0, 1, 4, 3, 2)).transpose(1, 2).reshape(b, h, w, c)


def public_block(sd, prefix, x, heads, dilations=(1, 2, 3), eps=1e-6):
    """DilateFormer's DilateBlock (dilations given) or GlobalBlock (dilations None) on B × C × H × W."""
    b, c, h, w = x.shape
    p = lambda name: sd.get(prefix + name)  # noqa: E731
    x = x + F.conv2d(x, p("pos_embed.weight"), p("pos_embed.bias"), padding=1, groups=c)
    y = x.permute(0, 2, 3, 1)
    n = F.layer_norm(y, (c,), p("norm1.weight"), p("norm1.bias"), eps)
    if dilations is not None:
        qkv = F.conv2d(n.permute(0, 3, 1, 2), p("attn.qkv.weight"), p("attn.qkv.bias"))
        groups = len(dilations)
        qkv = qkv.reshape(b, 3, groups, c // groups, h, w)
        a = torch.cat([_dilated_heads(qkv[:, 0, i], qkv[:, 1, i], qkv[:, 2, i], heads // groups, r)
                       for i, r in enumerate(dilations)], dim=-1)
    else:
        qkv = F.linear(n, p("attn.qkv.weight"), p("attn.qkv.bias"))
        q, k, v = qkv.reshape(b, h * w, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        a = (((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(-1) @ v).transpose(1, 2).reshape(b, h, w, c)
    y = y + F.linear(a, p("attn.proj.weight"), p("attn.proj.bias"))
    m = F.layer_norm(y, (c,), p("norm2.weight"), p("norm2.bias"), eps)
    y = y + F.linear(F.gelu(F.linear(m, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"),
                     p("mlp.fc2.bias"))
    return y.permute(0, 3, 1, 2)


def _save(tmp_path, sd, name="dilateformer_tiny.pth"):
    path = tmp_path / name
    torch.save({"model": sd, "epoch": 299, "args": argparse.Namespace(model="dilateformer_tiny")}, path)
    return path


def _convert(*argv) -> int:
    parser = argparse.ArgumentParser()
    add_convert_arguments(parser)
    return run_convert_from_args(parser.parse_args(["dilateformer", *map(str, argv)]))


@pytest.mark.parametrize("stage", [0, 2])
def test_converted_stage_runs_like_the_public_blocks(tmp_path, stage):
    sd = public_state()
    out = tmp_path / f"stage{stage}.safetensors"
    assert _convert(_save(tmp_path, sd), out, "--stage", stage) == 0
    c, heads = WIDTHS[stage], HEADS[stage]
    dilate = stage < 2
    adapter = DilateAdapter(c, depth=DEPTHS[stage], num_heads=heads, attention="dilate" if dilate else "mhsa",
                            dilation=(1, 2, 3), norm_eps=1e-6, qkv_bias=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # eps, heads and rates all match: nothing to warn about
        load_pretrained_adapter(adapter, out)
    x = torch.randn(2, c, 7, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want, sd64 = x, {k: v.double() for k, v in sd.items()}
    for b in range(DEPTHS[stage]):
        want = public_block(sd64, f"stages.{stage}.blocks.{b}.", want, heads, (1, 2, 3) if dilate else None)
    with torch.no_grad():
        torch.testing.assert_close(adapter.double()(x), want, rtol=1e-10, atol=1e-10)


def test_adapter_config_fields_reach_the_blocks_and_load_pretrained(tmp_path):
    from rsmoe.config import load_config
    from rsmoe.demo import demo_config_path
    from rsmoe.models.mpers.dilateformer import load_pretrained_adapters
    from rsmoe.models.mpers.model import build_mpers

    sd = public_state(qkv_bias=False)
    out = tmp_path / "stage0.safetensors"
    _convert(_save(tmp_path, sd), out, "--stage", 0)
    cfg = load_config(demo_config_path(), [
        "model=mpers", "mpers.neck_channels=[32, 24]", "mpers.ldpe_widths=[8, 8, 16, 24]",
        "mpers.text_encoder=tiny", "mpers.text_dim=16",
        "mpers.linguistic_heads=2", "mpers.gate_hidden=8", "mpers.decoder_channels=[16, 16, 8]",
        "mpers.adapter_heads=3", "mpers.adapter_blocks=2", "mpers.adapter_branches=[dino, ldpe]",
        "mpers.adapter_norm_eps=1.0e-6", "mpers.adapter_qkv_bias=false", "mpers.adapter_dilations=[1, 2, 3]",
        f"mpers.adapter_pretrained={{dino4: {out}}}"])
    model = build_mpers(cfg, 3, [0.49, 0.56, 0.665, 0.83], load_text_encoder=False)
    for key in ("dino4", "ldpe4"):
        for block in model.adapters[key]:
            assert block.norm1.eps == block.norm2.eps == 1e-6 and block.attn.qkv.bias is None
            assert block.attn.dilations == (1, 2, 3)
    block = model.adapters["dino4"][1]
    assert torch.equal(block.mlp[2].weight, sd["stages.0.blocks.1.mlp.fc2.weight"])
    assert torch.equal(block.pos.bias, sd["stages.0.blocks.1.pos_embed.bias"])
    assert not torch.equal(model.adapters["ldpe4"][1].mlp[2].weight, sd["stages.0.blocks.1.mlp.fc2.weight"])
    with pytest.raises(ConfigError, match=r"adapter_pretrained names \['dino3'\].*\['dino4', 'ldpe4'\]"):
        load_pretrained_adapters(model.adapters, {"dino3": str(out)})


def test_mismatches_are_one_line_errors_or_warnings(tmp_path):
    sd = public_state(qkv_bias=False)
    src = _save(tmp_path, sd)
    out = tmp_path / "s0.safetensors"
    _convert(src, out, "--stage", 0, "--blocks", 1)

    def adapter(**kw):
        args = dict(depth=1, num_heads=3, attention="dilate", dilation=(1, 2, 3), norm_eps=1e-6, qkv_bias=False)
        return DilateAdapter(24, **(args | kw))

    for kw, match in [({"depth": 2}, "holds 1 block"), ({"attention": "mhsa"}, "'dilate' blocks cannot start"),
                      ({"num_heads": 6, "dilation": 1}, "trained with 3 heads"),
                      ({"qkv_bias": True}, r"missing 1 key\(s\): 0.attn.qkv.bias")]:
        with pytest.raises(CheckpointError, match=match) as info:
            load_pretrained_adapter(adapter(**kw), out)
        assert "\n" not in str(info.value)
    with pytest.warns(UserWarning, match="LayerNorm eps 1e-06, the adapter adapter uses 1e-05"):
        load_pretrained_adapter(adapter(norm_eps=1e-5), out)
    with pytest.warns(UserWarning, match=r"rates \[1,2,3\].*uses \[1\]"):
        load_pretrained_adapter(adapter(dilation=1), out)
    with pytest.raises(ConfigError, match="no stage 7; the checkpoint has stages"):
        _convert(src, tmp_path / "x.safetensors", "--stage", 7)
    with pytest.raises(ConfigError, match=r"\.safetensors"):
        _convert(src, tmp_path / "x.pth", "--stage", 0)
    with pytest.raises(ConfigError, match="needs --stage"):
        _convert(src, tmp_path / "y.safetensors")
