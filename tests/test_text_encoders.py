"""Frozen text encoders for the MPerS text path: tiny CLIP, sentence splitting of long captions, local folders,
and a one-line error for a tokenizer that loads empty."""
from __future__ import annotations

import pytest
import torch

from rsmoe.text.encoders import TextEncoder, split_sentences, tiny_clip_tokenizer

SENTENCES = [
    "Water lies in the upper left of the image.",
    "Trees cover the centre and the lower right.",
    "A road runs along the bottom edge!",
    "Two buildings sit to the right of the road?",
    "Low vegetation fills the rest.",
]


def test_tiny_encoder_shape_determinism_and_frozen():
    enc = TextEncoder.tiny(seed=0)
    texts = ["building", "impervious surfaces next to low vegetation", ""]
    out = enc.encode(texts)
    assert out.shape == (3, enc.dim) == (3, 32) and out.dtype == torch.float32
    assert torch.equal(out, TextEncoder.tiny(seed=0).encode(texts))  # same seed, same vectors
    assert not torch.allclose(out, TextEncoder.tiny(seed=1).encode(texts))
    assert TextEncoder.tiny(seed=0, dim=16).encode(["x"]).shape == (1, 16)
    assert enc.name == "tiny-clip-text-s0-d32"
    assert not any(p.requires_grad for p in enc.model.parameters()) and not enc.model.training
    # One text encodes the same alone and in a batch (padding does not leak into the pooled EOS vector).
    torch.testing.assert_close(enc.encode([texts[1]])[0], out[1], rtol=0, atol=1e-5)
    with pytest.raises(TypeError):
        enc.encode("a single string")


def test_tiny_tokenizer_covers_any_text():
    tok = tiny_clip_tokenizer()
    ids = tok("Ünïcode, 45% — the BUILDING’s roof")["input_ids"]
    assert tok.unk_token_id not in ids[1:-1]
    assert tok.convert_ids_to_tokens(tok("the")["input_ids"])[1] == "the</w>"  # merges apply


def test_long_caption_is_mean_of_its_sentence_encodings():
    enc = TextEncoder.tiny(seed=0)
    long = " ".join(SENTENCES)
    assert len(enc.tokenizer(long, verbose=False)["input_ids"]) > enc.max_length  # longer than the 77-token context
    assert enc.chunks(long) == SENTENCES == split_sentences(long)
    expected = enc.encode(SENTENCES).mean(dim=0)
    torch.testing.assert_close(enc.encode([long])[0], expected, rtol=0, atol=1e-5)
    short = SENTENCES[0] + " " + SENTENCES[1]
    assert enc.chunks(short) == [short]  # what fits is encoded whole
    # A single sentence longer than the context is cut into word windows that fit.
    run_on = "water " * 40
    pieces = enc.chunks(run_on)
    assert len(pieces) >= 2 and all(len(enc.tokenizer(p)["input_ids"]) <= enc.max_length for p in pieces)


def test_from_pretrained_folder_roundtrip_and_full_clip_folder(tmp_path):
    from rsmoe.text.quality import ClipScorer

    enc = TextEncoder.tiny(seed=3)
    enc.save_pretrained(tmp_path / "text")
    again = TextEncoder.from_pretrained(tmp_path / "text")
    assert again.name == "text:projection" and again.dim == enc.dim
    torch.testing.assert_close(again.encode(SENTENCES), enc.encode(SENTENCES), rtol=0, atol=1e-6)

    clip = ClipScorer.tiny(seed=0, dim=16)
    clip.save_pretrained(tmp_path / "clip")  # a full CLIPModel folder: the text tower + projection are taken
    text_tower = TextEncoder.from_pretrained(tmp_path / "clip", name="my-clip")
    assert text_tower.name == "my-clip" and text_tower.dim == 16
    torch.testing.assert_close(text_tower.encode(["water"]), clip.text_embeddings(["water"]), rtol=0, atol=1e-6)
    pooled = TextEncoder.from_pretrained(tmp_path / "clip", pooling="pooler")
    assert pooled.dim == 32 and pooled.name == "clip:pooler"


def test_empty_tokenizer_and_missing_folder_raise_one_line_errors(tmp_path):
    from transformers import CLIPTokenizer

    from rsmoe.text.encoders import check_tokenizer
    from rsmoe.text.quality import ClipScorer

    # A CLIP folder without tokenizer files: transformers hands back a tokenizer of special tokens only.
    ClipScorer.tiny(seed=0).model.save_pretrained(tmp_path / "clip-no-tokenizer")
    with pytest.raises(ValueError, match="tokenizer loaded empty") as info:
        TextEncoder.from_pretrained(tmp_path / "clip-no-tokenizer")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="tokenizer loaded empty"):
        check_tokenizer(CLIPTokenizer(vocab={"<|startoftext|>": 0, "<|endoftext|>": 1}, merges=[]), "here")
    # A text-tower folder without tokenizer files: transformers raises; the message stays one line.
    TextEncoder.tiny(seed=0).model.save_pretrained(tmp_path / "text-no-tokenizer")
    with pytest.raises(ValueError, match="no usable tokenizer") as info:
        TextEncoder.from_pretrained(tmp_path / "text-no-tokenizer")
    assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="not found") as info:
        TextEncoder.from_pretrained(tmp_path / "nowhere")
    assert "\n" not in str(info.value)
