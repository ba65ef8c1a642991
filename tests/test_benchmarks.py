"""The whole-step benchmark and the one-command GPU benchmark run end to end on a CPU at tiny sizes (their numbers
are measured by the scripts, never asserted here; the tests check that every part is measured and reported)."""
import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.slow
def test_gpu_benchmark_quick_on_cpu(tmp_path):
    gpu = load("gpu")
    out = tmp_path / "gpu.json"
    gpu.main(["--device", "cpu", "--quick", "--variants", "spectralmoe/official+ac", "--out", str(out)])
    result = json.loads(out.read_text())
    steps = {r["compile"]: r for r in result["steps"]}
    assert set(steps) == {False, True}, result["steps"]
    for r in steps.values():
        assert "error" not in r, r
        assert r["run"] == "spectralmoe/official+ac+bf16"  # the step runs in bfloat16
        assert [row["batch"] for row in r["rows"]] == [1, 2] and r["largest_batch_that_fits"] == 2
        for row in r["rows"]:
            assert row["images_per_second"] > 0 and row["peak_mib"] > row["before_step_mib"] > 0
            assert 0 < row["depth_share"] < 1
    from rsmoe.predict import plan_windows

    windows = plan_windows(256, 256, 64, 16).num_windows
    assert [p["precision"] for p in result["predict"]] == ["float32", "bfloat16 autocast"]
    assert all(p["windows"] == windows and p["windows_per_second"] > 0 for p in result["predict"])
    assert result["machine"]["torch"]


@pytest.mark.slow
def test_train_step_benchmark_time_memory_and_profile(tmp_path):
    ts = load("bench_train_step")
    out = tmp_path / "train_step.json"
    tiny = ["--image", "64", "--layers", "4", "--batches", "1", "--warmup", "0", "--steps", "1", "--out", str(out)]
    ts.main(tiny + ["--runs", "frozen", "floor", "spectralmoe/official+ac", "--memory-runs", "frozen",
                    "spectralmoe/official"])
    result = json.loads(out.read_text())
    time_rows = {r["run"]: r for r in result["time"]}
    assert set(time_rows) == {"frozen", "floor", "spectralmoe/official+ac"}
    assert time_rows["frozen"]["ratio_vs_frozen"] == 1.0
    assert time_rows["spectralmoe/official+ac"]["activation_checkpointing"]
    memory = {r["run"]: r for r in result["memory"]}
    assert memory["frozen"]["peak_vs_frozen"] == 1.0
    assert memory["spectralmoe/official"]["step_mib"] > 0
    assert result["machine"]["cpu"] and result["layers"] == 4
    ts.main(tiny + ["--profile", "spectralmoe/official", "--top", "5"])
    profile = json.loads(out.with_name("train_step_profile.json").read_text())
    parts = profile["self_seconds_by_part"]
    for part in ("depth encoder forward", "frozen blocks forward", "frozen blocks backward", "plug-in forward",
                 "plug-in backward", "head forward", "head backward", "optimiser step"):
        assert parts.get(part, 0) > 0, (part, parts)
    assert "depth encoder backward" not in parts  # frozen, under inference mode
    assert len(profile["top_ops"]) == 5
