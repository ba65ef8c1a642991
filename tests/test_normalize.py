"""Normalize: the one per-band standardisation shared by training, evaluation and ``rsmoe predict``.

The end-to-end test builds a prepared dataset whose NIR band is constant over the training split (std = 0) and
checks that the training pipeline, the evaluation loader and whole-scene prediction hand the model the same
values, bitwise — ``(x − mean) / 1`` for that band, never inf or NaN.
"""
import numpy as np
import pytest
import torch

from rsmoe.config import load_config
from rsmoe.data.normalize import Normalize
from rsmoe.data.prepared import PreparedWriter
from rsmoe.demo import demo_config_path
from rsmoe.engine.data import eval_loaders, train_loader
from rsmoe.engine.runner import checkpoint_meta
from rsmoe.errors import ConfigError
from rsmoe.predict import PredictionModel, predict_array

CLASSES = ["water", "field"]


def test_normalize_by_hand_numpy_and_torch_agree():
    n = Normalize([10.0, 20.0, 30.0], [2.0, 0.0, 4.0])
    x = np.array([[[12.0]], [[25.0]], [[22.0]]], dtype=np.float32)
    want = np.array([[[1.0]], [[5.0]], [[-2.0]]], dtype=np.float32)  # the std-0 band: x − mean
    np.testing.assert_array_equal(n.apply(x), want)
    np.testing.assert_array_equal(n.apply(torch.from_numpy(x)).numpy(), want)
    np.testing.assert_array_equal(n.apply(np.stack([x, x])), np.stack([want, want]))  # B×C×H×W
    inplace = x.copy()
    assert n.apply_(inplace) is inplace and np.array_equal(inplace, want)
    np.testing.assert_array_equal(n.invert(want), x)
    assert Normalize.from_dict(n.to_dict()).to_dict() == n.to_dict()
    with pytest.raises(ValueError, match="2 bands"):
        n.apply(np.zeros((2, 1, 1), np.float32))
    for mean, std in (([1.0], [1.0, 2.0]), ([float("nan")], [1.0]), ([0.0], [-1.0]), ([], [])):
        with pytest.raises(ConfigError):
            Normalize(mean, std)


class Recorder(torch.nn.Module):
    """Records its input; predicts class 0 everywhere."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, image, wavelengths):  # noqa: ARG002
        self.seen.append(image.clone())
        return torch.zeros(image.shape[0], len(CLASSES), *image.shape[-2:])


def test_a_constant_band_gives_the_same_values_in_training_eval_and_predict(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "prep"
    tiles = {}
    with PreparedWriter(root, "std0", CLASSES, [[0, 0, 255], [0, 255, 0]]) as w:
        for split, nir in (("train", 500), ("val", 777)):
            image = rng.integers(0, 1024, size=(4, 16, 16)).astype(np.uint16)
            image[3] = nir  # constant over the training split: std 0
            tiles[split] = image
            w.add_tile(image, rng.integers(0, 2, size=(16, 16)).astype(np.uint8), "GF-2", split, "GF-2")
    cfg = load_config(demo_config_path(), [f"data.root={root}", "data.target_domains=[]", "data.batch_size=1",
                                           "data.eval_batch_size=1", "data.augment={hflip: 0.0}",
                                           "train.iterations=1"])
    meta = checkpoint_meta(cfg, 0)
    assert meta.std[3] == 0.0
    expected = {s: (tiles[s].astype(np.float32) - np.float32(meta.mean)[:, None, None])
                / np.where(np.float32(meta.std) > 0, np.float32(meta.std), 1)[:, None, None] for s in tiles}
    assert np.isfinite(expected["val"]).all() and expected["val"][3, 0, 0] == 777 - 500

    trained = next(iter(train_loader(cfg)))["image"][0].numpy()
    np.testing.assert_array_equal(trained, expected["train"])
    evaluated = next(iter(eval_loaders(cfg)[1][0]))["image"][0].numpy()
    np.testing.assert_array_equal(evaluated, expected["val"])

    recorder = Recorder()
    pm = PredictionModel(model=recorder, class_names=CLASSES, palette=[(0, 0, 255), (0, 255, 0)],
                         normalize=meta.normalizer(), wavelengths=meta.wavelengths, band_names=meta.band_names)
    predict_array(pm, tiles["val"].astype(np.float32), tile=16, overlap=0)
    assert len(recorder.seen) == 1
    np.testing.assert_array_equal(recorder.seen[0][0].numpy(), expected["val"])
