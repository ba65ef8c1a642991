"""Recipe transforms: image/mask alignment, ignore handling, crop retries, photometric equivalence, resize rule."""
import pytest
import torch

from rsmoe.config import AugmentConfig, load_config
from rsmoe.data.transforms import (
    Compose,
    Normalize,
    Pad,
    PhotometricDistortion,
    RandomCrop,
    RandomFlip,
    RandomResize,
    build_train_transforms,
    raw_value_range,
)
from rsmoe.demo import demo_config_path

N = 12  # 12 × 12 = 144 pixels: every pixel gets its own mask value below 255


def coordinate_sample(ignore=((2, 3), (7, 7), (7, 8), (11, 0))):
    """Bands: row, column, 1 (a validity band), row + column; mask: the pixel's index row·N + col, 255 at
    ``ignore``."""
    rows, cols = torch.meshgrid(torch.arange(N, dtype=torch.float32), torch.arange(N, dtype=torch.float32),
                                indexing="ij")
    image = torch.stack([rows, cols, torch.ones_like(rows), rows + cols])
    mask = (rows * N + cols).long()
    for r, c in ignore:
        mask[r, c] = 255
    return {"image": image, "mask": mask, "domain": "d", "meta": {}}, set(ignore)


def check_alignment(out, ignore):
    image, mask = out["image"], out["mask"]
    assert image.shape[-2:] == mask.shape and mask.dtype == torch.int64
    valid = image[2] > 0.5  # padding has 0 in the validity band and 255 in the mask
    assert torch.all(mask[~valid] == 255) and torch.all(image[:, ~valid] == 0)
    row, col = image[0], image[1]
    for y, x in zip(*torch.nonzero(valid, as_tuple=True)):
        m = int(mask[y, x])
        r, c = float(row[y, x]), float(col[y, x])
        if m == 255:
            # an ignore pixel comes from an ignore source pixel within half a pixel of where the image sampled
            near = {(sr, sc) for sr in range(N) for sc in range(N)
                    if abs(sr - r) <= 0.5 + 1e-4 and abs(sc - c) <= 0.5 + 1e-4}
            assert near & ignore, (r, c)
        else:
            sr, sc = divmod(m, N)
            assert (sr, sc) not in ignore
            assert abs(sr - r) <= 0.5 + 1e-4 and abs(sc - c) <= 0.5 + 1e-4, (m, r, c)
    values = set(mask.unique().tolist())
    assert values <= set(range(N * N)) | {255}  # nothing interpolated into a new value


@pytest.mark.parametrize("seed", range(6))
def test_full_pipeline_keeps_mask_aligned_and_ignore_ignored(seed):
    torch.manual_seed(seed)
    cfg = AugmentConfig(resize_scale=[0.5, 2.0], resize_base=N, resize_max=2 * N, crop=10, cat_max_ratio=1.0,
                        hflip=0.5, vflip=0.5, photometric=False)
    pipeline = build_train_transforms(cfg, Normalize([0.0] * 4, [1.0] * 4))
    sample, ignore = coordinate_sample()
    out = pipeline(sample)
    assert tuple(out["image"].shape) == (4, 10, 10)
    check_alignment(out, ignore)


def test_crop_and_flip_are_exact():
    sample, ignore = coordinate_sample()
    torch.manual_seed(0)
    out = Compose([RandomCrop(7, cat_max_ratio=1.0), RandomFlip(1.0, 1.0)])(sample)
    rows, cols = out["image"][0].long(), out["image"][1].long()
    assert torch.all(out["image"][0] == out["image"][0, :, :1])  # whole rows, flipped
    expected = rows * N + cols
    for r, c in ignore:
        expected[(rows == r) & (cols == c)] = 255
    assert torch.equal(out["mask"], expected)
    assert torch.equal(rows[:, 0], rows[:, 0].sort(descending=True).values)  # vertically flipped
    assert torch.equal(cols[0], cols[0].sort(descending=True).values)  # horizontally flipped


def test_flip_probabilities():
    torch.manual_seed(0)
    sample, _ = coordinate_sample()
    flips = [bool(RandomFlip(0.3, 0.0)({"image": sample["image"].clone(), "mask": sample["mask"].clone()})
                  ["image"][1, 0, 0] != 0) for _ in range(2000)]
    assert abs(sum(flips) / 2000 - 0.3) < 0.04
    same = RandomFlip(0.0, 0.0)({"image": sample["image"].clone(), "mask": sample["mask"].clone()})
    assert torch.equal(same["image"], sample["image"])


def test_padding_when_image_smaller_than_crop():
    sample, _ = coordinate_sample()
    out = RandomCrop(16, cat_max_ratio=1.0)(sample)
    assert tuple(out["image"].shape) == (4, 16, 16)
    assert torch.all(out["mask"][N:] == 255) and torch.all(out["mask"][:, N:] == 255)
    assert torch.all(out["image"][:, N:] == 0) and torch.all(out["image"][:, :, N:] == 0)
    assert torch.equal(out["mask"][:N, :N], coordinate_sample()[0]["mask"])
    assert tuple(Pad((14, 13))(coordinate_sample()[0])["mask"].shape) == (14, 13)


# ------------------------------------------------------------------------------------------- cat_max_ratio
def halves_mask(size=32):
    """Rows 0–14 class 0, row 15 ignore, rows 16–31 class 1: a 16-px crop starting on row y ≤ 15 holds 15 labelled
    rows, 15 − y of class 0 and y of class 1, so it is accepted (both under 75 %) only for y = 4 … 11."""
    mask = torch.zeros(size, size, dtype=torch.int64)
    mask[size // 2:] = 1
    mask[size // 2 - 1] = 255
    return mask


def test_cat_max_ratio_follows_mmseg_retry_loop():
    crop = RandomCrop(16, cat_max_ratio=0.75, retries=10)
    mask = halves_mask()
    for seed in range(20):
        torch.manual_seed(seed)
        draws = [crop.draw_window(32, 32) for _ in range(11)]
        first_ok = next((b for b in draws[:10] if crop.accepts(mask[b[0]:b[1], b[2]:b[3]])), None)
        expected = first_ok if first_ok is not None else draws[10]  # the 11th window is used unchecked
        torch.manual_seed(seed)
        assert crop.choose_window(mask) == expected
        torch.manual_seed(seed)
        out = crop({"image": torch.arange(32.0).repeat(32, 1)[None], "mask": mask.clone()})
        y1, _, x1, _ = expected
        assert torch.equal(out["mask"], mask[y1:y1 + 16, x1:x1 + 16])
        assert float(out["image"][0, 0, 0]) == x1


def test_cat_max_ratio_rules_and_statistics():
    crop = RandomCrop(16, cat_max_ratio=0.75)
    mask = halves_mask()
    # the ignore row is not counted: 4/15 ≥ 0.25 and 11/15 < 0.75, but 12/15 ≥ 0.75
    assert [y for y in range(17) if crop.accepts(mask[y:y + 16, :16])] == list(range(4, 12))
    assert not crop.accepts(torch.zeros(16, 16, dtype=torch.int64))  # one class
    assert not crop.accepts(torch.full((16, 16), 255))  # nothing labelled

    def accepted_rate(retries, n=400):
        c = RandomCrop(16, cat_max_ratio=0.75, retries=retries)
        torch.manual_seed(0)
        boxes = [c.choose_window(mask) for _ in range(n)]
        return sum(crop.accepts(mask[b[0]:b[1], b[2]:b[3]]) for b in boxes) / n

    p = 8 / 17
    assert abs(accepted_rate(0) - p) < 0.08  # no retry: one draw
    assert accepted_rate(10) > 0.98  # 1 − (9/17)^11 ≈ 0.999
    # a single-class mask: every retry fails, 11 windows drawn, the last one used
    torch.manual_seed(3)
    draws = [RandomCrop(8).draw_window(32, 32) for _ in range(11)]
    torch.manual_seed(3)
    assert RandomCrop(8).choose_window(torch.zeros(32, 32, dtype=torch.int64)) == draws[-1]
    # cat_max_ratio 1: one draw, no check
    torch.manual_seed(3)
    assert RandomCrop(8, cat_max_ratio=1.0).choose_window(torch.zeros(32, 32, dtype=torch.int64)) == draws[0]


# --------------------------------------------------------------------------------------------- photometric
def raw_and_stats(bands, seed=0):
    g = torch.Generator().manual_seed(seed)
    raw = torch.rand(bands, 9, 11, generator=g) * 255
    mean = raw.mean((1, 2)) + torch.randn(bands, generator=g) * 5
    std = raw.std((1, 2)) * (0.5 + torch.rand(bands, generator=g))
    return raw, mean, std


def normalise(x, mean, std):
    return (x - mean[:, None, None]) / std[:, None, None]


@pytest.mark.parametrize("value_range", [None, (0.0, 255.0)])
def test_photometric_steps_on_raw_values_by_hand(value_range):
    raw, _, _ = raw_and_stats(5)
    pd = PhotometricDistortion(value_range=value_range)
    clip = (lambda x: x.clamp(*value_range)) if value_range else (lambda x: x)
    for params in ({"brightness": 25.0, "contrast": 1.4, "contrast_first": True},
                   {"brightness": -31.0, "contrast": 0.6, "contrast_first": False},
                   {"brightness": None, "contrast": 1.2, "contrast_first": True},
                   {"brightness": 12.5, "contrast": None, "contrast_first": False}):
        expected = raw
        if params["brightness"] is not None:
            expected = clip(expected + params["brightness"])
        if params["contrast"] is not None:
            expected = clip(expected * params["contrast"])
        torch.testing.assert_close(pd.apply(raw, params), expected)


@pytest.mark.parametrize("bands", [3, 4, 7])
def test_photometric_then_normalize_in_the_pipeline(bands):
    """The training pipeline distorts raw values with one random draw, then normalises: the same draw applied
    by hand to the raw image and normalised with the dataset statistics gives the pipeline's output."""
    raw, mean, std = raw_and_stats(bands, seed=bands)
    pipeline = build_train_transforms(AugmentConfig(hflip=0.0, photometric=True), Normalize(mean, std),
                                      value_range=(0, 255))
    changed = 0
    for seed in range(12):
        torch.manual_seed(seed)
        out = pipeline({"image": raw.clone(), "mask": torch.zeros(9, 11, dtype=torch.int64)})
        torch.manual_seed(seed)
        pd = PhotometricDistortion(value_range=(0, 255))
        by_hand = pd.apply(raw, pd.sample_params(bands))
        torch.testing.assert_close(out["image"], normalise(by_hand, mean, std))
        assert torch.equal(out["mask"], torch.zeros(9, 11, dtype=torch.int64))
        changed += not torch.allclose(by_hand, raw)
    assert changed >= 6


def test_saturation_and_hue_by_hand_and_only_for_three_bands():
    pd = PhotometricDistortion()
    px = lambda *v: torch.tensor(v, dtype=torch.float32)[:, None, None]  # noqa: E731
    base = {"brightness": None, "contrast": None, "contrast_first": True}
    # hue +30 OpenCV units = +60°: red → yellow; saturation × 0.5 pulls channels halfway to the maximum
    torch.testing.assert_close(pd.apply(px(255, 0, 0), {**base, "hue": 30, "saturation": None}), px(255, 255, 0))
    torch.testing.assert_close(pd.apply(px(200, 100, 0), {**base, "hue": None, "saturation": 0.5}),
                               px(200, 150, 100))
    torch.testing.assert_close(pd.apply(px(10, 20, 30), {**base, "hue": 0, "saturation": 1.0}), px(10, 20, 30))
    assert set(pd.sample_params(3)) == {"brightness", "contrast", "contrast_first", "saturation", "hue"}
    assert set(PhotometricDistortion().sample_params(4)) == {"brightness", "contrast",
                                                                                  "contrast_first"}


def test_photometric_parameter_ranges():
    pd = PhotometricDistortion()
    torch.manual_seed(0)
    draws = [pd.sample_params(4) for _ in range(600)]
    bright = [d["brightness"] for d in draws if d["brightness"] is not None]
    contrast = [d["contrast"] for d in draws if d["contrast"] is not None]
    assert 240 < len(bright) < 360 and 240 < len(contrast) < 360
    assert -32 <= min(bright) < -28 and 28 < max(bright) <= 32
    assert 0.5 <= min(contrast) < 0.55 and 1.45 < max(contrast) <= 1.5
    assert raw_value_range("uint8") == (0.0, 255.0) and raw_value_range("uint16") is None


# ------------------------------------------------------------------------------------------------- resize
def test_resize_rule_and_statistics():
    rr = RandomResize((0.5, 2.0), base=512, max_size=1024)
    assert rr.size_for(512, 512, 1.0) == (512, 512)
    assert rr.size_for(400, 600, 1.0) == (512, 768)  # short side to 512
    assert rr.size_for(512, 2048, 1.0) == (256, 1024)  # elongated: long side capped at 1024 × r
    assert rr.size_for(300, 200, 0.6) == (461, 307)  # int(side · f + 0.5)
    assert RandomResize((0.5, 2.0), base=512, max_size=None).size_for(512, 2048, 1.0) == (512, 2048)
    torch.manual_seed(0)
    shorts = torch.tensor([min(rr.sample_size(512, 768)) for _ in range(4000)], dtype=torch.float64)
    assert 256 <= shorts.min() < 262 and 1018 < shorts.max() <= 1024
    assert abs(shorts.mean() - 640) < 10  # U(0.5, 2.0) × 512
    assert abs(shorts.std() - 1.5 * 512 / 12 ** 0.5) < 10
    low = (shorts < 512).double().mean()
    assert abs(low - 1 / 3) < 0.03

    torch.manual_seed(1)
    sample, _ = coordinate_sample()
    out = RandomResize((0.6, 1.2), base=20, max_size=None)(sample)
    h, w = out["mask"].shape
    assert h == w and 12 <= h <= 24 and tuple(out["image"].shape) == (4, h, w)


def test_resize_needs_crop_and_demo_pipeline_is_hflip_only():
    with pytest.raises(ValueError, match="needs data.augment.crop"):
        build_train_transforms(AugmentConfig(resize_scale=[0.5, 2.0]), Normalize([0.0], [1.0]))
    demo = load_config(demo_config_path())
    pipeline = build_train_transforms(demo.data.augment, Normalize([0.0] * 4, [1.0] * 4))
    assert len(pipeline.transforms) == 2 and isinstance(pipeline.transforms[0], RandomFlip)
    assert isinstance(pipeline.transforms[1], Normalize)
    assert (pipeline.transforms[0].horizontal, pipeline.transforms[0].vertical) == (0.5, 0.0)
    full = build_train_transforms(AugmentConfig(resize_scale=[0.6, 1.2], crop=8, photometric=True),
                                  Normalize([0.0] * 4, [1.0] * 4))
    assert [type(t).__name__ for t in full.transforms] == ["RandomResize", "RandomCrop", "RandomFlip",
                                                            "PhotometricDistortion", "Normalize", "Pad"]
    cfg = load_config(None, ["data.augment.crop=512", "data.augment.resize_scale=[0.5, 2.0]"])
    assert cfg.data.augment.crop == 512 and cfg.data.augment.resize_scale == [0.5, 2.0]


def test_random_choice_resize_is_the_public_short_side_rule():
    from rsmoe.data.transforms import RandomChoiceResize

    choices = [int(512 * x * 0.1) for x in range(6, 13)]  # the public multispectral configs
    assert choices == [307, 358, 409, 460, 512, 563, 614]
    rr = RandomChoiceResize(choices, max_size=1024)
    torch.manual_seed(0)
    sizes = [rr.sample_size(512, 768) for _ in range(700)]
    shorts = [min(s) for s in sizes]
    assert set(shorts) == set(choices)  # every choice drawn, nothing else
    assert all(abs(max(s) - 1.5 * min(s)) <= 1 for s in sizes)  # aspect ratio kept
    assert max(abs(shorts.count(c) / 700 - 1 / 7) for c in choices) < 0.05  # uniform
    torch.manual_seed(1)
    long_ones = {RandomChoiceResize([1000], max_size=1024).sample_size(200, 1000) for _ in range(3)}
    assert long_ones == {(205, 1024)}  # elongated: the long side is capped, int(200 · 1.024 + 0.5) = 205
    with pytest.raises(ValueError):
        RandomChoiceResize([512, 2048], max_size=1024)
    pipeline = build_train_transforms(AugmentConfig(resize_choices=choices, crop=8), Normalize([0.0] * 4, [1.0] * 4))
    assert type(pipeline.transforms[0]).__name__ == "RandomChoiceResize"
