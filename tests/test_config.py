import pytest

from rsmoe.config import ConfigError, default_taps, load_config
from rsmoe.engine.optim import poly_factor


def test_yaml_base_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("adapter: {rank: 4, num_experts: 3}\ntrain: {iterations: 10}\n")
    (tmp_path / "run.yaml").write_text("_base_: base.yaml\nadapter: {num_experts: 5}\n")
    cfg = load_config(tmp_path / "run.yaml", ["adapter.rank=32", "head=mask2former", "train.betas=[0.8, 0.9]"])
    assert cfg.adapter.rank == 32 and cfg.adapter.num_experts == 5
    assert cfg.train.iterations == 10
    assert cfg.head.type == "mask2former"
    assert cfg.train.betas == [0.8, 0.9]


def test_unknown_key_and_wrong_type_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"adapter: unknown key\(s\) \['ranks'\]"):
        load_config(None, ["adapter.ranks=3"])
    with pytest.raises(ConfigError, match="adapter.rank: expected int"):
        load_config(None, ["adapter.rank=abc"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_default_taps():
    assert default_taps(24) == [7, 11, 15, 23]
    assert default_taps(12) == [3, 5, 7, 11]


def test_poly_schedule():
    assert poly_factor(0, 100, 0.9) == 1.0
    assert poly_factor(50, 100, 0.9) == pytest.approx(0.5**0.9)
    assert poly_factor(100, 100, 0.9) == 0.0
