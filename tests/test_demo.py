"""`rsmoe demo` end to end with a few iterations: every variant trains on the shipped models, the report's numbers
are the run's own, it names where each frozen model's weights came from; --random-weights swaps them."""
import json

import pytest

from rsmoe.cli import main
from rsmoe.io.digest import file_sha256
from rsmoe.shipped import shipped_folder

VARIANTS = {"frozen", "rein", "spectralmoe", "spectralmoe-paper", "mpers"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One synthetic benchmark for both demo runs (the demo writes it if missing)."""
    return tmp_path_factory.mktemp("synthetic")


def test_demo_writes_report_metrics_and_panels(tmp_path, data):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--data", str(data), "--no-progress",
                 "--set", "train.iterations=2", "--set", "data.batch_size=2"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary["results"]) == VARIANTS
    report = (out / "report.md").read_text()
    for method, res in summary["results"].items():
        assert res["step"] == 2
        assert set(res["domains"]) == {"GF-2", "GF-1", "PlanetScope", "Sentinel-2"}
        # the table row of each method carries exactly the measured target mean
        assert f"| {method} |" in report and f"{100 * res['target_mean']['mIoU']:.2f}" in report
        assert (out / method / "model.safetensors").is_file()
    from rsmoe.engine.checkpoints import read_checkpoint

    paper = read_checkpoint(out / "spectralmoe-paper" / "model.safetensors")[1].config.adapter
    assert (paper.expert_logits, paper.fusion) == ("dot", "cross_attention")
    # provenance: each shipped model's SHA-256 prefix, on the lines of the variants that use it
    for name, variants in (("backbone", VARIANTS), ("depth", {"spectralmoe", "spectralmoe-paper"}),
                           ("clip", {"mpers"})):
        digest = file_sha256(shipped_folder(name) / "model.safetensors")[:16]
        for method in VARIANTS:
            line = next(l for l in report.splitlines() if l.startswith(f"- **{method}**:"))
            assert (digest in line) == (method in variants), (name, method, line)
    for domain in ("GF-2", "GF-1", "PlanetScope", "Sentinel-2"):
        assert (out / f"{domain}.png").stat().st_size > 1000


def test_demo_random_weights_switch(tmp_path, data):
    from rsmoe.demo import RANDOM_WEIGHTS, run_demo

    out = tmp_path / "demo"
    run_demo(out=out, data_dir=data, overrides=[*RANDOM_WEIGHTS, "train.iterations=1", "data.batch_size=2"],
             progress=False, variants=("spectralmoe", "mpers"))
    lines = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("- **")]
    assert len(lines) == 2 and not any("rsmoe:" in line for line in lines)
    assert sum(line.count("random weights (seed") for line in lines) == 4  # backbone ×2, depth, text encoder
