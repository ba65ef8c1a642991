"""Train → save → load → eval on the synthetic benchmark, checkpoint contents, resume, and the CLI commands."""
import json

import pytest
import torch
from safetensors import safe_open

from rsmoe.cli import main
from rsmoe.config import load_config
from rsmoe.demo import demo_config_path
from rsmoe.engine.checkpoints import load_checkpoint
from rsmoe.engine.runner import evaluate, evaluate_checkpoint, train
from rsmoe.models.segmentor import build_segmentor

pytestmark = pytest.mark.usefixtures("one_thread")


def run_cfg(bench, out, *extra):
    return load_config(demo_config_path(), [f"data.root={bench}", f"output_dir={out}", "train.iterations=4",
                                            "data.batch_size=2", "depth.enabled=true", *extra])


def test_train_save_load_eval_round_trip(bench, tmp_path):
    cfg = run_cfg(bench, tmp_path / "run")
    metrics = train(cfg, progress=False)
    assert metrics["step"] == 4
    assert set(metrics["domains"]) == {"GF-2", "GF-1", "PlanetScope", "Sentinel-2"}
    ckpt = tmp_path / "run" / "model.safetensors"
    with safe_open(str(ckpt), framework="pt") as f:
        keys = list(f.keys())
    assert keys and not any(k.startswith(("backbone.", "depth.")) for k in keys)
    assert any(k.startswith("adapter.") for k in keys) and any(k.startswith("head.") for k in keys)

    again = evaluate_checkpoint(ckpt, progress=False)
    for domain, m in metrics["domains"].items():
        assert again["domains"][domain]["confusion"] == m["confusion"]
        assert again["domains"][domain]["mIoU"] == m["mIoU"]
    assert again["target_mean"] == metrics["target_mean"]

    # the loaded model really carries the trained tensors: the same model untrained evaluates differently
    _, meta = load_checkpoint(ckpt)
    untrained = build_segmentor(meta.config, len(meta.class_names), meta.wavelengths)
    other = evaluate(meta.config, untrained, meta.class_names, progress=False)
    assert any(other["domains"][d]["confusion"] != m["confusion"] for d, m in metrics["domains"].items())


def test_cli_train_eval_params(bench, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train", "--config", str(demo_config_path()), "--set", f"data.root={bench}",
                 "--set", f"output_dir={out}", "--set", "train.iterations=2", "--set", "data.batch_size=2",
                 "--set", "adapter.type=rein", "--no-progress"]) == 0
    assert main(["eval", "--checkpoint", str(out / "model.safetensors"), "--out", str(tmp_path / "m.json"),
                 "--no-progress"]) == 0
    saved = json.loads((tmp_path / "m.json").read_text())
    assert set(saved["domains"]) == {"GF-2", "GF-1", "PlanetScope", "Sentinel-2"}
    capsys.readouterr()
    assert main(["params", "--config", str(demo_config_path()), "--set", "adapter.type=none", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["total_excluding_head"] == 0 and counts["head"] > 0


@pytest.mark.parametrize("rank,total", [(4, 3795713), (8, 4443137), (16, 5737985), (32, 8327681), (64, 13507073)])
def test_params_vitl_table7(rank, total, capsys):
    assert main(["params", "--config", "configs/models/spectralmoe_dinov3_vitl.yaml", "--set",
                 f"adapter.rank={rank}", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["total_excluding_head"] == total


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.yaml" in err


def test_two_process_ddp_training_on_cpu(bench, tmp_path):
    """`train.devices: 2` trains with Lightning DDP (two CPU processes); the first one evaluates exactly once."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "rsmoe", "train", "--config", str(demo_config_path()), "--no-progress",
           "--set", f"data.root={bench}", "--set", f"output_dir={out}", "--set", "train.iterations=3",
           "--set", "data.batch_size=2", "--set", "train.devices=2", "--set", "train.accelerator=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("checkpoint:") == 1  # printed by the first process only
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 3
    again = evaluate_checkpoint(out / "model.safetensors", progress=False)
    assert again["domains"]["GF-1"]["confusion"] == metrics["domains"]["GF-1"]["confusion"]


def test_a_version_1_checkpoint_is_migrated_when_read(bench, tmp_path):
    """Checkpoints written before the seams redesign (format rsmoe-checkpoint-v1, MPerS decoder tensors under
    ``decoder.``) still load, and predict exactly what the current file predicts; a newer version is refused."""
    from safetensors.torch import save_file

    from rsmoe.engine.checkpoints import FORMAT_VERSION, read_checkpoint
    from rsmoe.errors import CheckpointError

    overrides = [f"data.root={bench}", f"output_dir={tmp_path / 'run'}", "train.iterations=1", "data.batch_size=2",
                 "data.target_domains=[GF-1]", "model=mpers", "mpers.text_encoder=tiny",
                 "mpers.text_dim=16", "mpers.neck_channels=[16, 16]",
                 "mpers.ldpe_widths=[8, 8, 8, 8]", "mpers.adapter_heads=2", "mpers.linguistic_heads=2",
                 "mpers.gate_hidden=8", "mpers.decoder_channels=[8, 8, 8]", "mpers.eval_captions=none"]
    train(load_config(demo_config_path(), overrides), progress=False)
    current = tmp_path / "run" / "model.safetensors"
    with safe_open(str(current), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["format_version"] == str(FORMAT_VERSION) and any(k.startswith("head.") for k in tensors)
    old = {("decoder." + k[5:] if k.startswith("head.") else k): v for k, v in tensors.items()}
    legacy = {k: v for k, v in meta.items() if k != "format_version"} | {"format": "rsmoe-checkpoint-v1"}
    save_file(old, str(tmp_path / "v1.safetensors"), metadata=legacy)

    migrated, _ = read_checkpoint(tmp_path / "v1.safetensors")
    assert set(migrated) == set(tensors) and all(torch.equal(migrated[k], tensors[k]) for k in tensors)
    batch = {"image": torch.randn(2, 4, 32, 32), "wavelengths": torch.tensor([0.485, 0.555, 0.66, 0.83])}
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(tmp_path / "v1.safetensors")[0].predict(batch),
                                   load_checkpoint(current)[0].predict(batch), rtol=0, atol=0)
    save_file(tensors, str(tmp_path / "v9.safetensors"), metadata={**meta, "format_version": "9"})
    with pytest.raises(CheckpointError, match="format version 9"):
        read_checkpoint(tmp_path / "v9.safetensors")


def test_params_prints_the_head_line_once(capsys):
    assert main(["params", "--config", str(demo_config_path())]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines].count("head") == 1
    counts = {line.rsplit(None, 1)[0].strip(): int(line.rsplit(None, 1)[1].replace(",", "")) for line in lines[1:]}
    per_module = sum(n for name, n in counts.items() if name not in ("head", "total (excluding head)",
                                                                       "total trainable", "frozen (backbone, depth)"))
    assert per_module == counts["total (excluding head)"]
    assert counts["total (excluding head)"] + counts["head"] == counts["total trainable"]


def test_a_domain_that_is_source_and_target_is_reported_per_split(bench, tmp_path):
    """The MPerS tasks evaluate one domain on val (as source) and on test (as target): both results are kept."""
    cfg = load_config(demo_config_path(), [f"data.root={bench}", f"output_dir={tmp_path / 'run'}",
                                           "train.iterations=1", "data.batch_size=2", "data.target_domains=[GF-2]",
                                           "data.test_split=train"])
    model = build_segmentor(cfg, 7, [0.485, 0.555, 0.66, 0.83])
    metrics = evaluate(cfg, model.eval(), [f"c{i}" for i in range(7)], progress=False)
    assert set(metrics["domains"]) == {"GF-2/val", "GF-2/train"}
    assert metrics["domains"]["GF-2/val"]["confusion"] != metrics["domains"]["GF-2/train"]["confusion"]
    assert metrics["target_mean"]["mIoU"] == metrics["domains"]["GF-2/train"]["mIoU"]


def test_multistep_schedule_is_the_mpers_recipe():
    from rsmoe.engine.optim import build_optimizer
    from rsmoe.models.segmentor import build_segmentor

    cfg = load_config(demo_config_path(), ["train.lr=1.0e-3", "train.lr_schedule=multistep",
                                           "train.lr_milestones=[3, 5]", "train.iterations=8"])
    optimizer, scheduler = build_optimizer(build_segmentor(cfg, 3, [0.49, 0.56, 0.665, 0.83]), cfg.train)
    lrs = []
    for _ in range(7):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])
    from rsmoe.errors import ConfigError

    with pytest.raises(ConfigError, match="lr_milestones"):
        load_config(demo_config_path(), ["train.lr_schedule=multistep", "train.lr_milestones=[5, 3]"])
