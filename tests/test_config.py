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


def test_checkpoint_every_defaults_to_2000_and_must_be_positive():
    assert load_config(None).train.checkpoint_every == 2000
    assert load_config(None, ["train.checkpoint_every=50"]).train.checkpoint_every == 50
    with pytest.raises(ConfigError, match=r"train\.checkpoint_every: must be ≥ 1, got 0"):
        load_config(None, ["train.checkpoint_every=0"])


def test_head_options_are_checked_against_the_head_constructor():
    assert load_config(None, ["head=mask2former", "head.options={decoder_layers: 2}"]).head.options == {
        "decoder_layers": 2}
    with pytest.raises(ConfigError, match=r"head\.options: unknown option\(s\) \['layers'\] for Mask2FormerHead"):
        load_config(None, ["head=mask2former", "head.options={layers: 2}"])
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['channels'\]"):  # set by rsmoe itself
        load_config(None, ["head.options={channels: 2}"])


def test_resume_compares_the_run_config_except_where_things_live():
    from rsmoe.engine.resume import first_config_difference

    saved = load_config(None).to_dict()
    moved = load_config(None, ["output_dir=elsewhere", "data.root=/mnt/new", "train.checkpoint_every=10",
                               "eval.mode=slide", "data.num_workers=4"]).to_dict()
    assert first_config_difference(saved, moved) is None
    changed = load_config(None, ["train.seed=7", "adapter.rank=4"]).to_dict()
    assert first_config_difference(saved, changed) == "adapter.rank: 16 in the checkpoint, 4 now"
