"""Memory levers of the training step: activation checkpointing of block + plug-in, the depth encoder under
inference mode, bfloat16 autocast on CPU. Each must leave values and gradients as the plain path has them."""
import pytest
import torch

from rsmoe.config import load_config
from rsmoe.demo import demo_config_path
from rsmoe.errors import ConfigError
from rsmoe.models.segmentor import build_segmentor

WAVELENGTHS = [0.485, 0.555, 0.66, 0.83]
VARIANTS = {
    "rein": ["adapter.type=rein", "depth.enabled=false"],
    "official": ["adapter.type=spectralmoe", "depth.enabled=true", "adapter.fusion=official", "adapter.gating=laplace"],
    "cross_attention": ["adapter.type=spectralmoe", "depth.enabled=true", "adapter.fusion=cross_attention"],
}


def tiny(variant: str, *extra: str):
    cfg = load_config(demo_config_path(), VARIANTS[variant] + list(extra))
    model = build_segmentor(cfg, num_classes=5, wavelengths=WAVELENGTHS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        with torch.no_grad():  # non-zero experts and routers, so every path of the plug-in carries gradient
            for p in model.parameters():
                if p.requires_grad:
                    p.copy_(torch.randn_like(p) * 0.2)
    return model.train()


def batch():
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randn(2, 4, 32, 32, generator=g), "wavelengths": torch.tensor(WAVELENGTHS),
            "mask": torch.randint(0, 5, (2, 32, 32), generator=g)}


def grid(model):
    return (32 // model.backbone.patch_size,) * 2


def loss_and_grads(model, checkpointing: bool):
    model.activation_checkpointing = checkpointing
    model.zero_grad(set_to_none=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)  # the routers' training noise
        terms = model.loss(batch())
        terms["loss"].backward()
    return terms, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def count_block_calls(model):
    calls = []
    real = model.backbone.block

    def counting(i, tokens, ctx):
        calls.append(i)
        return real(i, tokens, ctx)

    model.backbone.block = counting
    return calls


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_checkpointed_blocks_give_the_plain_gradients(variant):
    model = tiny(variant)
    calls = count_block_calls(model)
    plain, plain_grads = loss_and_grads(model, checkpointing=False)
    layers = model.backbone.num_layers
    assert len(calls) == layers
    calls.clear()
    ckpt, ckpt_grads = loss_and_grads(model, checkpointing=True)
    assert len(calls) == 2 * layers, "each block must run again in the backward pass"
    for key in ("loss", "loss_task", "loss_router"):
        torch.testing.assert_close(ckpt[key], plain[key], rtol=0, atol=0)
    assert plain_grads.keys() == ckpt_grads.keys()
    assert any(n.startswith("adapter.experts") for n in plain_grads)
    if variant != "rein":
        assert plain_grads["adapter.w_gate"].abs().sum() > 0  # reached only through the router loss
    for name, g in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], g, rtol=1e-6, atol=1e-7, msg=name)


def test_checkpointing_recomputes_nothing_without_grad():
    model = tiny("official", "train.activation_checkpointing=true").eval()
    assert model.activation_checkpointing
    calls = count_block_calls(model)
    with torch.no_grad():
        model.predict(batch())
    assert len(calls) == model.backbone.num_layers


def test_activation_checkpointing_is_a_segmentor_option_only():
    with pytest.raises(ConfigError, match="train.activation_checkpointing"):
        load_config(demo_config_path(), ["model=mpers", "train.activation_checkpointing=true"])


# --------------------------------------------------------------------------------------------- the depth branch
def reference_depth_tokens(depth, image, wavelengths):
    """What the encoder computed before inference mode: its blocks under no_grad, patch tokens of every block."""
    with torch.no_grad():
        tokens = depth.embeddings(depth.rgb_input(image, wavelengths))
        out = []
        for layer in depth.layers:
            tokens = layer(tokens)
            out.append(tokens[:, depth.num_prefix_tokens:])
    return out


def test_depth_tokens_under_inference_mode_are_ordinary_tensors_with_the_same_values():
    model = tiny("official")
    b = batch()
    tokens = model.depth(b["image"], b["wavelengths"], grid(model))
    ref = reference_depth_tokens(model.depth, b["image"], b["wavelengths"])
    assert len(tokens) == len(ref) == model.depth.num_layers
    for t, r in zip(tokens, ref):
        assert not t.is_inference() and not t.requires_grad and t.is_contiguous()
        torch.testing.assert_close(t, r, rtol=0, atol=0)
    with torch.inference_mode():  # a caller in inference mode gets the block outputs as they are (no copy)
        assert all(t.is_inference() for t in model.depth(b["image"], b["wavelengths"], grid(model)))


def test_gradients_unchanged_by_the_inference_mode_depth_branch():
    model = tiny("official")
    _, grads = loss_and_grads(model, checkpointing=False)
    model.depth.forward = lambda image, wavelengths, grid: reference_depth_tokens(model.depth, image, wavelengths)
    _, ref_grads = loss_and_grads(model, checkpointing=False)
    assert grads.keys() == ref_grads.keys()
    for name, g in ref_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=0, atol=0, msg=name)


def test_depth_branch_runs_with_autograd_only_for_an_unfrozen_parameter():
    model = tiny("official")
    image = batch()["image"].requires_grad_(True)
    assert not model.depth(image, torch.tensor(WAVELENGTHS), grid(model))[-1].requires_grad  # frozen: never
    weight = model.depth.layers[-1].mlp.fc2.weight.requires_grad_(True)  # someone fine-tunes the last block
    tokens = model.depth(image, torch.tensor(WAVELENGTHS), grid(model))
    (g,) = torch.autograd.grad(tokens[-1].sum(), weight)
    assert g.abs().sum() > 0


# ------------------------------------------------------------------------------------------- bfloat16 autocast
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("checkpointing", [False, True])
def test_train_step_under_cpu_bfloat16_autocast(variant, checkpointing):
    """What ``train.precision: bf16-mixed`` does on a CPU: the whole loss under ``torch.autocast('cpu',
    torch.bfloat16)``, float32 gradients on the float32 parameters, near the float32 loss."""
    model = tiny(variant)
    model.activation_checkpointing = checkpointing
    ref, _ = loss_and_grads(model, checkpointing=False)
    model.zero_grad(set_to_none=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            terms = model.loss(batch())
        terms["loss"].backward()
    assert terms["loss"].dtype == torch.float32
    torch.testing.assert_close(terms["loss_task"], ref["loss_task"], rtol=0.05, atol=0.05)
    trained = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in trained if p.grad is not None)
    assert model.adapter.alpha.grad is not None


def test_lightning_trains_in_bf16_mixed_with_checkpointing_on_cpu(bench, tmp_path, monkeypatch):
    """``train.precision: bf16-mixed`` and ``train.activation_checkpointing: true`` through ``rsmoe train`` on a
    CPU: every training step runs under CPU bfloat16 autocast with the switch on the model."""
    from rsmoe.engine.runner import train
    from rsmoe.models.segmentor import Segmentor

    seen = []
    real_loss = Segmentor.loss

    def recording_loss(self, batch):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), self.activation_checkpointing))
        return real_loss(self, batch)

    monkeypatch.setattr(Segmentor, "loss", recording_loss)
    cfg = load_config(demo_config_path(), [f"data.root={bench}", f"output_dir={tmp_path}", "train.iterations=2",
                                           "data.batch_size=2", "depth.enabled=true", "train.accelerator=cpu",
                                           "train.precision=bf16-mixed", "train.activation_checkpointing=true"])
    metrics = train(cfg, progress=False)
    assert metrics["step"] == 2
    assert seen == [(True, torch.bfloat16, True)] * 2
