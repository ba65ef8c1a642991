"""Runs that survive: periodic atomic checkpoints, bitwise-exact resume (also after kill -9), finite-value guards,
failed saves that keep the previous checkpoint, and the run folder's log, loss curve and file modes."""
import csv
import errno
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rsmoe.config import load_config
from rsmoe.demo import demo_config_path
from rsmoe.engine import saving
from rsmoe.engine.optim import poly_factor
from rsmoe.engine.resume import collect_rng_states, restore_rng_states
from rsmoe.engine.runner import train
from rsmoe.engine.stream import CHUNK, SeededSamples, StreamSampler
from rsmoe.errors import OutputError, TrainingError

AUGMENT = "data.augment={crop: 24, hflip: 0.5, vflip: 0.5, photometric: true}"


pytestmark = pytest.mark.usefixtures("one_thread")


def run_cfg(bench, out, *extra):
    return load_config(demo_config_path(), [f"data.root={bench}", f"output_dir={out}", "data.batch_size=2",
                                            "depth.enabled=true", *extra])


def trained(path):
    return load_file(str(path))


def assert_bitwise_equal(a, b):
    assert set(a) == set(b)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} trainable tensors differ, e.g. {differ[:3]}"


# ------------------------------------------------------------------------------------------- the training stream
def test_stream_resumes_at_any_position_and_shards_without_overlap(monkeypatch):
    full = list(StreamSampler(7, 2 * CHUNK + 5, seed=3))
    assert [p for p, _ in full] == list(range(2 * CHUNK + 5))
    assert {i for _, i in full} == set(range(7))  # uniform draws over all tiles
    later = StreamSampler(7, 2 * CHUNK + 5, seed=3)
    later.start = CHUNK - 2  # crosses a chunk boundary
    assert list(later) == full[CHUNK - 2:]
    assert list(StreamSampler(7, 50, seed=4)) != full[:50]

    single = list(StreamSampler(7, 120, seed=3))
    shards = []
    for rank in (0, 1, 2):
        monkeypatch.setattr("rsmoe.engine.stream.process_rank", lambda r=rank: (r, 3))
        shards.append(list(StreamSampler(7, 40, seed=3)))
    merged = sorted(x for shard in shards for x in shard)
    assert merged == single and all(len(s) == 40 for s in shards)


def test_seeded_samples_draw_by_position_and_leave_the_global_state_alone():
    class Draw(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return i, float(torch.rand(()))

    ds = SeededSamples(Draw(), seed=5)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = [ds[(p, p % 3)] for p in range(6)]
    assert torch.equal(torch.get_rng_state(), before)
    assert [ds[(p, p % 3)] for p in reversed(range(6))] == first[::-1]  # order and history do not matter
    assert len({v for _, v in first}) == 6


def test_random_states_round_trip():
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    states = collect_rng_states()
    draws = (torch.rand(3), random.random(), np.random.rand(2))
    torch.rand(5), random.random(), np.random.rand(4)
    restore_rng_states(states)
    again = (torch.rand(3), random.random(), np.random.rand(2))
    assert torch.equal(draws[0], again[0]) and draws[1] == again[1] and np.array_equal(draws[2], again[2])


# ---------------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("variant", [["head=fpn"], ["head=mask2former", "head.options={pixel_decoder_layers: 1, decoder_layers: 2}"]],
                         ids=["fpn", "mask2former"])
def test_resume_from_a_middle_checkpoint_is_bitwise_exact(bench, tmp_path, monkeypatch, recwarn, variant):
    """Noisy top-k gating and Mask2Former's point sampling draw from torch's global generator, the augmentation
    (crop, flips, photometric) from the per-position one: all continue exactly after a resume at step 3."""
    extra = ["train.iterations=7", "train.checkpoint_every=3", AUGMENT, *variant]
    save = saving.AtomicCheckpointIO.save_checkpoint

    def keep_step_3(self, checkpoint, path, storage_options=None):
        save(self, checkpoint, path, storage_options)
        if checkpoint["global_step"] == 3:
            shutil.copy(path, tmp_path / "step3.ckpt")

    monkeypatch.setattr(saving.AtomicCheckpointIO, "save_checkpoint", keep_step_3)
    train(run_cfg(bench, tmp_path / "whole", *extra), progress=False)
    monkeypatch.setattr(saving.AtomicCheckpointIO, "save_checkpoint", save)
    recwarn.clear()
    train(run_cfg(bench, tmp_path / "resumed", *extra, f"train.resume={tmp_path / 'step3.ckpt'}"), progress=False)
    assert not [w for w in recwarn if "resum" in str(w.message)], [str(w.message) for w in recwarn]

    whole, resumed = trained(tmp_path / "whole" / "model.safetensors"), trained(tmp_path / "resumed" / "model.safetensors")
    assert_bitwise_equal(whole, resumed)
    at_step_3 = torch.load(tmp_path / "step3.ckpt", weights_only=True)["state_dict"]
    assert any(not torch.equal(at_step_3["model." + k], v) for k, v in whole.items())  # steps 4-7 changed them
    rows = list(csv.DictReader(open(tmp_path / "resumed" / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == [4, 5, 6, 7]
    logged = {int(r["step"]): r for r in csv.DictReader(open(tmp_path / "whole" / "train_log.csv"))}
    assert all(r["loss"] == logged[int(r["step"])]["loss"] for r in rows)


@pytest.mark.slow
def test_kill_9_at_a_random_step_then_resume_is_bitwise_exact(bench, tmp_path):
    """A training subprocess is killed (SIGKILL) at a random step after its first checkpoint; `train.resume` of
    the last.ckpt it left gives the same final weights as an uninterrupted run."""
    iterations, every = 30, 4
    kill_after = random.Random().randint(every + 1, iterations - 4)
    overrides = [f"data.root={bench}", "data.batch_size=2", "depth.enabled=true", f"train.iterations={iterations}",
                 f"train.checkpoint_every={every}", AUGMENT]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "rsmoe", "train", "--config", str(demo_config_path()), "--no-progress",
           *[a for o in overrides + [f"output_dir={killed}"] for a in ("--set", o)]]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = killed / "train_log.csv"
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if log.is_file() and log.read_text().count("\n") - 1 >= kill_after:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"not killed (rc {proc.returncode}): {proc.stderr.read()[-2000:]}"
    assert not (killed / "model.safetensors").exists()
    saved_step = torch.load(killed / "last.ckpt", weights_only=True)["global_step"]
    assert saved_step >= every and saved_step % every == 0 and saved_step < iterations, (kill_after, saved_step)

    train(load_config(demo_config_path(), overrides + [f"output_dir={killed}",
                                                       f"train.resume={killed / 'last.ckpt'}"]), progress=False)
    train(load_config(demo_config_path(), overrides + [f"output_dir={tmp_path / 'whole'}"]), progress=False)
    assert_bitwise_equal(trained(tmp_path / "whole" / "model.safetensors"), trained(killed / "model.safetensors"))
    steps = [int(r["step"]) for r in csv.DictReader(open(log))]
    assert steps == list(range(1, iterations + 1)), f"killed after step {kill_after}"
    assert not list(killed.glob(".*tmp*"))


# ----------------------------------------------------------------------------------------------- what a run writes
def test_run_folder_checkpoints_log_curve_and_modes(bench, tmp_path, capsys):
    out = tmp_path / "run"
    iterations = 5
    train(run_cfg(bench, out, f"train.iterations={iterations}", "train.checkpoint_every=2", "train.lr=0.002",
                  "train.poly_power=0.9"), progress=True)
    bar = capsys.readouterr().out.replace("\r", "\n")
    assert f"train: 100%" in bar and f"{iterations}/{iterations}" in bar and "task=" in bar and "router=" in bar
    assert "Epoch" not in bar

    ckpt = torch.load(out / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == iterations
    assert not any(k.startswith(("model.backbone.", "model.depth.")) for k in ckpt["state_dict"])
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"samples_consumed": 2 * iterations, "seed": 42}]
    assert set(ckpt["callbacks"]["RandomStates"]["rng"]) >= {"python", "numpy", "torch"}
    assert ckpt["rsmoe"]["config"]["adapter"]["rank"] == 8
    weights = trained(out / "model.safetensors")
    assert_bitwise_equal(weights, {k[len("model."):]: v for k, v in ckpt["state_dict"].items()})

    rows = list(csv.DictReader(open(out / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, iterations + 1))
    assert {"loss", "loss_task", "loss_router", "lr"} <= set(rows[0])
    for r in rows:  # the LR each step used: the poly schedule from its first value
        assert float(r["lr"]) == pytest.approx(0.002 * poly_factor(int(r["step"]) - 1, iterations, 0.9), rel=1e-6)
        assert float(r["loss"]) == pytest.approx(float(r["loss_task"]) + float(r["loss_router"]), rel=1e-5)
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    assert sorted(p.name for p in out.iterdir()) == ["last.ckpt", "loss_curve.png", "metrics.json", "metrics.md",
                                                     "model.safetensors", "train_log.csv"]


def test_non_finite_loss_stops_naming_step_and_tiles_and_keeps_the_last_checkpoint(bench, tmp_path, monkeypatch):
    from rsmoe.models.segmentor import Segmentor

    loss = Segmentor.loss
    calls = []

    def nan_at_step_5(self, batch):
        terms = loss(self, batch)
        calls.append(batch["tile"])
        if len(calls) == 5:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(Segmentor, "loss", nan_at_step_5)
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        train(run_cfg(bench, out, "train.iterations=8", "train.checkpoint_every=2"), progress=False)
    message = str(info.value)
    assert "step 5" in message and "\n" not in message and all(t in message for t in calls[4])
    assert torch.load(out / "last.ckpt", weights_only=True)["global_step"] == 4
    assert not (out / "model.safetensors").exists() and not list(out.glob(".*tmp*"))


def test_non_finite_weights_are_never_saved():
    with pytest.raises(TrainingError, match="step 7: the trainable tensor head.w holds NaN"):
        saving.check_finite({"adapter.a": torch.ones(2), "head.w": torch.tensor([1.0, float("inf")])}, 7)
    saving.check_finite({"steps": torch.tensor([3]), "w": torch.zeros(2)}, 1)


def test_a_failed_save_is_one_line_and_keeps_the_previous_checkpoint(bench, tmp_path, monkeypatch):
    save = torch.save
    calls = []

    def disk_full_on_second_save(obj, f, *args, **kwargs):
        calls.append(obj.get("global_step") if isinstance(obj, dict) else None)
        if len(calls) == 2:
            with open(f, "wb") as half:  # a partial temporary file, as a full disk leaves it
                half.write(b"PK\x03\x04 torn")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(saving.torch, "save", disk_full_on_second_save)
    out = tmp_path / "run"
    with pytest.raises(OutputError) as info:
        train(run_cfg(bench, out, "train.iterations=6", "train.checkpoint_every=2"), progress=False)
    assert "No space left on device" in str(info.value) and "previous checkpoint is kept" in str(info.value)
    monkeypatch.setattr(saving.torch, "save", save)
    assert torch.load(out / "last.ckpt", weights_only=True)["global_step"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["last.ckpt", "train_log.csv"]


def test_resuming_a_finished_run_writes_the_same_weights(bench, tmp_path):
    train(run_cfg(bench, tmp_path / "a", "train.iterations=3", "train.checkpoint_every=2"), progress=False)
    metrics = train(run_cfg(bench, tmp_path / "b", "train.iterations=3", "train.checkpoint_every=2",
                            f"train.resume={tmp_path / 'a' / 'last.ckpt'}"), progress=False)
    assert metrics["step"] == 3
    assert_bitwise_equal(trained(tmp_path / "a" / "model.safetensors"), trained(tmp_path / "b" / "model.safetensors"))
