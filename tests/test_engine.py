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


def test_resume_continues_from_last_checkpoint(bench, tmp_path):
    cfg = run_cfg(bench, tmp_path / "a", "train.iterations=4")
    train(cfg, progress=False)
    last = tmp_path / "a" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 4
    assert not any(k.startswith(("model.backbone.", "model.depth.")) for k in state["state_dict"])
    resumed = run_cfg(bench, tmp_path / "b", "train.iterations=6", f"train.resume={last}")
    metrics = train(resumed, progress=False)
    assert metrics["step"] == 6


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
