"""The Segmentor wiring: prefix tokens, taps, frozen parts, which parameters train, the three family members."""
import pytest
import torch

from conftest import TINY_RANDOM
from rsmoe.config import load_config
from rsmoe.demo import demo_config_path
from rsmoe.models.segmentor import build_segmentor

WAVELENGTHS = [0.485, 0.555, 0.66, 0.83]  # B, G, R, NIR


def tiny(adapter: str, depth: bool = False, **extra):
    overrides = [*TINY_RANDOM, f"adapter.type={adapter}", f"depth.enabled={str(depth).lower()}"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return build_segmentor(load_config(demo_config_path(), overrides), num_classes=5, wavelengths=WAVELENGTHS)


def randomise_trainable(model):
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.2)


def test_prefix_tokens_reattached_unchanged_and_patches_refined():
    model = tiny("spectralmoe", depth=True)
    randomise_trainable(model)
    inputs, outputs = [], []
    real_block = model.backbone.block

    def recording_block(i, tokens, ctx):
        inputs.append(tokens.clone())
        out = real_block(i, tokens, ctx)
        outputs.append(out.clone())
        return out

    model.backbone.block = recording_block
    model.eval()
    with torch.no_grad():
        model.features(torch.randn(2, 4, 32, 32), torch.tensor(WAVELENGTHS))
    p = model.backbone.num_prefix_tokens
    assert p == 5  # CLS + 4 registers
    for i in range(len(outputs) - 1):
        torch.testing.assert_close(inputs[i + 1][:, :p], outputs[i][:, :p], rtol=0, atol=0)
        assert not torch.allclose(inputs[i + 1][:, p:], outputs[i][:, p:])


def test_taps_become_a_four_level_pyramid():
    model = tiny("none")
    feats, loss = model.features(torch.randn(1, 4, 64, 64), torch.tensor(WAVELENGTHS))
    grid = 64 // model.backbone.patch_size
    assert [f.shape[-1] for f in feats] == [grid * 4, grid * 2, grid, grid // 2]
    assert all(f.shape[1] == model.backbone.embed_dim for f in feats)
    assert loss.item() == 0.0


@pytest.mark.parametrize("adapter,depth", [("none", False), ("rein", False), ("spectralmoe", True)])
def test_only_plugin_and_head_train(adapter, depth):
    model = tiny(adapter, depth=depth)
    model.train()
    assert not model.backbone.training
    assert model.depth is None or not model.depth.training
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == ({"head"} if adapter == "none" else {"head", "adapter"})
    mask = torch.randint(0, 5, (2, 32, 32))
    terms = model.loss({"image": torch.randn(2, 4, 32, 32), "wavelengths": torch.tensor(WAVELENGTHS), "mask": mask})
    terms["loss"].backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith(("backbone", "depth")))
    assert model.head.classifier.weight.grad.abs().sum() > 0
    if adapter != "none":
        assert model.adapter.alpha.grad is not None
        assert all(not k.startswith(("backbone.", "depth.")) for k in model.trainable_state_dict())
    if adapter == "spectralmoe":
        assert model.adapter.w_gate.grad.abs().sum() > 0  # routers learn through the load loss
        assert terms["loss_router"].item() >= 0
        torch.testing.assert_close(terms["loss"].detach(), terms["loss_task"] + terms["loss_router"])


def test_no_weight_decay_groups():
    model = tiny("spectralmoe", depth=True)
    names = model.no_weight_decay_names()
    assert {"adapter.experts.experts_a", "adapter.experts.experts_b", "adapter.w_gate", "adapter.w_noise",
            "adapter.alpha"} <= names
    assert "adapter.t2f.weight" not in names and "head.classifier.weight" not in names
    assert any(n.startswith("head.smooth") and "1.weight" in n for n in names)  # GroupNorm weights


def test_spectralmoe_needs_matching_depth_model():
    with pytest.raises(ValueError, match="depth model"):
        tiny("spectralmoe", depth=True, **{"depth.config.hidden_size": 32})


def test_dofa_backbone_takes_any_band_count_by_wavelength():
    cfg_over = {"backbone.kind": "dofa",
                "backbone.config": "{_replace_: true, embed_dim: 32, depth: 4, num_heads: 4, patch_size: 8, pretrain_grid: 4}"}
    model = tiny("spectralmoe", depth=False, **cfg_over)
    assert model.backbone.num_layers == 4 and model.backbone.num_prefix_tokens == 1
    four = model(torch.randn(1, 4, 32, 32), torch.tensor(WAVELENGTHS))
    ohs = torch.linspace(0.466, 0.940, 32)
    many = model(torch.randn(1, 32, 32, 32), ohs)  # the same trained model, 32 bands
    assert four.shape == (1, 5, 32, 32) and many.shape == (1, 5, 32, 32)


def test_taps_must_give_four_levels():
    with pytest.raises(ValueError, match="4 blocks"):
        tiny("none", **{"backbone.taps": "[1, 2, 3]"})
