"""Shared test set-up: never reach the Hugging Face hub, keep torch on few threads."""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(2)


import pytest  # noqa: E402

#: a tiny random frozen model (the demo's shapes before it used the shipped models: patch 8, width 64; random depth
#: model and tiny text encoder): for tests about data, errors and geometry, not about the shipped weights
TINY_RANDOM_MODEL = {
    "backbone": {"pretrained": None, "config": {"_replace_": True, "hidden_size": 64, "num_hidden_layers": 4,
                                                "num_attention_heads": 4, "intermediate_size": 128, "patch_size": 8,
                                                "num_register_tokens": 4, "image_size": 64}},
    "depth": {"pretrained": None, "config": {"_replace_": True, "hidden_size": 64, "num_hidden_layers": 4,
                                             "num_attention_heads": 4, "intermediate_size": 128, "patch_size": 14,
                                             "image_size": 70}},
    "mpers": {"text_encoder": "tiny", "text_dim": 32},
}
TINY_RANDOM = [f"{section}.{key}={json.dumps(value)}" for section, values in TINY_RANDOM_MODEL.items()
               for key, value in values.items()]

SMALL_BENCHMARK = {"GF-2": {"train": 6, "val": 2}, "GF-1": {"test": 2}, "PlanetScope": {"test": 2},
                   "Sentinel-2": {"test": 2}}


@pytest.fixture(scope="session")
def bench(tmp_path_factory):
    """A small synthetic multispectral benchmark (32-px tiles) shared by the engine, MPerS and ablation tests."""
    from rsmoe.data.synthetic import synthesize

    root = tmp_path_factory.mktemp("synthetic")
    synthesize(root, seed=0, tile=32, tiles_per_domain=SMALL_BENCHMARK, show_progress=False,
               datasets=("multispectral",))
    return root / "multispectral"


@pytest.fixture
def one_thread():
    """One torch thread for the test (tiny models gain nothing from a second thread, and lose much on a busy
    machine); modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
