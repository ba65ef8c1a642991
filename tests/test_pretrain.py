"""rsmoe pretrain: the recipes' first steps are bitwise reproducible, the BPE tokenizer learns the classic merges,
the CLI documents and round-trips its recipes, and the training pieces compute what they claim."""
import argparse
from collections import Counter

import pytest
import torch

from rsmoe.pretrain import augment
from rsmoe.pretrain.loop import Schedule

TINY = 1  # corpus acquisitions (16 tiles) for the first-steps runs


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _run(recipe, seed, steps):
    """The recipe's model after ``steps`` steps of batch 4 on a one-acquisition corpus."""
    if recipe.startswith("backbone"):
        from rsmoe.pretrain.backbone import pretrain_backbone

        return pretrain_backbone(recipe.split("-")[1], steps, 4, 1e-3, seed, 0, TINY, warmup=1, log=None)[0]
    if recipe == "depth":
        from rsmoe.pretrain.depth import pretrain_depth

        return pretrain_depth(steps, 4, 1e-3, seed, 0, TINY, warmup=1, log=None)[0]
    from rsmoe.pretrain.clip import pretrain_clip

    return pretrain_clip(steps, 4, 1e-3, seed, 0, TINY, warmup=1, log=None)[0]


@pytest.mark.parametrize("recipe", ["backbone-xsensor", "backbone-mim", "depth", "clip"])
def test_first_steps_are_bitwise_reproducible(recipe):
    init = _state(_run(recipe, seed=5, steps=0))
    first, second = _state(_run(recipe, seed=5, steps=2)), _state(_run(recipe, seed=5, steps=2))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    moved = [k for k in first if first[k].is_floating_point() and not torch.equal(first[k], init[k])]
    assert len(moved) > len(first) // 2  # the steps really trained the model
    other = _state(_run(recipe, seed=6, steps=0))
    assert not all(torch.equal(other[k], init[k]) for k in init)  # the seed draws the weights


def test_learn_merges_classic_example():
    from rsmoe.pretrain.clip import learn_merges

    counts = Counter({"low": 5, "lower": 2, "newest": 6, "widest": 3})
    # by hand: (e,s) and (s,t</w>) both occur 9 times, the smaller pair wins; then (es,t</w>) 9; then (l,o) 7;
    # then (e,w), (n,e), (w,est</w>) tie at 6 and (e,w) is the smallest
    assert learn_merges(counts, max_merges=4) == [("e", "s"), ("es", "t</w>"), ("l", "o"), ("e", "w")]
    assert len(learn_merges(Counter({"ab": 1}))) == 1  # stops when every word is one symbol


def test_caption_tokenizer_keeps_caption_words_whole(tmp_path):
    from transformers import AutoTokenizer

    from rsmoe.pretrain.clip import caption_tokenizer

    captions = ["This image contains: water (48%), bare soil (<1%).", "One region of forest lies in the upper left."]
    tok = caption_tokenizer(captions)
    for word in ("contains", "water", "forest", "upper", "region", "soil"):
        assert tok.tokenize(word) == [word + "</w>"]
    assert tok.tokenize("zebra")  # an unseen word still tokenises (byte-level characters)
    tok.save_pretrained(str(tmp_path))
    again = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert again(captions)["input_ids"] == tok(captions)["input_ids"]


def test_schedule_and_patch_mask():
    s = Schedule(steps=110, lr=1.0, warmup=10, final_lr_ratio=0.1)
    assert s.factor(0) == pytest.approx(0.1) and s.factor(9) == pytest.approx(1.0)
    assert s.factor(10) == pytest.approx(1.0) and s.factor(60) == pytest.approx(0.55)  # half-way down the cosine
    assert s.factor(110) == pytest.approx(0.1)
    g = torch.Generator().manual_seed(0)
    mask = augment.random_patch_mask(5, (8, 8), 0.5, g)
    assert mask.shape == (5, 64) and mask.sum(1).tolist() == [32] * 5


def test_dihedral_moves_image_and_heights_together():
    g = torch.Generator().manual_seed(1)
    image = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    heights = image[:, 0].clone()
    out_image, out_heights = augment.dihedral([image, heights], g)
    assert torch.equal(out_image[:, 0], out_heights)
    for i in range(2):  # each sample is one of the eight symmetries of its own square
        candidates = [torch.rot90(image[i], k, (-2, -1)) for k in range(4)]
        candidates += [torch.flip(c, (-1,)) for c in candidates]
        assert any(torch.equal(out_image[i], c) for c in candidates)


def test_patchify_matches_the_token_order():
    from rsmoe.pretrain.mim import patchify

    image = torch.randn(2, 3, 16, 16)
    patches = patchify(image, 8)
    assert patches.shape == (2, 4, 192)
    # token 1 is the top-right patch (row-major), channel-major inside the patch like the conv kernel
    assert torch.equal(patches[:, 1].reshape(2, 3, 8, 8), image[:, :, :8, 8:])


def test_cli_documents_and_round_trips_the_recipe():
    from rsmoe.cli import build_parser
    from rsmoe.pretrain.cli import RECIPES
    from rsmoe.pretrain.recipes import command_line

    parser = build_parser("pretrain")
    for name in RECIPES:
        sub = parser._subparsers._group_actions[0].choices["pretrain"]._subparsers._group_actions[0].choices[name]
        text = sub.format_help()
        for word in ("--steps", "--batch", "--lr", "--seed", "--corpus-seed", "--out", "Output"):
            assert word in text, (name, word)
        args = parser.parse_args(["pretrain", name, "--out", "somewhere", "--steps", "7", "--seed", "3"])
        again = parser.parse_args(command_line(args).split()[1:])
        assert vars(again) == vars(args)
        assert args.steps == 7 and args.lr == RECIPES[name]["lr"]
