"""`rsmoe demo` end to end with a few iterations: every variant trains, the report's numbers are the run's own."""
import json

from rsmoe.cli import main


def test_demo_writes_report_metrics_and_panels(tmp_path):
    out, data = tmp_path / "demo", tmp_path / "synthetic"
    assert main(["demo", "--out", str(out), "--data", str(data), "--no-progress",
                 "--set", "train.iterations=2", "--set", "data.batch_size=2"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary["results"]) == {"frozen", "rein", "spectralmoe", "mpers"}
    report = (out / "report.md").read_text()
    for method, res in summary["results"].items():
        assert res["step"] == 2
        assert set(res["domains"]) == {"GF-2", "GF-1", "PlanetScope", "Sentinel-2"}
        # the table row of each method carries exactly the measured target mean
        assert f"| {method} |" in report and f"{100 * res['target_mean']['mIoU']:.2f}" in report
        assert (out / method / "model.safetensors").is_file()
    for domain in ("GF-2", "GF-1", "PlanetScope", "Sentinel-2"):
        assert (out / f"{domain}.png").stat().st_size > 1000
