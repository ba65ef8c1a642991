"""Shared test set-up: never reach the Hugging Face hub, keep torch on few threads."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(2)


import pytest  # noqa: E402

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
