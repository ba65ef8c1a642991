"""Every config the repository ships loads, validates and builds (shapes only, on the meta device)."""
from pathlib import Path

import pytest

from rsmoe.config import load_config
from rsmoe.params import count_parameters

CONFIGS = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "configs").glob("*/*.yaml")
                 if p.parent.name in ("models", "tasks"))


@pytest.mark.parametrize("path", CONFIGS, ids=[Path(p).stem for p in CONFIGS])
def test_config_builds(path):
    cfg = load_config(path)
    counts = count_parameters(cfg)
    assert counts["total"] == sum(counts["per_module"].values()) > 0 and counts["frozen"] > 0
    if cfg.model == "segmentor" and cfg.adapter.type == "spectralmoe" and cfg.backbone.kind == "dinov3":
        # supplementary Table 7: 3,148,289 + 161,856·r outside the head for E = 6, m = 100, L = 24, d = 1024
        expected = 3_148_289 + 161_856 * cfg.adapter.rank if cfg.adapter.num_experts == 6 else None
        if expected is not None and cfg.adapter.num_tokens == 100:
            assert counts["total_excluding_head"] == expected
