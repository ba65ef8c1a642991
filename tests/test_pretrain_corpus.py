"""The pretraining corpus: seeds disjoint from the benchmark's, RGB only, per-acquisition standardisation,
determinism, and the shadow / shading physics against hand computations."""
import math

import numpy as np
import pytest

from rsmoe.data import synthetic as S
from rsmoe.pretrain import corpus as C


def _benchmark_keys(seeds):
    """Every entropy key the benchmark's tiles draw from (render_tile's construction), for the given seeds."""
    keys = set()
    for seed in seeds:
        for ds_index, (name, spec) in enumerate(S.DATASETS.items()):
            for dom_index, (_, (_, _, splits)) in enumerate(spec["domains"].items()):
                for split in S.SPLIT_CODES:
                    for index in range(64):
                        keys.add((seed, ds_index, dom_index, S.SPLIT_CODES[split], index))
    return keys


def test_corpus_keys_are_disjoint_from_benchmark_keys():
    bench = _benchmark_keys(range(4))
    corpus = {tuple(C.corpus_key(seed, a, part, i)) for seed in range(4) for a in range(40) for part in (0, 1)
              for i in range(C.ACQUISITION_TILES)}
    assert len(corpus) == 4 * 40 * 2 * C.ACQUISITION_TILES
    assert not bench & corpus
    # the structural reason: word 1 is a dataset index (0, 1) in the benchmark and CORPUS_CODE in the corpus
    assert {k[1] for k in bench} == set(range(len(S.DATASETS))) and C.CORPUS_CODE not in {k[1] for k in bench}
    with pytest.raises(ValueError, match="2\\*\\*32"):
        C.corpus_key(2**32, 0, 0, 0)
    # and the draws really differ: the corpus's first tile is not the benchmark's first tile of the same seed
    a = np.random.default_rng(C.corpus_key(0, 0, 1, 0)).random(8)
    b = np.random.default_rng([0, 0, 0, 0, 0]).random(8)
    assert not np.allclose(a, b)


def test_corpus_is_rgb_standardised_and_deterministic():
    corpus = C.build_corpus(seed=3, acquisitions=2, tiles_per_acquisition=4, size=32)
    assert corpus.images.shape == (8, 3, 32, 32) and corpus.images.dtype == np.float32
    assert corpus.labels.shape == (8, 32, 32) and corpus.heights.shape == (8, 32, 32)
    assert corpus.acquisition.tolist() == [0] * 4 + [1] * 4
    for a in (0, 1):  # per acquisition and band: zero mean, unit std over its tiles
        x = corpus.images[corpus.acquisition == a].astype(np.float64)
        np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
        np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1.0, atol=1e-4)
    for sensor in corpus.sensors:  # three visible bands in R, G, B order: no NIR
        r, g, b = sensor.centres_um
        assert 0.445 <= b < g < r <= 0.69
        assert np.all(sensor.responses()[:, C.GRID_UM > 0.7005] == 0)
    again = C.build_corpus(seed=3, acquisitions=2, tiles_per_acquisition=4, size=32)
    np.testing.assert_array_equal(again.images, corpus.images)
    second = C.build_corpus(seed=3, acquisitions=1, first_acquisition=1, tiles_per_acquisition=4, size=32)
    np.testing.assert_array_equal(second.images, corpus.images[4:])  # an acquisition is the same in any range
    other = C.build_corpus(seed=4, acquisitions=1, tiles_per_acquisition=4, size=32)
    assert not np.array_equal(other.labels, corpus.labels[:4])


def test_cast_shadow_of_a_tower_by_hand():
    surface = np.zeros((21, 21))
    surface[10, 10] = 9.0  # a 9 m tower on flat ground
    # sun in the east at 45°: the ray climbs gsd·tan(45°) = 2 m per pixel, so the shadow reaches west while
    # 9 > 2k, i.e. k = 1..4 pixels
    shadow = C.cast_shadows(surface, gsd_m=2.0, elevation_deg=45.0, azimuth_deg=90.0)
    expected = np.zeros_like(shadow)
    expected[10, 6:10] = True
    np.testing.assert_array_equal(shadow, expected)
    # sun in the north: the shadow falls south (rows grow southwards)
    south = C.cast_shadows(surface, gsd_m=2.0, elevation_deg=45.0, azimuth_deg=0.0)
    assert south[11:15, 10].all() and south.sum() == 4


def test_terrain_shading_by_hand():
    gsd, s, el = 4.0, 0.3, math.radians(40.0)
    cols = np.arange(16, dtype=np.float64)
    ground = np.tile(cols * gsd * s, (16, 1))  # rises eastwards with slope s
    flat = C.terrain_shading(np.zeros((16, 16)), gsd, 40.0, 270.0)
    np.testing.assert_allclose(flat, 1.0)
    # a slope rising eastwards faces west (normal ∝ (−s, 0, 1)): with the sun in the west at elevation e,
    # cos(i) = (s·cos e + sin e)/√(1+s²); with the sun in the east, (−s·cos e + sin e)/√(1+s²)
    towards = C.terrain_shading(ground, gsd, 40.0, 270.0)
    np.testing.assert_allclose(towards, (s * math.cos(el) + math.sin(el)) / math.sqrt(1 + s * s) / math.sin(el))
    away = C.terrain_shading(ground, gsd, 40.0, 90.0)
    np.testing.assert_allclose(away, (-s * math.cos(el) + math.sin(el)) / math.sqrt(1 + s * s) / math.sin(el))


def test_paired_corpus_adds_a_second_camera_without_changing_the_first():
    single = C.build_corpus(seed=2, acquisitions=1, tiles_per_acquisition=4, size=32)
    paired = C.build_corpus(seed=2, acquisitions=1, tiles_per_acquisition=4, size=32, paired=True)
    np.testing.assert_array_equal(paired.images, single.images)
    np.testing.assert_array_equal(paired.labels, single.labels)
    assert single.images2 is None and paired.images2.shape == paired.images.shape
    assert paired.sensors2[0] != paired.sensors[0]
    # the same ground: both renderings correlate strongly per band, but they are not the same pixels
    a, b = paired.images.reshape(4, 3, -1), paired.images2.reshape(4, 3, -1)
    corr = [np.corrcoef(a[i, c], b[i, c])[0, 1] for i in range(4) for c in range(3)]
    assert min(corr) > 0.5 and not np.allclose(a, b)
