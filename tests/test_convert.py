"""Converters (`rsmoe convert`): the authors' SpectralMoE checkpoint, mmdet's Mask2Former head, DINOv3 / Depth
Anything / Prompt Depth Anything / DOFA originals, the safe loader, and the ablation grids.

Every "original" state dict here is built from the original module structure (names and shapes written out from
the public code's layer definitions), never by renaming rsmoe's or transformers' own state dicts."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from rsmoe.convert import (
    add_convert_arguments,
    convert_depth_anything_original,
    convert_dinov3_original,
    convert_dofa,
    convert_mmdet_mask2former_head,
    convert_spectralmoe_official_adapter,
    convert_spectralmoe_official_state_dict,
    dinov3_config_from_state,
    parse_mmengine_config_text,
    run_convert_from_args,
)
from rsmoe.errors import CheckpointError, ConfigError
from rsmoe.io.torch_files import read_torch_file
from rsmoe.models.adapters.spectralmoe import SpectralMoE
from rsmoe.models.heads.mask2former import Mask2FormerHead

L, E, M, R, D, Q = 3, 3, 5, 2, 16, 8  # layers, experts, tokens per expert, rank, width, query width


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ================================================================================================================
# the authors' DepthMoE naming
# ================================================================================================================
def official_adapter_state(layers=L, experts=E, m=M, r=R, d=D, q=Q, seed=0, dtype=torch.float64) -> dict:
    """Random tensors under the authors' DepthMoE keys: per-(layer, expert) ParameterLists experts_a.{l}.{e}
    (m×r) / experts_b.{l}.{e} (r×d), routers w_gate.{l}.{j} / w_noise.{l}.{j} (d×E, j = 0 visual, 1 depth),
    scale (0-dim), mlp_token2feat / mlp_delta_f (Linear d→d), transform (Linear d→q), merge (Linear 3q→q) and
    the buffers mean = [0.], std = [1.]."""
    g = _g(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale)

    sd = {}
    for l in range(layers):
        for e in range(experts):
            sd[f"experts_a.{l}.{e}"] = rnd(m, r)
            sd[f"experts_b.{l}.{e}"] = rnd(r, d, scale=0.5)
        for j in range(2):
            sd[f"w_gate.{l}.{j}"] = rnd(d, experts)
            sd[f"w_noise.{l}.{j}"] = rnd(d, experts, scale=0.1)
    sd["scale"] = torch.tensor(0.37, dtype=dtype)
    for name, (out, inp) in {"mlp_token2feat": (d, d), "mlp_delta_f": (d, d), "transform": (q, d),
                             "merge": (q, 3 * q)}.items():
        sd[f"{name}.weight"] = rnd(out, inp, scale=1 / math.sqrt(inp))
        sd[f"{name}.bias"] = rnd(out, scale=0.1)
    sd["mean"] = torch.tensor([0.0])
    sd["std"] = torch.tensor([1.0])
    return sd


def _cv2(v: list[float]) -> float:
    n = len(v)
    mean = sum(v) / n
    var = sum((x - mean) ** 2 for x in v) / (n - 1)
    return var / (mean * mean + 1e-10)


def slow_reference_layer(sd, layer, xv, xd, gating, p=2.0):
    """docs/spectralmoe.md §4–§6 in eval mode, token by token, straight from the authors' tensors.

    Returns the updated visual tokens and 1000 · Σ_j [cv²(importance) + cv²(load)]."""
    b_, n_, d = xv.shape
    experts = sum(1 for k in sd if k.startswith(f"experts_a.{layer}."))
    tokens = [sd[f"experts_a.{layer}.{e}"] @ sd[f"experts_b.{layer}.{e}"] for e in range(experts)]  # m×d each
    w1, b1 = sd["mlp_token2feat.weight"], sd["mlp_token2feat.bias"]
    wd, bd = sd["mlp_delta_f.weight"], sd["mlp_delta_f.bias"]
    alpha = float(sd["scale"])

    def clean_logit(x, j, e):
        centre = sd[f"w_gate.{layer}.{j}"][:, e]
        if gating == "softmax":
            return float(x @ centre)
        dist = float(((x - centre).abs() ** p).sum() ** (1 / p))
        return -dist if gating == "laplace" else -float(((x - centre) ** 2).sum())

    def route(x, j):
        scores = [clean_logit(x, j, e) for e in range(experts)]
        return max(range(experts), key=lambda e: scores[e])  # top-1; its gate is exactly 1

    def refine(x, e):
        t = tokens[e]
        logits = [float(x.sum() * t[i].sum()) / math.sqrt(d) for i in range(t.shape[0])]
        top = max(logits)
        w = [math.exp(v - top) for v in logits]
        z = sum(w)
        out = torch.zeros(d, dtype=x.dtype)
        for i in range(1, t.shape[0]):  # the first token joins the normalisation only
            out += (w[i] / z) * (w1 @ t[i] + b1)
        return out

    counts = [[0] * experts for _ in range(2)]
    out = torch.empty_like(xv)
    for b in range(b_):
        dv, dd = [], []
        for n in range(n_):
            ev, ed = route(xv[b, n], 0), route(xd[b, n], 1)
            counts[0][ev] += 1
            counts[1][ed] += 1
            dv.append(refine(xv[b, n], ev))
            dd.append(refine(xd[b, n], ed))
        for n in range(n_):
            row = [float(dd[n] @ dv[k]) / math.sqrt(d) for k in range(n_)]
            top = max(row)
            s_nn = math.exp(row[n] - top) / sum(math.exp(v - top) for v in row)
            delta = s_nn * dv[n]
            out[b, n] = xv[b, n] + alpha * (wd @ (delta + xv[b, n]) + bd)
    loss = 1000.0 * sum(2 * _cv2([float(c) for c in counts[j]]) for j in range(2))  # eval: importance = load
    return out, loss


def slow_reference_queries(sd, layers, experts, q):
    """docs/spectralmoe.md §7 query link written element by element: per layer the expert mean → transform → over layers
    max / mean / last at positions 3c + 0 / 1 / 2 → merge."""
    per_layer = []
    for l in range(layers):
        mean_tokens = sum(sd[f"experts_a.{l}.{e}"] @ sd[f"experts_b.{l}.{e}"] for e in range(experts)) / experts
        per_layer.append(mean_tokens @ sd["transform.weight"].T + sd["transform.bias"])  # m×q
    stack = torch.stack(per_layer)  # L×m×q
    m = stack.shape[1]
    merged_in = torch.empty(m, 3 * q, dtype=stack.dtype)
    for i in range(m):
        for c in range(q):
            column = stack[:, i, c]
            merged_in[i, 3 * c + 0] = column.max()
            merged_in[i, 3 * c + 1] = column.mean()
            merged_in[i, 3 * c + 2] = column[-1]
    return merged_in @ sd["merge.weight"].T + sd["merge.bias"]


@pytest.mark.parametrize("gating", ["softmax", "laplace", "gaussian"])
def test_official_adapter_drives_layer_like_slow_reference(gating):
    sd = official_adapter_state()
    converted, notes = convert_spectralmoe_official_adapter(sd)
    assert notes == []
    layer = SpectralMoE(num_layers=L, dim=D, num_experts=E, num_tokens=M, rank=R, top_k=1, gating=gating,
                        expert_logits="official", fusion="official", query_dim=Q).double().eval()
    missing, unexpected = layer.load_state_dict(converted, strict=True)
    assert not missing and not unexpected
    g = _g(1)
    xv = torch.randn(2, 6, D, generator=g, dtype=torch.float64)
    xd = torch.randn(2, 6, D, generator=g, dtype=torch.float64)
    used = set()
    for l in range(L):
        want, want_loss = slow_reference_layer(sd, l, xv, xd, gating)
        with torch.no_grad():
            got = layer(l, xv, xd)
        torch.testing.assert_close(got.tokens, want, rtol=1e-10, atol=1e-10)
        assert float(got.loss) == pytest.approx(want_loss, rel=1e-9, abs=1e-9)
        used.add(want_loss)
    assert any(v > 0 for v in used)  # tokens really spread over several experts
    with torch.no_grad():
        torch.testing.assert_close(layer.query_embeddings(), slow_reference_queries(sd, L, E, Q),
                                   rtol=1e-10, atol=1e-10)


def test_official_adapter_errors_name_the_key():
    sd = official_adapter_state()
    sd["experts_a.1.2"] = torch.zeros(M, R + 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"experts_a\.1\.2 has shape \(5, 3\).*\(5, 2\).*lora_dims"):
        convert_spectralmoe_official_adapter(sd)
    sd = official_adapter_state()
    del sd["w_noise.2.1"]
    with pytest.raises(ValueError, match=r"missing backbone\.depthmoe\.w_noise\.2\.1"):
        convert_spectralmoe_official_adapter(sd)
    sd = official_adapter_state()
    sd["surprise"] = torch.zeros(1)
    with pytest.raises(ValueError, match="backbone.depthmoe.surprise"):
        convert_spectralmoe_official_adapter(sd)


# ================================================================================================================
# mmdet 3.x Mask2FormerHead naming
# ================================================================================================================
HEAD = dict(channels=32, num_queries=M, pixel_decoder_layers=2, decoder_layers=2, num_heads=4, num_points=2,
            ffn_pixel=48, ffn_decoder=40, num_points_loss=64)


def mmdet_head_state(in_ch=D, num_classes=3, C=32, queries=M, enc_layers=2, dec_layers=2, heads=4, points=2,
                     ffn_enc=48, ffn_dec=40, levels=3, seed=0, with_query_embed=False, mmdet2=False) -> dict:
    """Random tensors under mmdet's Mask2FormerHead keys, from its module structure:

    pixel_decoder = MSDeformAttnPixelDecoder: input_convs[i] = ConvModule(1×1 conv with bias, GN) for the inputs
    from the coarsest down; level_encoding (levels×C); encoder.layers[n] = (self_attn: MultiScaleDeformableAttention
    with sampling_offsets (M·L·P·2), attention_weights (M·L·P), value_proj, output_proj; ffn: FFN with Linear at
    layers.0.0 and layers.1; norms.0/1); lateral_convs[0] / output_convs[0] = ConvModule(conv without bias, GN)
    (1×1 from the finest input / 3×3); mask_feature (1×1 conv). transformer_decoder.layers[n] = (cross_attn,
    self_attn: mmcv MultiheadAttention wrapping nn.MultiheadAttention as .attn; ffn; norms.0/1/2); post_norm.
    query_feat, [query_embed], level_embed, cls_embed (K+1), mask_embed = Sequential(Linear, ReLU, Linear, ReLU,
    Linear). ``mmdet2``: the 2.x layer naming (attentions.0 = cross / MSDA, attentions.1 = self, ffns.0)."""
    g = _g(seed)
    sd = {}

    def t(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    def linear(name, out, inp):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = t(out, inp), t(out)

    def norm(name, n):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = 1 + t(n), t(n)

    for i in range(levels):
        sd[f"pixel_decoder.input_convs.{i}.conv.weight"] = t(C, in_ch, 1, 1)
        sd[f"pixel_decoder.input_convs.{i}.conv.bias"] = t(C)
        norm(f"pixel_decoder.input_convs.{i}.gn", C)
    sd["pixel_decoder.level_encoding.weight"] = t(levels, C)
    msda, enc_ffn = ("attentions.0", "ffns.0") if mmdet2 else ("self_attn", "ffn")
    for n in range(enc_layers):
        base = f"pixel_decoder.encoder.layers.{n}"
        linear(f"{base}.{msda}.sampling_offsets", heads * levels * points * 2, C)
        linear(f"{base}.{msda}.attention_weights", heads * levels * points, C)
        linear(f"{base}.{msda}.value_proj", C, C)
        linear(f"{base}.{msda}.output_proj", C, C)
        linear(f"{base}.{enc_ffn}.layers.0.0", ffn_enc, C)
        linear(f"{base}.{enc_ffn}.layers.1", C, ffn_enc)
        norm(f"{base}.norms.0", C)
        norm(f"{base}.norms.1", C)
    sd["pixel_decoder.lateral_convs.0.conv.weight"] = t(C, in_ch, 1, 1)
    norm("pixel_decoder.lateral_convs.0.gn", C)
    sd["pixel_decoder.output_convs.0.conv.weight"] = t(C, C, 3, 3)
    norm("pixel_decoder.output_convs.0.gn", C)
    sd["pixel_decoder.mask_feature.weight"], sd["pixel_decoder.mask_feature.bias"] = t(C, C, 1, 1), t(C)
    cross, self_, dec_ffn = ("attentions.0", "attentions.1", "ffns.0") if mmdet2 else ("cross_attn", "self_attn",
                                                                                        "ffn")
    for n in range(dec_layers):
        base = f"transformer_decoder.layers.{n}"
        for att in (cross, self_):
            sd[f"{base}.{att}.attn.in_proj_weight"] = t(3 * C, C)
            sd[f"{base}.{att}.attn.in_proj_bias"] = t(3 * C)
            linear(f"{base}.{att}.attn.out_proj", C, C)
        linear(f"{base}.{dec_ffn}.layers.0.0", ffn_dec, C)
        linear(f"{base}.{dec_ffn}.layers.1", C, ffn_dec)
        for k in range(3):
            norm(f"{base}.norms.{k}", C)
    norm("transformer_decoder.post_norm", C)
    sd["query_feat.weight"] = t(queries, C)
    if with_query_embed:
        sd["query_embed.weight"] = t(queries, C)
    sd["level_embed.weight"] = t(levels, C)
    linear("cls_embed", num_classes + 1, C)
    for i in (0, 2, 4):
        linear(f"mask_embed.{i}", C, C)
    return sd


@torch.no_grad()
def load_head_by_hand(head: Mask2FormerHead, sd: dict) -> None:
    """Assign mmdet tensors to rsmoe's modules through attribute access (the other way of doing the mapping)."""
    pd = head.pixel_decoder
    for i, proj in enumerate(pd.input_projs):
        proj[0].weight.copy_(sd[f"pixel_decoder.input_convs.{i}.conv.weight"])
        proj[0].bias.copy_(sd[f"pixel_decoder.input_convs.{i}.conv.bias"])
        proj[1].weight.copy_(sd[f"pixel_decoder.input_convs.{i}.gn.weight"])
        proj[1].bias.copy_(sd[f"pixel_decoder.input_convs.{i}.gn.bias"])
    pd.level_embed.weight.copy_(sd["pixel_decoder.level_encoding.weight"])
    for n, layer in enumerate(pd.layers):
        base = f"pixel_decoder.encoder.layers.{n}"
        for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            getattr(layer.self_attn, name).weight.copy_(sd[f"{base}.self_attn.{name}.weight"])
            getattr(layer.self_attn, name).bias.copy_(sd[f"{base}.self_attn.{name}.bias"])
        layer.ffn[0].weight.copy_(sd[f"{base}.ffn.layers.0.0.weight"])
        layer.ffn[0].bias.copy_(sd[f"{base}.ffn.layers.0.0.bias"])
        layer.ffn[2].weight.copy_(sd[f"{base}.ffn.layers.1.weight"])
        layer.ffn[2].bias.copy_(sd[f"{base}.ffn.layers.1.bias"])
        for k, nm in enumerate((layer.norm1, layer.norm2)):
            nm.weight.copy_(sd[f"{base}.norms.{k}.weight"])
            nm.bias.copy_(sd[f"{base}.norms.{k}.bias"])
    pd.lateral_conv[0].weight.copy_(sd["pixel_decoder.lateral_convs.0.conv.weight"])
    pd.lateral_conv[1].weight.copy_(sd["pixel_decoder.lateral_convs.0.gn.weight"])
    pd.lateral_conv[1].bias.copy_(sd["pixel_decoder.lateral_convs.0.gn.bias"])
    pd.output_conv[0].weight.copy_(sd["pixel_decoder.output_convs.0.conv.weight"])
    pd.output_conv[1].weight.copy_(sd["pixel_decoder.output_convs.0.gn.weight"])
    pd.output_conv[1].bias.copy_(sd["pixel_decoder.output_convs.0.gn.bias"])
    pd.mask_feature.weight.copy_(sd["pixel_decoder.mask_feature.weight"])
    pd.mask_feature.bias.copy_(sd["pixel_decoder.mask_feature.bias"])
    for n, layer in enumerate(head.layers):
        base = f"transformer_decoder.layers.{n}"
        for att, mod in (("cross_attn", layer.cross_attn), ("self_attn", layer.self_attn)):
            mod.in_proj_weight.copy_(sd[f"{base}.{att}.attn.in_proj_weight"])
            mod.in_proj_bias.copy_(sd[f"{base}.{att}.attn.in_proj_bias"])
            mod.out_proj.weight.copy_(sd[f"{base}.{att}.attn.out_proj.weight"])
            mod.out_proj.bias.copy_(sd[f"{base}.{att}.attn.out_proj.bias"])
        layer.ffn[0].weight.copy_(sd[f"{base}.ffn.layers.0.0.weight"])
        layer.ffn[0].bias.copy_(sd[f"{base}.ffn.layers.0.0.bias"])
        layer.ffn[2].weight.copy_(sd[f"{base}.ffn.layers.1.weight"])
        layer.ffn[2].bias.copy_(sd[f"{base}.ffn.layers.1.bias"])
        for k, nm in enumerate((layer.norm1, layer.norm2, layer.norm3)):
            nm.weight.copy_(sd[f"{base}.norms.{k}.weight"])
            nm.bias.copy_(sd[f"{base}.norms.{k}.bias"])
    head.decoder_norm.weight.copy_(sd["transformer_decoder.post_norm.weight"])
    head.decoder_norm.bias.copy_(sd["transformer_decoder.post_norm.bias"])
    head.query_feat.weight.copy_(sd["query_feat.weight"])
    head.query_pos.weight.copy_(sd["query_embed.weight"])
    head.level_embed.weight.copy_(sd["level_embed.weight"])
    head.class_embed.weight.copy_(sd["cls_embed.weight"])
    head.class_embed.bias.copy_(sd["cls_embed.bias"])
    for i in (0, 2, 4):
        head.mask_embed[i].weight.copy_(sd[f"mask_embed.{i}.weight"])
        head.mask_embed[i].bias.copy_(sd[f"mask_embed.{i}.bias"])


@pytest.mark.parametrize("mmdet2", [False, True])
def test_mmdet_head_converts_like_loading_by_hand(mmdet2):
    sd = mmdet_head_state(with_query_embed=True, mmdet2=mmdet2)
    converted = convert_mmdet_mask2former_head(sd)
    head = Mask2FormerHead([D] * 4, 3, **HEAD).eval()
    expected = head.state_dict()
    assert set(converted) == set(expected)
    for key, value in converted.items():
        assert value.shape == expected[key].shape, key
    missing, unexpected = head.load_state_dict(converted, strict=True)
    assert not missing and not unexpected

    hand = Mask2FormerHead([D] * 4, 3, **HEAD).eval()
    load_head_by_hand(hand, mmdet_head_state(with_query_embed=True, mmdet2=False))
    g = _g(5)
    feats = [torch.randn(1, D, s, s, generator=g) for s in (16, 8, 4, 2)]
    with torch.no_grad():
        a, b = head(feats), hand(feats)
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"], rtol=0, atol=0)
    torch.testing.assert_close(a["pred_masks"], b["pred_masks"], rtol=0, atol=0)


def test_mmdet_head_unsupported_and_unknown_keys():
    sd = mmdet_head_state()
    sd["decoder_input_projs.0.weight"] = torch.zeros(32, 32, 1, 1)
    with pytest.raises(ValueError, match="decoder_input_projs"):
        convert_mmdet_mask2former_head(sd)
    sd = mmdet_head_state()
    sd["pixel_decoder.encoder.layers.0.self_attn.sampling_offset.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="sampling_offset.weight"):
        convert_mmdet_mask2former_head(sd)


# ================================================================================================================
# the whole official checkpoint → rsmoe checkpoint (CLI path)
# ================================================================================================================
class LoggingState:
    """Stands for mmengine's HistoryBuffer & co.: a pickled object weights_only refuses."""

    def __init__(self):
        self.values = np.arange(3.0)
        self.count = np.float64(2.0)


def tiny_config_yaml(path: Path, rank=R) -> Path:
    cfg = {
        "name": "tiny_import",
        "backbone": {"kind": "dinov3", "taps": [0, 1, 2, L],
                     "config": {"hidden_size": D, "num_hidden_layers": L + 1, "num_attention_heads": 2,
                                "intermediate_size": 32, "patch_size": 16, "num_register_tokens": 4,
                                "image_size": 64}},
        "depth": {"enabled": True,
                  "config": {"hidden_size": D, "num_hidden_layers": L + 1, "num_attention_heads": 2,
                             "intermediate_size": 32, "patch_size": 14, "image_size": 56}},
        "adapter": {"type": "spectralmoe", "num_experts": E, "num_tokens": M, "rank": rank, "gating": "laplace",
                    "expert_logits": "official", "fusion": "official"},
        "head": {"type": "mask2former", "channels": 32,
                 "options": {k: v for k, v in HEAD.items() if k not in ("channels", "num_queries")}},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def official_full_state(layers=L + 1, seed=0) -> dict:
    sd = {f"backbone.depthmoe.{k}": v.float()
          for k, v in official_adapter_state(layers=layers, q=32, seed=seed).items()}
    sd.update({f"decode_head.{k}": v for k, v in mmdet_head_state(seed=seed).items()})
    sd["backbone.depth_anything.pretrained.cls_token"] = torch.zeros(1, 1, D)  # a frozen weight: ignored
    return sd


AUTHORS_CFG = """
crop_size = (512, 512)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[110.714, 85.357, 88.594], std=[72.38, 65.591, -1.0]),
    backbone=dict(type='DepthMoEDinoVisionTransformerV3', in_chans=3,
                  depthmoe_config=dict(type='DepthMoE', num_experts=3, top_k=1, token_length=5, gating='laplace',
                                       noisy_gating=True, lora_dims=[2, 2, 2])),
    decode_head=dict(type='DepthMoEMask2FormerHead', num_classes=3))
"""


def _convert_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_convert_arguments(parser)
    return parser.parse_args(list(argv))


def test_spectralmoe_official_checkpoint_to_rsmoe(tmp_path, capsys):
    from rsmoe.engine.checkpoints import load_checkpoint, read_checkpoint

    state = official_full_state()
    ckpt = {
        "meta": {"iter": 78760, "cfg": AUTHORS_CFG,
                 "dataset_meta": {"classes": ("road", "water", "forest"),
                                  "palette": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}},
        "state_dict": state,
        "message_hub": LoggingState(),  # needs a placeholder under weights_only
    }
    src = tmp_path / "iter_78760.pth"
    torch.save(ckpt, src)
    with pytest.raises(Exception):
        torch.load(src, weights_only=True)  # the plain weights-only load refuses it …
    assert isinstance(read_torch_file(src)["message_hub"], object)  # … the placeholder load does not

    config = tiny_config_yaml(tmp_path / "tiny.yaml")
    out = tmp_path / "imported.safetensors"
    args = _convert_args("spectralmoe-official", str(src), str(out), "--config", str(config))
    assert run_convert_from_args(args) == 0
    assert str(out) in capsys.readouterr().out

    tensors, meta = read_checkpoint(out)
    assert meta.class_names == ["road", "water", "forest"] and meta.palette[1] == [4, 5, 6]
    assert meta.mean == [110.714, 85.357, 88.594] and meta.wavelengths == [0.665, 0.56, 0.49]
    assert meta.step == 78760
    model, _ = load_checkpoint(out)
    a = model.adapter
    torch.testing.assert_close(a.experts.experts_a[2, 1], state["backbone.depthmoe.experts_a.2.1"])
    torch.testing.assert_close(a.w_gate[1, 1], state["backbone.depthmoe.w_gate.1.1"])
    torch.testing.assert_close(a.alpha, state["backbone.depthmoe.scale"])
    torch.testing.assert_close(model.head.class_embed.weight, state["decode_head.cls_embed.weight"])
    torch.testing.assert_close(model.head.layers[1].norm3.bias,
                               state["decode_head.transformer_decoder.layers.1.norms.2.bias"])
    with torch.no_grad():  # the head's own query positions = what the query link feeds it
        torch.testing.assert_close(model.head.query_pos.weight, a.query_embeddings())
        scores = model(torch.randn(1, 3, 64, 64), torch.tensor([0.665, 0.56, 0.49]))
    assert scores.shape == (1, 3, 64, 64)

    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        raw_meta = f.metadata()
    assert raw_meta["import_format"] == "spectralmoe-official"
    assert json.loads(raw_meta["import_unknown"]) == []
    assert any("query_pos" in n for n in json.loads(raw_meta["import_notes"]))


def test_spectralmoe_official_unknowns_and_errors(tmp_path, capsys):
    state = official_full_state()
    src = tmp_path / "bare.pth"
    torch.save(state, src)  # a bare state dict: no classes, no wavelengths, no normalisation
    config = tiny_config_yaml(tmp_path / "tiny.yaml")
    out = tmp_path / "o.safetensors"
    with pytest.raises(ValueError, match="wavelengths unknown"):
        run_convert_from_args(_convert_args("spectralmoe-official", str(src), str(out), "--config", str(config)))
    assert run_convert_from_args(_convert_args("spectralmoe-official", str(src), str(out), "--config", str(config),
                                               "--sensor", "RGB")) == 0
    err = capsys.readouterr().err
    assert "unknown: class names" in err and "unknown: normalisation" in err and "unknown: gating" in err
    with pytest.raises(ValueError, match="already exists"):
        run_convert_from_args(_convert_args("spectralmoe-official", str(src), str(out), "--config", str(config),
                                            "--sensor", "RGB"))
    # a config whose rank disagrees: one line naming the key and both shapes
    bad = tiny_config_yaml(tmp_path / "bad.yaml", rank=R + 2)
    with pytest.raises(ValueError) as info:
        run_convert_from_args(_convert_args("spectralmoe-official", str(src), str(tmp_path / "x.safetensors"),
                                            "--config", str(bad), "--sensor", "RGB"))
    msg = str(info.value)
    assert "\n" not in msg and "backbone.depthmoe.experts_a" in msg
    assert f"({L + 1}, {E}, {M}, {R})" in msg and f"({L + 1}, {E}, {M}, {R + 2})" in msg
    with pytest.raises(CheckpointError, match="nope.pth"):
        run_convert_from_args(_convert_args("spectralmoe-official", str(tmp_path / "nope.pth"),
                                            str(tmp_path / "fresh.safetensors"), "--config", str(config)))


AUTHORS_CFG_4BAND = """
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[110.714, 85.357, 88.594, 82.444],
                           std=[72.38, 65.591, 63.937, 63.005], bgr_to_rgb=False),
    backbone=dict(type='DepthMoEDinoVisionTransformerV3', in_chans=4{wave_list},
                  depthmoe_config=dict(type='DepthMoE', num_experts=3, top_k=1, token_length=5, gating='laplace')),
    decode_head=dict(type='DepthMoEMask2FormerHead', num_classes=3))
"""  # the authors' GID / Five-Billion-Pixels normalisation, in their NIR, R, G, B input order


def _official_4band(tmp_path, wave_list: bool) -> Path:
    cfg = AUTHORS_CFG_4BAND.format(wave_list=", wave_list=[0.83, 0.665, 0.56, 0.49]" if wave_list else "")
    src = tmp_path / f"fbp_{'dofa' if wave_list else 'dinov3'}.pth"
    torch.save({"meta": {"iter": 5, "cfg": cfg}, "state_dict": official_full_state()}, src)
    return src


@pytest.mark.parametrize("how", ["wave_list", "official-wavelengths"])
def test_official_statistics_follow_the_sensor_band_order(tmp_path, capsys, how):
    """GF-2 in rsmoe is B, G, R, NIR; the authors' mean/std are NIR, R, G, B: they must be reordered."""
    from rsmoe.engine.checkpoints import read_checkpoint

    src = _official_4band(tmp_path, wave_list=how == "wave_list")
    out = tmp_path / "gf2.safetensors"
    extra = ["--official-wavelengths", "0.83", "0.665", "0.56", "0.49"] if how == "official-wavelengths" else []
    argv = ["spectralmoe-official", str(src), str(out), "--config", str(tiny_config_yaml(tmp_path / "t.yaml")),
            "--sensor", "GF-2", *extra]
    assert run_convert_from_args(_convert_args(*argv)) == 0
    _, meta = read_checkpoint(out)
    assert meta.band_names == ["blue", "green", "red", "nir"] and meta.sensor == "GF-2"
    assert meta.mean == [82.444, 88.594, 85.357, 110.714]  # B, G, R, NIR
    assert meta.std == [63.005, 63.937, 65.591, 72.38]
    assert "reordered from their band order" in capsys.readouterr().err
    # their cyclic kernel rule in their order NIR,R,G,B (channels 0,1,2,0) seen from rsmoe's B,G,R,NIR
    if meta.config.backbone.kind != "dofa":
        assert meta.config.backbone.band_channels == [0, 2, 1, 0]


def test_official_statistics_refused_when_their_order_is_unknown_or_unmatched(tmp_path):
    config = str(tiny_config_yaml(tmp_path / "t.yaml"))
    src = _official_4band(tmp_path, wave_list=False)  # a DINOv3 model: nothing records the band order
    with pytest.raises(ConfigError, match=r"which the checkpoint does not record: pass --official-wavelengths") as e:
        run_convert_from_args(_convert_args("spectralmoe-official", str(src), str(tmp_path / "a.safetensors"),
                                            "--config", config, "--sensor", "GF-2"))
    assert "\n" not in str(e.value)
    src = _official_4band(tmp_path, wave_list=True)
    with pytest.raises(ConfigError, match=r"cannot pair the authors' bands \(0.83, 0.665, 0.56, 0.49 µm\)"):
        run_convert_from_args(_convert_args("spectralmoe-official", str(src), str(tmp_path / "b.safetensors"),
                                            "--config", config, "--wavelengths", "0.45", "0.5", "0.55", "0.6"))
    # the user's own statistics are taken as given, in the input order
    assert run_convert_from_args(_convert_args(
        "spectralmoe-official", str(src), str(tmp_path / "c.safetensors"), "--config", config, "--sensor", "GF-2",
        "--mean", "1", "2", "3", "4", "--std", "5", "6", "7", "8")) == 0


def test_match_band_order():
    from rsmoe.convert import match_band_order

    nir_rgb, gf2 = [0.83, 0.665, 0.56, 0.49], [0.485, 0.555, 0.66, 0.83]
    assert match_band_order(nir_rgb, gf2) == [3, 2, 1, 0]
    assert match_band_order(gf2, gf2) == [0, 1, 2, 3]
    assert match_band_order(nir_rgb, [0.49, 0.56, 0.665, 1.61]) is None  # SWIR is not NIR
    assert match_band_order(nir_rgb, [0.45, 0.5, 0.55, 0.6]) is None  # several bands claim the same one
    assert match_band_order(nir_rgb, [0.665, 0.56, 0.49]) is None  # counts differ


def test_state_dict_conversion_covers_the_segmentor_exactly(tmp_path):
    from rsmoe.config import load_config
    from rsmoe.params import meta_model

    imported = convert_spectralmoe_official_state_dict(official_full_state())
    model = meta_model(load_config(tiny_config_yaml(tmp_path / "t.yaml")), 3, [0.665, 0.56, 0.49])
    expected = model.trainable_state_dict()
    assert set(imported.tensors) == set(expected)  # zero missing, zero unexpected
    for key, value in expected.items():
        assert imported.tensors[key].shape == value.shape, key
    assert imported.ignored == ["backbone.depth_anything.pretrained.cls_token"]


def test_mmengine_config_text_is_parsed_without_executing():
    cfg = parse_mmengine_config_text(AUTHORS_CFG + "\nboom = __import__('os').system('exit 1')\n")
    assert cfg["model"]["backbone"]["depthmoe_config"]["gating"] == "laplace"
    assert cfg["model"]["data_preprocessor"]["std"][-1] == -1.0
    assert cfg["boom"] is None and cfg["crop_size"] == [512, 512]


# ================================================================================================================
# DINOv3 original → transformers directory
# ================================================================================================================
def dinov3_original_state(dim=32, depth=2, registers=4, inter=64, patch=16, seed=0) -> dict:
    """Meta's DINOv3 naming: cls_token 1×1×D, storage_tokens 1×R×D, mask_token 1×D, patch_embed.proj, rope
    periods, blocks.N.{norm1, attn.qkv (3D×D, bias, bias_mask), attn.proj, ls1.gamma, norm2, mlp.fc1/fc2,
    ls2.gamma}, norm."""
    g = _g(seed)
    t = lambda *s: torch.randn(*s, generator=g) * 0.1  # noqa: E731
    sd = {"cls_token": t(1, 1, dim), "storage_tokens": t(1, registers, dim), "mask_token": t(1, dim),
          "patch_embed.proj.weight": t(dim, 3, patch, patch), "patch_embed.proj.bias": t(dim),
          "rope_embed.periods": torch.arange(1.0, dim // 8 + 1), "norm.weight": 1 + t(dim), "norm.bias": t(dim)}
    for i in range(depth):
        b = f"blocks.{i}"
        sd.update({f"{b}.norm1.weight": 1 + t(dim), f"{b}.norm1.bias": t(dim),
                   f"{b}.attn.qkv.weight": t(3 * dim, dim), f"{b}.attn.qkv.bias": t(3 * dim),
                   f"{b}.attn.qkv.bias_mask": torch.cat([torch.ones(dim), torch.zeros(dim), torch.ones(dim)]),
                   f"{b}.attn.proj.weight": t(dim, dim), f"{b}.attn.proj.bias": t(dim),
                   f"{b}.ls1.gamma": t(dim), f"{b}.norm2.weight": 1 + t(dim), f"{b}.norm2.bias": t(dim),
                   f"{b}.mlp.fc1.weight": t(inter, dim), f"{b}.mlp.fc1.bias": t(inter),
                   f"{b}.mlp.fc2.weight": t(dim, inter), f"{b}.mlp.fc2.bias": t(dim), f"{b}.ls2.gamma": t(dim)})
    return sd


def test_dinov3_original_to_directory(tmp_path):
    from rsmoe.models.backbones.dinov3 import DINOv3Backbone

    sd = dinov3_original_state()
    src = tmp_path / "dinov3_tiny.pth"
    torch.save(sd, src)
    out = convert_dinov3_original(src, tmp_path / "dinov3_dir", arch='{"num_attention_heads": 2}')
    bb = DINOv3Backbone.from_pretrained(out)
    cfg = bb.model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, cfg.num_register_tokens,
            cfg.num_attention_heads, cfg.patch_size) == (32, 2, 64, 4, 2, 16)
    attn = bb.model.model.layer[1].attention
    torch.testing.assert_close(attn.q_proj.weight, sd["blocks.1.attn.qkv.weight"][:32])
    torch.testing.assert_close(attn.v_proj.bias, sd["blocks.1.attn.qkv.bias"][64:])
    tokens, ctx = bb.embed(torch.randn(1, 3, 32, 32))
    assert bb.block(1, bb.block(0, tokens, ctx), ctx).shape == (1, 1 + 4 + 4, 32)


def test_dinov3_training_checkpoint_converts_and_loads_alike(tmp_path):
    """A DINO training checkpoint (teacher → backbone.* beside the projection heads, logging objects pickled
    beside it) is accepted by `rsmoe convert dinov3-original` and by backbone.pretrained, with the same weights."""
    from rsmoe.models.backbones import build_backbone
    from rsmoe.models.backbones.dinov3 import DINOv3Backbone

    sd = dinov3_original_state(seed=3)
    teacher = {f"backbone.{k}": v for k, v in sd.items()}
    teacher.update({"dino_head.mlp.0.weight": torch.zeros(8, 32), "ibot_head.mlp.0.weight": torch.zeros(8, 32)})
    src = tmp_path / "training_checkpoint.pth"
    torch.save({"teacher": teacher, "iteration": 1249, "logs": LoggingState()}, src)
    with pytest.raises(Exception):
        torch.load(src, weights_only=True)  # needs the placeholders
    cfg = {"hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64, "num_attention_heads": 2,
           "patch_size": 16, "num_register_tokens": 4}
    direct = build_backbone("dinov3", pretrained=str(src), config=cfg)
    converted = DINOv3Backbone.from_pretrained(convert_dinov3_original(src, tmp_path / "dir", arch=json.dumps(cfg)))
    mine, theirs = direct.model.state_dict(), converted.model.state_dict()
    assert set(mine) == set(theirs)
    for key in mine:
        assert torch.equal(mine[key], theirs[key]), key
    torch.testing.assert_close(mine["model.layer.1.attention.q_proj.weight"], sd["blocks.1.attn.qkv.weight"][:32])
    bad = tmp_path / "bad.pth"
    torch.save({"teacher": {**teacher, "backbone.blocks.0.surprise": torch.zeros(1)}}, bad)
    for load in (lambda: build_backbone("dinov3", pretrained=str(bad), config=cfg),
                 lambda: convert_dinov3_original(bad, tmp_path / "bad_dir", arch=json.dumps(cfg))):
        with pytest.raises(CheckpointError, match=r"bad\.pth.*blocks\.0\.surprise"):
            load()


def test_dinov3_config_inference_at_vitl_shapes():
    meta = lambda *s: torch.empty(*s, device="meta")  # noqa: E731
    sd = {"cls_token": meta(1, 1, 1024), "storage_tokens": meta(1, 4, 1024),
          "patch_embed.proj.weight": meta(1024, 3, 16, 16), "blocks.23.norm1.weight": meta(1024),
          "blocks.0.mlp.fc1.weight": meta(4096, 1024)}
    cfg = dinov3_config_from_state(sd)
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (24, 16, 4096)
    assert cfg.num_register_tokens == 4 and not cfg.use_gated_mlp


# ================================================================================================================
# Depth Anything V2 / Prompt Depth Anything originals
# ================================================================================================================
def depth_anything_original_state(dim=32, depth=4, patch=14, grid=4, features=16, out_ch=(8, 16, 32, 32),
                                  prompt=False, seed=0) -> dict:
    """Depth Anything naming: the DINOv2 encoder under ``pretrained.`` (cls_token, pos_embed 1×(1+g²)×D,
    mask_token 1×D, patch_embed.proj, blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1/fc2,
    ls2.gamma}, norm) and the DPT head under ``depth_head.``: projects[i] 1×1 conv D→out_i; resize_layers 0/1
    ConvTranspose (×4, ×2), 2 Identity, 3 a stride-2 3×3 conv; scratch.layer{k}_rn 3×3 conv without bias →
    features; scratch.refinenet{k}.{out_conv 1×1, resConfUnit1/2.conv1/conv2 3×3}; output_conv1 3×3 →
    features/2; output_conv2 = (3×3 → 32, ReLU, 1×1 → 1). Prompt DA adds refinenet{k}.resConfUnit_depth =
    (3×3 1→f, ReLU, 3×3, ReLU, 3×3)."""
    g = _g(seed)
    t = lambda *s: torch.randn(*s, generator=g) * 0.1  # noqa: E731
    p = "pretrained."
    sd = {p + "cls_token": t(1, 1, dim), p + "pos_embed": t(1, 1 + grid * grid, dim), p + "mask_token": t(1, dim),
          p + "patch_embed.proj.weight": t(dim, 3, patch, patch), p + "patch_embed.proj.bias": t(dim),
          p + "norm.weight": 1 + t(dim), p + "norm.bias": t(dim)}
    for i in range(depth):
        b = f"{p}blocks.{i}"
        sd.update({f"{b}.norm1.weight": 1 + t(dim), f"{b}.norm1.bias": t(dim),
                   f"{b}.attn.qkv.weight": t(3 * dim, dim), f"{b}.attn.qkv.bias": t(3 * dim),
                   f"{b}.attn.proj.weight": t(dim, dim), f"{b}.attn.proj.bias": t(dim),
                   f"{b}.ls1.gamma": t(dim), f"{b}.norm2.weight": 1 + t(dim), f"{b}.norm2.bias": t(dim),
                   f"{b}.mlp.fc1.weight": t(4 * dim, dim), f"{b}.mlp.fc1.bias": t(4 * dim),
                   f"{b}.mlp.fc2.weight": t(dim, 4 * dim), f"{b}.mlp.fc2.bias": t(dim),
                   f"{b}.ls2.gamma": t(dim)})
    h = "depth_head."
    for i, oc in enumerate(out_ch):
        sd[f"{h}projects.{i}.weight"], sd[f"{h}projects.{i}.bias"] = t(oc, dim, 1, 1), t(oc)
    for i, k in ((0, 4), (1, 2), (3, 3)):
        sd[f"{h}resize_layers.{i}.weight"], sd[f"{h}resize_layers.{i}.bias"] = t(out_ch[i], out_ch[i], k, k), t(
            out_ch[i])
    for k in range(1, 5):
        sd[f"{h}scratch.layer{k}_rn.weight"] = t(features, out_ch[k - 1], 3, 3)
        r = f"{h}scratch.refinenet{k}"
        sd[f"{r}.out_conv.weight"], sd[f"{r}.out_conv.bias"] = t(features, features, 1, 1), t(features)
        for u in (1, 2):
            for c in (1, 2):
                sd[f"{r}.resConfUnit{u}.conv{c}.weight"] = t(features, features, 3, 3)
                sd[f"{r}.resConfUnit{u}.conv{c}.bias"] = t(features)
        if prompt:
            for j, cin in ((0, 1), (2, features), (4, features)):
                sd[f"{r}.resConfUnit_depth.{j}.weight"] = t(features, cin, 3, 3)
                sd[f"{r}.resConfUnit_depth.{j}.bias"] = t(features)
    sd[f"{h}scratch.output_conv1.weight"] = t(features // 2, features, 3, 3)
    sd[f"{h}scratch.output_conv1.bias"] = t(features // 2)
    sd[f"{h}scratch.output_conv2.0.weight"], sd[f"{h}scratch.output_conv2.0.bias"] = t(32, features // 2, 3, 3), t(32)
    sd[f"{h}scratch.output_conv2.2.weight"], sd[f"{h}scratch.output_conv2.2.bias"] = t(1, 32, 1, 1), t(1)
    return sd


def dinov2_reference_tokens(sd: dict, image: torch.Tensor, heads: int, prefix="pretrained.") -> list[torch.Tensor]:
    """The original DINOv2 forward (pre-norm blocks with layer scale, LN eps 1e-6), patch tokens per block."""
    w = lambda k: sd[prefix + k]  # noqa: E731
    dim = w("cls_token").shape[-1]
    x = F.conv2d(image, w("patch_embed.proj.weight"), w("patch_embed.proj.bias"),
                 stride=w("patch_embed.proj.weight").shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([w("cls_token").expand(x.shape[0], -1, -1), x], 1) + w("pos_embed")
    out = []
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith(prefix + "blocks."))
    for i in range(depth):
        b = f"blocks.{i}."
        y = F.layer_norm(x, (dim,), w(b + "norm1.weight"), w(b + "norm1.bias"), eps=1e-6)
        q, k, v = (y @ w(b + "attn.qkv.weight").T + w(b + "attn.qkv.bias")).split(dim, -1)
        split = lambda z: z.reshape(z.shape[0], z.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
        a = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(dim // heads), -1) @ split(v)
        a = a.transpose(1, 2).reshape(x.shape) @ w(b + "attn.proj.weight").T + w(b + "attn.proj.bias")
        x = x + w(b + "ls1.gamma") * a
        y = F.layer_norm(x, (dim,), w(b + "norm2.weight"), w(b + "norm2.bias"), eps=1e-6)
        y = F.gelu(y @ w(b + "mlp.fc1.weight").T + w(b + "mlp.fc1.bias")) @ w(b + "mlp.fc2.weight").T
        x = x + w(b + "ls2.gamma") * (y + w(b + "mlp.fc2.bias"))
        out.append(x[:, 1:])
    return out


@pytest.mark.parametrize("prompt,encoder_only", [(False, False), (False, True), (True, False)])
def test_depth_anything_original_to_depth_encoder(tmp_path, prompt, encoder_only):
    from transformers import AutoConfig

    from rsmoe.models.backbones.depth import DepthEncoder

    sd = depth_anything_original_state(prompt=prompt)
    if prompt:  # Lightning .ckpt: the model under "state_dict" with a wrapper prefix
        src = tmp_path / "model.ckpt"
        torch.save({"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3}, src)
    else:
        src = tmp_path / "depth_anything_v2_tiny.pth"
        torch.save(sd, src)
    out = convert_depth_anything_original(src, tmp_path / "depth_dir", prompt=prompt, encoder_only=encoder_only)
    model_type = AutoConfig.from_pretrained(out, local_files_only=True).model_type
    assert model_type == ("dinov2" if encoder_only else "prompt_depth_anything" if prompt else "depth_anything")
    enc = DepthEncoder.from_pretrained(out, target_patch_size=14)
    image = torch.randn(1, 3, 56, 56, generator=_g(3))
    got = enc(image, None, (4, 4))
    want = dinov2_reference_tokens(sd, image, heads=1)  # width 32 → 32 // 64 → 1 head
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if not encoder_only:
        from transformers import DepthAnythingForDepthEstimation, PromptDepthAnythingForDepthEstimation

        cls = PromptDepthAnythingForDepthEstimation if prompt else DepthAnythingForDepthEstimation
        model = cls.from_pretrained(out, local_files_only=True)
        torch.testing.assert_close(model.neck.fusion_stage.layers[0].projection.weight,
                                   sd["depth_head.scratch.refinenet4.out_conv.weight"])
        with torch.no_grad():
            assert model(image).predicted_depth.shape[-2:] == (56, 56)


def test_depth_anything_errors(tmp_path):
    sd = depth_anything_original_state()
    sd["pretrained.blocks.0.attn.qkv.weight"] = torch.zeros(96, 31)
    src = tmp_path / "bad.pth"
    torch.save(sd, src)
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.qkv\.weight.*q_proj.*\(32, 31\).*\(32, 32\)"):
        convert_depth_anything_original(src, tmp_path / "x")
    with pytest.raises(CheckpointError, match="missing.pth"):
        convert_depth_anything_original(tmp_path / "missing.pth", tmp_path / "y")


# ================================================================================================================
# DOFA (authors' file with extras, wrapped) → .safetensors with the kernel layout in its metadata
# ================================================================================================================
@pytest.mark.parametrize("layout", [None, "legacy"])
def test_dofa_original_normalised_and_loadable(tmp_path, layout):
    from safetensors import safe_open

    from rsmoe.models.backbones.dofa import DOFABackbone
    from rsmoe.models.backbones.dofa_weights import file_sha256

    size = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 16, "pretrain_grid": 2}
    ref = DOFABackbone.from_config(size, seed=4)
    state = {f"module.{k}": v.clone() for k, v in ref.state_dict().items()}
    state.update({"module.mask_token": torch.zeros(1, 1, 32), "module.norm.weight": torch.ones(32),
                  "module.projector.0.weight": torch.zeros(4, 32), "module.head.weight": torch.zeros(5, 32)})
    src = tmp_path / "DOFA_tiny_e100.pth"
    torch.save({"model": state, "epoch": 99}, src)
    argv = ["dofa-original", str(src), str(tmp_path / "dofa_tiny.safetensors"), "--dofa-size", "base"]
    with pytest.raises(CheckpointError, match=r"shape mismatch for DOFA-base: cls_token"), \
            pytest.warns(UserWarning, match="not a known post-fix"):
        run_convert_from_args(_convert_args(*argv))
    with pytest.warns(UserWarning, match="not a known post-fix DOFA release") if layout is None else _no_warning():
        out = convert_dofa(src, tmp_path / "dofa_tiny.safetensors", size=size, kernel_layout=layout)
    with safe_open(str(out), framework="pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    assert keys == set(ref.state_dict())  # extras and the module./model wrappers gone
    assert meta["kernel_layout"] == (layout or "band_major") and meta["source_sha256"] == file_sha256(src)
    with pytest.raises(ConfigError, match=r"\.safetensors"):
        convert_dofa(src, tmp_path / "dofa_tiny.pth", size=size)
    loaded = DOFABackbone.from_checkpoint(out, size=size) if layout else _quiet_load(out, size)
    assert loaded.patch_embed.kernel_layout == (layout or "band_major")
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)


def _no_warning():
    import contextlib
    import warnings

    @contextlib.contextmanager
    def ctx():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield

    return ctx()


def _quiet_load(path, size):
    from rsmoe.models.backbones.dofa import DOFABackbone

    with pytest.warns(UserWarning, match="not a known post-fix"):
        return DOFABackbone.from_checkpoint(path, size=size)


# ================================================================================================================
# the ablation grids and variant configs
# ================================================================================================================
def test_ablation_grids_expand_and_validate():
    from rsmoe.sweep import load_grid, point_config

    root = Path(__file__).resolve().parents[1] / "configs" / "ablations"
    sizes = {"spectralmoe_gating.yaml": 8, "spectralmoe_topk.yaml": 5, "spectralmoe_rank.yaml": 5,
             "spectralmoe_tokens.yaml": 12}
    for name, n in sizes.items():
        _, points = load_grid(root / name)
        assert len(points) == n, name
        configs = [point_config(p) for p in points]
        assert len({c.output_dir for c in configs}) == n
    _, points = load_grid(root / "spectralmoe_gating.yaml")
    cfg = point_config(next(p for p in points if p.name == "spectralmoe_dofa_vitl/gating=laplace,distance_p=1.0"))
    assert cfg.backbone.kind == "dofa" and cfg.adapter.gating == "laplace" and cfg.adapter.distance_p == 1.0


def test_variant_configs_load():
    from rsmoe.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs" / "models"
    expect = {
        "spectralmoe_dinov3_vitl": ("dinov3", "spectralmoe", True),
        "spectralmoe_dofa_vitl": ("dofa", "spectralmoe", True),
        "frozen_dinov3_vitl_mask2former": ("dinov3", "none", False),
        "frozen_dofa_vitl_mask2former": ("dofa", "none", False),
        "rein_dinov3_vitl_mask2former": ("dinov3", "rein", False),
        "rein_dofa_vitl_mask2former": ("dofa", "rein", False),
    }
    for name, (kind, adapter, depth) in expect.items():
        cfg = load_config(root / f"{name}.yaml")
        assert (cfg.backbone.kind, cfg.adapter.type, cfg.depth.enabled, cfg.head.type) == (
            kind, adapter, depth, "mask2former"), name
    assert load_config(root / "spectralmoe_dinov3_vitl.yaml").adapter.gating == "laplace"
