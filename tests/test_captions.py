"""Captions for MPerS: prompts, statistics captions, CLIP check and regeneration, the SQLite store (resumable after a
kill), the OpenAI-compatible HTTP backend with retries, and a tiny local VLM. Nothing here reaches the network
beyond 127.0.0.1."""
from __future__ import annotations

import base64
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rsmoe.text.captioners import CaptionError, OpenAICompatibleCaptioner, png_bytes
from rsmoe.text.prompts import PROMPT_IDS, prompt, refined_prompt
from rsmoe.text.quality import ClipScorer, regenerate_until_passing, similarity
from rsmoe.text.statistics import statistics_captions
from rsmoe.text.store import CaptionStore

CLASSES = ["building", "tree", "water", "car"]


# ----------------------------------------------------------------------------------------------------------------
# A scripted OpenAI-compatible server on 127.0.0.1
# ----------------------------------------------------------------------------------------------------------------

class ScriptedServer:
    """Answers ``POST /v1/chat/completions`` by a script: ``action(n)`` for the n-th request (0-based) is one of
    ``500``, ``sleep`` (answers after ``sleep_s``, later than the client's timeout), ``malformed``, ``ok``.
    Serves at most ``max_requests`` requests or until ``deadline_s``, then stops by itself."""

    def __init__(self, action, max_requests: int, sleep_s: float = 1.0, delay_s: float = 0.0,
                 deadline_s: float = 40.0) -> None:
        self.action, self.sleep_s, self.delay_s = action, sleep_s, delay_s
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server_self.lock:
                    n = len(server_self.requests)
                    server_self.requests.append(json.loads(body))
                    server_self.headers.append(dict(self.headers))
                act = server_self.action(n)
                try:
                    if act == "500":
                        self.send_response(500)
                        self.end_headers()
                        self.wfile.write(b"internal error")
                        return
                    if act == "sleep":
                        time.sleep(server_self.sleep_s)
                    elif server_self.delay_s:
                        time.sleep(server_self.delay_s)
                    if act == "malformed":
                        payload = b"{\"choices\": [ this is not json"
                    else:
                        payload = json.dumps({"choices": [{"message": {"role": "assistant",
                                                                       "content": f"caption {n}"}}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class Server(ThreadingHTTPServer):
            accepted = 0

            def verify_request(self, request, client_address):
                self.accepted += 1
                return True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.timeout = 0.2
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        end = time.monotonic() + deadline_s
        self._stop = False

        def serve():
            while self.httpd.accepted < max_requests and time.monotonic() < end and not self._stop:
                self.httpd.handle_request()
            self.httpd.server_close()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def stop(self) -> None:
        self._stop = True
        self.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """urllib honours proxy variables; the scripted servers live on 127.0.0.1 (subprocesses inherit this)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _image(h: int = 24, w: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Prompts and statistics captions
# ----------------------------------------------------------------------------------------------------------------

def test_prompts_carry_the_vocabulary_and_refined_prompts_ask_for_counts_and_positions():
    for pid in PROMPT_IDS:
        text = prompt(pid, CLASSES)
        assert "building, tree, water, car" in text
    assert "land cover types" in prompt(1, CLASSES)
    assert "%" in prompt(2, CLASSES)
    assert "paragraph" in prompt(3, CLASSES) and "relative" in prompt(3, CLASSES)
    r = refined_prompt(2, CLASSES, attempt=2)
    assert "building, tree, water, car" in r and "how many" in r and "upper left" in r and "percent" in r
    assert refined_prompt(2, CLASSES, 3) != r
    with pytest.raises(ValueError, match="prompt id"):
        prompt(4, CLASSES)


def test_statistics_captions_state_classes_percentages_positions():
    lm = np.full((30, 30), 1, dtype=np.int64)  # tree everywhere …
    lm[0:12, 0:12] = 0  # … a building block in the upper left (144 px)
    lm[21:30, 18:30] = 2  # water in the lower right (108 px)
    lm[14:16, 14:16] = 3  # a car in the centre (4 px)
    lm[0:3, 27:30] = 255  # ignored corner (9 px): 891 valid pixels
    first, second, third = statistics_captions(lm, CLASSES, ignore_index=255)
    assert first == "This image contains the following land cover types: tree, building, water, car."
    # 635/891 = 71.3 %, 144/891 = 16.2 %, 108/891 = 12.1 %, 4/891 = 0.45 %
    assert second == "This image contains: tree (71%), building (16%), water (12%), car (<1%)."
    assert "dominated by tree (71% of the image)" in third
    assert "One region of building lies in the upper left of the image." in third
    assert "One region of water lies in the lower right of the image." in third
    assert "Small amounts of car are also present." in third
    assert "Regions of building lie mostly to the upper left of those of tree, and the two adjoin each other." in third
    assert statistics_captions(lm, CLASSES) == [first, second, third]  # deterministic

    # Two classes kept apart by a third: the two largest do not adjoin.
    lm2 = np.zeros((24, 24), dtype=np.int64)  # building on the left
    lm2[:, 14:] = 1  # tree on the right
    lm2[:, 10:14] = 2  # a water channel between them
    third2 = statistics_captions(lm2, CLASSES)[2]
    assert "Regions of tree lie mostly to the right of those of building, separated from them." in third2
    assert "building (42%), tree (42%), water (17%)" in statistics_captions(lm2, CLASSES)[1]
    assert "no labelled" in statistics_captions(np.full((4, 4), 255), CLASSES)[0]
    with pytest.raises(ValueError, match="label value 7"):
        statistics_captions(np.full((4, 4), 7), CLASSES)


# ----------------------------------------------------------------------------------------------------------------
# CLIP check and regeneration
# ----------------------------------------------------------------------------------------------------------------

def test_similarity_is_cos_over_two_plus_half_in_unit_interval():
    g = torch.Generator().manual_seed(0)
    v, t = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    s = similarity(v, t)
    vn, tn = v.numpy().astype(np.float64), t.numpy().astype(np.float64)
    direct = (vn * tn).sum(1) / (np.linalg.norm(vn, axis=1) * np.linalg.norm(tn, axis=1)) / 2 + 0.5
    np.testing.assert_allclose(s.numpy(), direct, rtol=0, atol=1e-12)
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    assert float(similarity(v[0], v[0])) == pytest.approx(1.0)
    assert float(similarity(v[0], -v[0])) == pytest.approx(0.0)
    assert float(similarity(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))) == pytest.approx(0.5)


def test_regeneration_below_tau_stops_at_max_attempts_and_keeps_best():
    prompts_seen = []

    def generate(attempt):
        p = prompt(1, CLASSES) if attempt == 1 else refined_prompt(1, CLASSES, attempt)
        prompts_seen.append(p)
        return p, f"caption {attempt}"

    scores = {"caption 1": 0.30, "caption 2": 0.50, "caption 3": 0.40}
    r = regenerate_until_passing(generate, scores.__getitem__, tau=0.55, max_attempts=3)
    assert (r.text, r.score, r.attempts, r.passed) == ("caption 2", 0.50, 3, False)
    assert prompts_seen == [prompt(1, CLASSES), refined_prompt(1, CLASSES, 2), refined_prompt(1, CLASSES, 3)]
    assert [h[2] for h in r.history] == [0.30, 0.50, 0.40]
    assert r.prompt == refined_prompt(1, CLASSES, 2)

    prompts_seen.clear()
    scores = {"caption 1": 0.30, "caption 2": 0.60, "caption 3": 0.99}
    r = regenerate_until_passing(generate, scores.__getitem__, tau=0.55, max_attempts=3)
    assert (r.text, r.attempts, r.passed) == ("caption 2", 2, True) and len(prompts_seen) == 2

    prompts_seen.clear()
    r = regenerate_until_passing(generate, {"caption 1": 0.7}.__getitem__, tau=0.55, max_attempts=3)
    assert (r.attempts, r.passed) == (1, True)
    r = regenerate_until_passing(generate, None, tau=0.55, max_attempts=3)  # no scorer: one generation
    assert (r.attempts, r.passed, r.score) == (1, None, None)


def test_clip_scorer_tiny_and_from_folder(tmp_path):
    scorer = ClipScorer.tiny(seed=0)
    img = _image()
    texts = ["water in the upper left.", "trees and a road"]
    s = scorer.scores(img, texts)
    emb_v = scorer.image_embedding(img)
    emb_t = scorer.text_embeddings(texts)
    assert s == pytest.approx([float(x) for x in similarity(emb_v.unsqueeze(0), emb_t)])
    assert all(0.0 <= x <= 1.0 for x in s)
    scorer.save_pretrained(tmp_path / "clip")
    again = ClipScorer.from_pretrained(tmp_path / "clip")
    assert again.scores(img, texts) == pytest.approx(s, abs=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# The store
# ----------------------------------------------------------------------------------------------------------------

def test_store_done_hash_failures_and_embeddings(tmp_path):
    path = tmp_path / "c.sqlite"
    with CaptionStore(path) as st:
        assert st.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        for pid in PROMPT_IDS:
            st.put_caption("a.tif", "h1", "m1", pid, f"a m1 {pid}", score=0.6, attempts=1, passed=True)
            st.put_caption("b.tif", "h2", "m1", pid, f"b m1 {pid}")
        st.put_caption("a.tif", "h1", "m2", 1, "a m2 1")
        st.put_caption("a.tif", "h1", "m2", 2, "a m2 2")
        st.put_failure("a.tif", "h1", "m2", 3, "HTTP 500 after 3 requests", requests=3)
        assert st.done("a.tif", "m1", 1, "h1")
        assert not st.done("a.tif", "m1", 1, "changed-hash")  # a changed image is redone
        assert not st.done("a.tif", "m2", 3, "h1")  # failed is not done
        assert st.get("a.tif", "m2", 3)["error"] == "HTTP 500 after 3 requests"
        pending = st.missing_embeddings("enc")
        assert len(pending) == 8 and all(text for *_, text in pending)
        st.put_embeddings("enc", [k[:3] for k in pending], torch.arange(8 * 4, dtype=torch.float32).view(8, 4))
        assert st.missing_embeddings("enc") == []

    with CaptionStore(path, readonly=True) as reader:
        emb, present = reader.embeddings_for(["a.tif", "b.tif", "zzz.tif"], ["m1", "m2", "m3"], "enc")
        assert emb.shape == (3, 3, 3, 4) and emb.dtype == torch.float32
        assert present.tolist() == [[True, False, False], [True, False, False], [False, False, False]]
        _, per_prompt = reader.embeddings_for(["a.tif"], ["m2"], "enc", per_prompt=True)
        assert per_prompt.tolist() == [[[True, True, False]]]
        key_order = [(i, c, p) for i, c, p, _ in pending]
        k = key_order.index(("b.tif", "m1", 2))
        assert emb[1, 0, 1].tolist() == [float(4 * k + j) for j in range(4)]
        assert float(emb[2].abs().sum()) == 0.0
        with pytest.raises(ValueError, match="no text embeddings for encoder 'other'"):
            reader.embeddings_for(["a.tif"], ["m1"], "other")
        import pickle

        copy = pickle.loads(pickle.dumps(reader))  # data-loader workers get their own connection
        assert torch.equal(copy.embeddings_for(["a.tif", "b.tif", "zzz.tif"], ["m1", "m2", "m3"], "enc")[0], emb)
        copy.close()

    with CaptionStore(path) as st:  # replacing a caption drops its cached vector
        st.put_caption("a.tif", "h1b", "m1", 1, "new text")
        assert st.missing_embeddings("enc") == [("a.tif", "m1", 1, "new text")]
        st.acquire_writer()
        with pytest.raises(ValueError, match="another caption run"):
            CaptionStore(path).acquire_writer()


# ----------------------------------------------------------------------------------------------------------------
# OpenAI-compatible backend
# ----------------------------------------------------------------------------------------------------------------

def test_openai_backend_retries_500_timeout_malformed_then_succeeds(monkeypatch):
    script = ["500", "sleep", "malformed", "ok"]
    server = ScriptedServer(lambda n: script[n], max_requests=4, sleep_s=1.0)
    monkeypatch.setenv("RSMOE_TEST_KEY", "sk-test")
    waits = []
    cap = OpenAICompatibleCaptioner(server.url, "tiny-vlm", api_key_env="RSMOE_TEST_KEY", timeout=0.4,
                                    retries=4, backoff=0.01, sleep=waits.append)
    img = _image()
    text = cap.caption(img, "Which land cover types are present?")
    server.thread.join(timeout=10)
    assert text == "caption 3"
    assert cap.requests == 4 and server.count == 4
    assert waits == [0.01, 0.02, 0.04]  # exponential backoff between the 4 attempts
    body = server.requests[-1]
    content = body["messages"][0]["content"]
    assert body["model"] == "tiny-vlm" and content[0] == {"type": "text", "text": "Which land cover types are present?"}
    url = content[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    from PIL import Image

    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    np.testing.assert_array_equal(decoded, img)
    assert server.headers[0]["Authorization"] == "Bearer sk-test"


def test_openai_backend_gives_up_after_bounded_retries():
    server = ScriptedServer(lambda n: "500", max_requests=3)
    cap = OpenAICompatibleCaptioner(server.url, "m", timeout=2, retries=2, backoff=0.0, sleep=lambda s: None)
    with pytest.raises(CaptionError, match="failed after 3 request") as info:
        cap.caption(_image(), "p")
    assert info.value.requests == 3 and server.count == 3
    server.thread.join(timeout=10)
    assert not server.thread.is_alive()  # bounded: the server stopped by itself


def _synthetic(tmp_path: Path, train: int) -> Path:
    from rsmoe.data.synthetic import synthesize

    small = {"GF-2": {"train": train}, "GF-1": {"test": 1}, "PlanetScope": {"test": 1}, "Sentinel-2": {"test": 1}}
    return synthesize(tmp_path / "data", tile=32, tiles_per_domain=small, datasets=("multispectral",),
                      show_progress=False)["multispectral"]


def test_pipeline_records_a_failed_item_and_continues(tmp_path):
    from rsmoe.text.pipeline import run_captions

    data = _synthetic(tmp_path, train=2)
    # The first item uses up its 3 requests on HTTP 500s; every later request is answered.
    server = ScriptedServer(lambda n: "500" if n < 3 else "ok", max_requests=3 + 5)
    cfg = {"dataset": str(data), "splits": ["train"], "store": str(tmp_path / "c.sqlite"),
           "captioners": [{"name": "remote", "backend": "openai", "base_url": server.url, "model": "m",
                           "timeout": 5, "retries": 2, "backoff": 0.0}]}
    summary = run_captions(cfg, progress=False, log=lambda msg: None)
    assert (summary["items"], summary["done"], summary["failed"], summary["requests"]) == (6, 5, 1, 8)
    with CaptionStore(tmp_path / "c.sqlite", readonly=True) as st:
        rows = st.rows()
        failed = [r for r in rows if r["status"] == "failed"]
        assert len(rows) == 6 and len(failed) == 1
        assert failed[0]["prompt_id"] == 1 and failed[0]["requests"] == 3 and "HTTP 500" in failed[0]["error"]
        assert sorted(r["text"] for r in rows if r["status"] == "ok") == [f"caption {n}" for n in range(3, 8)]
    server.thread.join(timeout=10)


# ----------------------------------------------------------------------------------------------------------------
# Resumable: kill a run midway, rerun, only the rest is done
# ----------------------------------------------------------------------------------------------------------------

def test_killed_run_resumes_with_only_the_remaining_items(tmp_path):
    from rsmoe.text.pipeline import add_captions_arguments, run_captions_from_args

    data = _synthetic(tmp_path, train=4)
    server = ScriptedServer(lambda n: "ok", max_requests=40, delay_s=0.25, deadline_s=55)
    store = tmp_path / "captions.sqlite"
    cfg_path = tmp_path / "captions.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "dataset": str(data), "splits": ["train"], "store": str(store),
        "captioners": [{"name": "slow-vlm", "backend": "openai", "base_url": server.url, "model": "m",
                        "timeout": 10, "retries": 0}],
        "encoder": {"path": "tiny"},
    }))
    total = 4 * len(PROMPT_IDS)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "rsmoe", "captions", "--config", str(cfg_path),
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    committed = 0
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and proc.poll() is None:
            if store.is_file():
                try:
                    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
                    committed = con.execute("SELECT COUNT(*) FROM captions WHERE status = 'ok'").fetchone()[0]
                    con.close()
                except sqlite3.OperationalError:
                    committed = 0
                if committed >= 3:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
        proc.stderr.close()
    with CaptionStore(store, readonly=True) as st:
        done_before = st.count("ok")
    assert 3 <= done_before < total
    calls_before = server.count  # includes a request that may have been in flight at the kill

    args = add_captions_arguments(__import__("argparse").ArgumentParser()).parse_args(
        ["--config", str(cfg_path), "--no-progress"])
    assert run_captions_from_args(args) == 0
    calls_rerun = server.count - calls_before
    server.stop()
    assert calls_rerun == total - done_before  # nothing finished was asked for again
    with CaptionStore(store, readonly=True) as st:
        assert st.count("ok") == total and st.count() == total
        ids = sorted({r["image_id"] for r in st.rows()})
        emb, present = st.embeddings_for(ids, ["slow-vlm"], "tiny-clip-text-s0-d32")
        assert emb.shape == (4, 1, len(PROMPT_IDS), 32) and bool(present.all())


# ----------------------------------------------------------------------------------------------------------------
# Statistics captioner in the pipeline: ground truth only on label splits
# ----------------------------------------------------------------------------------------------------------------

def test_pipeline_statistics_captioner_uses_masks_of_train_split_only(tmp_path):
    from rsmoe.data.prepared import load_dataset_info, read_manifest
    from rsmoe.data.raster import read_raster
    from rsmoe.text.pipeline import run_captions, tile_rgb

    data = _synthetic(tmp_path, train=2)
    cfg = {"dataset": str(data), "splits": ["train", "test"], "store": str(tmp_path / "s.sqlite"),
           "captioners": [{"name": "statistics", "backend": "statistics"}]}
    summary = run_captions(cfg, progress=False)
    assert summary["done"] == 6 and summary["not_applicable"] == 9  # 3 test tiles x 3 prompts are left out
    row = next(r for r in read_manifest(data) if r["split"] == "train")
    mask = read_raster(data / row["mask"], squeeze=True)
    classes = load_dataset_info(data).classes
    with CaptionStore(tmp_path / "s.sqlite", readonly=True) as st:
        assert st.captions_for(row["image"], "statistics") == statistics_captions(mask, classes)
    again = run_captions(cfg, progress=False)
    assert (again["done"], again["skipped"]) == (0, 6)

    rgb = tile_rgb(read_raster(data / row["image"]), [0.49, 0.56, 0.665, 0.8])
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8 and rgb.max() == 255
    assert png_bytes(rgb).startswith(b"\x89PNG")


# ----------------------------------------------------------------------------------------------------------------
# A tiny local VLM (LLaVA: tiny CLIP vision tower + tiny Llama), built and saved here
# ----------------------------------------------------------------------------------------------------------------

def _save_tiny_llava(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, "<image>": 4}
    for c in bytes_to_unicode().values():
        vocab[c] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    template = ("{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image>{{ '\\n' }}{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
                "{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    image_proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=image_proc, tokenizer=tok, patch_size=8,
                               vision_feature_select_strategy="default", chat_template=template,
                               num_additional_image_tokens=1)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8)
    text = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                       bos_token_id=1, eos_token_id=2, pad_token_id=3)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=4, vision_feature_layer=-1,
                      vision_feature_select_strategy="default")
    torch.manual_seed(0)
    LlavaForConditionalGeneration(cfg).save_pretrained(folder)
    processor.save_pretrained(folder)


def test_transformers_captioner_with_a_tiny_local_vlm(tmp_path, monkeypatch):
    from rsmoe.text.captioners import TransformersCaptioner

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _save_tiny_llava(tmp_path / "tiny-llava")
    cap = TransformersCaptioner(tmp_path / "tiny-llava", max_new_tokens=6)
    assert cap.name == "tiny-llava"
    seen = {}
    generate = cap.model.generate

    def spy(**kwargs):
        seen["input_ids"] = kwargs["input_ids"]
        seen["do_sample"] = kwargs.get("do_sample")
        return generate(**kwargs)

    cap.model.generate = spy
    question = "Which land cover types are present?"
    out = cap.caption(_image(40, 50), question)
    assert isinstance(out, str)
    assert question in cap.processor.tokenizer.decode(seen["input_ids"][0])  # the prompt went in
    assert int((seen["input_ids"] == 4).sum()) == 16  # <image> expanded to the 4×4 patches (CLS dropped: "default")
    assert seen["do_sample"] is False and cap.requests == 1
    assert cap.caption(_image(40, 50), question) == out  # greedy: deterministic
    with pytest.raises(FileNotFoundError, match="not found"):
        TransformersCaptioner(tmp_path / "missing")


def test_example_caption_configs_are_valid():
    from rsmoe.text.pipeline import load_captions_config

    paths = sorted((Path(__file__).parent.parent / "configs" / "captions").glob("*.yaml"))
    assert paths
    for path in paths:
        cfg = load_captions_config(path)
        assert cfg.captioners and cfg.store
    cfg = load_captions_config(paths[0], ["captioners.0.timeout=5", "quality.tau=0.6"])
    assert cfg.quality.tau == 0.6
    from rsmoe.config import ConfigError

    with pytest.raises(ConfigError, match="unknown key"):
        load_captions_config({"dataset": "d", "store": "s", "captioners": [{"name": "a", "backend": "statistics"}],
                              "qualty": {}})


def test_pipeline_regenerates_below_tau_with_refined_prompts_and_keeps_best(tmp_path):
    from rsmoe.data.prepared import load_dataset_info, read_manifest
    from rsmoe.data.raster import read_raster
    from rsmoe.sensors import get_sensor
    from rsmoe.text.pipeline import run_captions, tile_rgb

    class Scripted:
        name, requests = "scripted", 0

        def __init__(self):
            self.prompts = []

        def caption(self, image, text_prompt):
            self.requests += 1
            self.prompts.append(text_prompt)
            return ["water in the upper left.", "trees and a road in the centre.", "buildings"][self.requests - 1]

    data = _synthetic(tmp_path, train=1)
    classes = load_dataset_info(data).classes
    base = {"dataset": str(data), "splits": ["train"], "store": str(tmp_path / "q.sqlite"), "prompts": [2],
            "captioners": [{"name": "scripted", "backend": "openai", "base_url": "http://unused", "model": "m"}],
            "quality": {"clip": "tiny", "tau": 1.0, "max_attempts": 3}}
    cap = Scripted()
    summary = run_captions(base, progress=False, captioners={"scripted": cap})
    assert cap.prompts == [prompt(2, classes), refined_prompt(2, classes, 2), refined_prompt(2, classes, 3)]
    assert (summary["done"], summary["regenerated"], summary["passed_rate"]) == (1, 1, 0.0)
    row = read_manifest(data)[0]
    rgb = tile_rgb(read_raster(data / row["image"]), get_sensor(row["sensor"]).wavelengths)
    candidates = ["water in the upper left.", "trees and a road in the centre.", "buildings"]
    scores = ClipScorer.tiny(seed=0).scores(rgb, candidates)
    best = int(np.argmax(scores))
    with CaptionStore(tmp_path / "q.sqlite", readonly=True) as st:
        stored = st.get(row["image"], "scripted", 2)
    assert (stored["attempts"], stored["passed"], stored["requests"]) == (3, 0, 3)
    assert stored["text"] == candidates[best] and stored["score"] == pytest.approx(scores[best], abs=1e-6)
    assert stored["prompt"] == cap.prompts[best]

    cap = Scripted()  # tau 0: the first caption passes, no regeneration
    summary = run_captions({**base, "store": str(tmp_path / "q0.sqlite"), "quality": {"clip": "tiny", "tau": 0.0}},
                           progress=False, captioners={"scripted": cap})
    assert cap.requests == 1 and summary["passed_rate"] == 1.0 and summary["regenerated"] == 0
