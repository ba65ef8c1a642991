"""``rsmoe captions``: caption every tile of a prepared dataset once, check the captions, cache their embeddings.

A captions config (YAML; unknown keys are errors)::

    dataset: data/synthetic/multispectral      # a prepared folder (rsmoe prepare / rsmoe synth)
    splits: [train, val]                       # manifest splits to caption
    domains: null                              # null = every domain
    store: captions/multispectral.sqlite       # the caption store (created if missing)
    prompts: [1, 2, 3]
    label_splits: [train]                      # splits whose ground-truth masks may feed the statistics captioner
    captioners:
      - {name: statistics, backend: statistics}
      - {name: llava-1.5-7b, backend: transformers, model_dir: /models/llava-1.5-7b-hf, max_new_tokens: 160}
      - {name: gpt-4o, backend: openai, base_url: https://api.openai.com/v1, model: gpt-4o,
         api_key_env: OPENAI_API_KEY, timeout: 60}
    quality: {clip: /models/clip-vit-base-patch32, tau: 0.55, max_attempts: 3}   # clip: null = no check
    encoder: {path: /models/clip-vit-base-patch32}                              # path: null = no embeddings

For each selected tile (manifest order) the image is read, its bands nearest 665/560/490 nm are taken as R, G, B
and stretched between the ``stretch`` percentiles of its valid pixels to uint8 (:func:`tile_rgb`). Each
(captioner, prompt) item not already ``ok`` in the store for the same image hash is generated, checked with CLIP
(regenerated with a refined prompt below ``tau``), and committed at once; a failing item is committed as
``failed`` and the run goes on. After the captions, every ``ok`` caption without a vector from the configured
encoder is embedded and cached. Killing the run loses at most the item in progress; rerunning does only the rest.

The statistics captioner **[design]** captions from the tile's ground-truth mask, so it runs only on the splits of
``label_splits`` (default ``[train]``): captions of evaluated images must come from the model's own prediction
(:func:`rsmoe.text.statistics.statistics_captions` at evaluation time), never from their ground truth.

Image hash: sha256 over dtype, shape and bytes of the tile's pixels as stored (and, for label-map captioners, of
the mask too); a re-prepared tile with other pixels, or another mask, is captioned again.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from rsmoe.config import apply_override, build_dataclass, read_yaml
from rsmoe.errors import ConfigError
from rsmoe.data.prepared import load_dataset_info, read_manifest
from rsmoe.data.raster import read_raster
from rsmoe.sensors import display_band_indices, get_sensor
from rsmoe.text.prompts import PROMPT_IDS, prompt, refined_prompt
from rsmoe.text.quality import DEFAULT_MAX_ATTEMPTS, DEFAULT_TAU, regenerate_until_passing
from rsmoe.text.store import CaptionStore


# ----------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class CaptionerSpec:
    """One MLLM (expert). Keys beyond ``name``/``backend`` belong to the backend (see rsmoe.text.captioners)."""

    name: str = ""
    backend: str = ""  # transformers | openai | statistics
    model_dir: str | None = None  # transformers
    max_new_tokens: int | None = None
    device: str | None = None
    dtype: str | None = None
    base_url: str | None = None  # openai
    model: str | None = None
    api_key_env: str | None = None
    timeout: float | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    retries: int | None = None
    backoff: float | None = None
    max_backoff: float | None = None


@dataclass
class QualitySpec:
    """CLIP check: ``clip`` a local CLIP folder, ``tiny`` (random, demo/tests) or null (no check)."""

    clip: str | None = None
    seed: int = 0  # for clip: tiny
    tau: float = DEFAULT_TAU
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


@dataclass
class EncoderSpec:
    """Text encoder whose vectors are cached: ``path`` a local folder, ``tiny``, or null (no embeddings)."""

    path: str | None = None
    name: str | None = None
    seed: int = 0  # tiny
    dim: int = 32  # tiny
    pooling: str = "auto"
    max_length: int | None = None
    batch_size: int = 64
    device: str = "cpu"


@dataclass
class CaptionsConfig:
    dataset: str = ""
    store: str = ""
    splits: list[str] = field(default_factory=lambda: ["train"])
    domains: list[str] | None = None
    prompts: list[int] = field(default_factory=lambda: list(PROMPT_IDS))
    label_splits: list[str] = field(default_factory=lambda: ["train"])
    captioners: list[CaptionerSpec] = field(default_factory=list)
    quality: QualitySpec = field(default_factory=QualitySpec)
    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    stretch: list[float] = field(default_factory=lambda: [2.0, 98.0])
    max_images: int | None = None  # caption at most this many tiles (smoke runs)

    def validate(self) -> "CaptionsConfig":
        if not self.dataset:
            raise ConfigError("captions config: dataset (a prepared folder) is required")
        if not self.store:
            raise ConfigError("captions config: store (the SQLite caption store path) is required")
        if not self.captioners:
            raise ConfigError("captions config: captioners is empty; list at least one {name, backend}")
        names = [c.name for c in self.captioners]
        if len(set(names)) != len(names) or not all(names):
            raise ConfigError(f"captions config: captioner names must be unique and non-empty, got {names}")
        for c in self.captioners:
            if c.backend not in ("transformers", "openai", "statistics"):
                raise ConfigError(f"captions config: captioner {c.name}: backend {c.backend!r} unknown; use "
                                  "transformers, openai or statistics")
        bad = [p for p in self.prompts if p not in PROMPT_IDS]
        if bad or not self.prompts:
            raise ConfigError(f"captions config: prompts {self.prompts} must be a non-empty subset of "
                              f"{list(PROMPT_IDS)}")
        if not 0.0 <= self.quality.tau <= 1.0:
            raise ConfigError(f"captions config: quality.tau must lie in [0, 1], got {self.quality.tau}")
        if self.quality.max_attempts < 1:
            raise ConfigError(f"captions config: quality.max_attempts must be ≥ 1, got {self.quality.max_attempts}")
        if len(self.stretch) != 2 or not 0.0 <= self.stretch[0] < self.stretch[1] <= 100.0:
            raise ConfigError(f"captions config: stretch must be [low, high] percentiles, got {self.stretch}")
        return self


def load_captions_config(
    source: str | Path | dict | CaptionsConfig, overrides: list[str] | tuple = ()
) -> CaptionsConfig:
    """A :class:`CaptionsConfig` from a YAML path, a dict or an existing config, with ``key=value`` overrides."""
    if isinstance(source, CaptionsConfig):
        if overrides:
            data = dataclasses.asdict(source)
        else:
            return source.validate()
    elif isinstance(source, dict):
        data = json.loads(json.dumps(source))  # a deep copy of plain data
    else:
        data = read_yaml(source)
    for assignment in overrides:
        apply_override(data, assignment)
    where = "" if isinstance(source, (dict, CaptionsConfig)) else str(source)
    try:
        cfg = build_dataclass(CaptionsConfig, data, where)
    except ConfigError as e:
        raise ConfigError(f"{where + ': ' if where else ''}{e}") from None
    return cfg.validate()


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------

def tile_rgb(image: np.ndarray, wavelengths: list[float], percentiles: tuple[float, float] = (2.0, 98.0)) -> np.ndarray:
    """A C×H×W tile as H×W×3 uint8: the display bands (true colour, or NIR-R-G false colour for a sensor without a
    blue band: :func:`rsmoe.sensors.display_band_indices`), each stretched between the given percentiles of the
    valid pixels (a pixel zero in every band is no-data and stays black)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != len(wavelengths):
        raise ValueError(f"tile_rgb: image of shape {image.shape} does not match {len(wavelengths)} wavelengths")
    rgb = image[display_band_indices(wavelengths)].astype(np.float64)
    valid = np.any(image != 0, axis=0)
    out = np.zeros(rgb.shape[1:] + (3,), dtype=np.uint8)
    if not valid.any():
        return out
    for k in range(3):
        band = rgb[k]
        lo, hi = np.percentile(band[valid], percentiles)
        if hi <= lo:
            scaled = np.where(valid, 0.5, 0.0)
        else:
            scaled = np.clip((band - lo) / (hi - lo), 0.0, 1.0)
        out[..., k] = np.where(valid, np.round(scaled * 255.0), 0).astype(np.uint8)
    return out


def content_hash(*arrays: np.ndarray) -> str:
    """sha256 over dtype, shape and bytes of each array."""
    h = hashlib.sha256(b"rsmoe-caption-input-v1")
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode("ascii"))
        h.update(a.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------

def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def select_rows(cfg: CaptionsConfig) -> list[dict[str, Any]]:
    """The manifest rows a captions config covers (domains, splits, ``max_images``)."""
    rows = read_manifest(cfg.dataset)
    known = list(dict.fromkeys(r["domain"] for r in rows))
    if cfg.domains is not None:
        unknown = [d for d in cfg.domains if d not in known]
        if unknown:
            raise ConfigError(f"{cfg.dataset}: unknown domain(s) {unknown}; known domains: {known}")
        rows = [r for r in rows if r["domain"] in set(cfg.domains)]
    rows = [r for r in rows if r["split"] in set(cfg.splits)]
    if cfg.max_images is not None:
        rows = rows[: cfg.max_images]
    return rows


TOTAL_KEYS = ("items", "done", "skipped", "failed", "not_applicable", "checked", "passed", "regenerated", "requests",
              "embedded")


@dataclass
class TileInputs:
    """One tile as every captioner of the run sees it: pixels, ground-truth mask (label-map captioners only),
    content hashes (without / with the mask), and the lazily made RGB picture and CLIP image embedding."""

    row: dict[str, Any]
    tile: np.ndarray
    mask: np.ndarray
    hashes: dict[bool, str]
    rgb: np.ndarray | None = None
    image_embedding: Any = None


class CaptionRun:
    """One ``rsmoe captions`` run over a config: :meth:`run` captions every pending (tile, captioner, prompt) item
    into the store, then embeds; the tallies become the summary (see :func:`run_captions`)."""

    def __init__(self, cfg: CaptionsConfig, captioners: dict[str, Any] | None, log: Callable[[str], None]):
        self.cfg = cfg
        self.info = load_dataset_info(cfg.dataset)
        self.rows = select_rows(cfg)
        self.log = log
        self.built: dict[str, Any] = dict(captioners or {})
        self.specs = {c.name: c for c in cfg.captioners}
        self.base_prompts = {pid: prompt(pid, self.info.classes) for pid in cfg.prompts}
        self.per_captioner = {c.name: {"done": 0, "skipped": 0, "failed": 0, "requests": 0} for c in cfg.captioners}
        self.totals = dict.fromkeys(TOTAL_KEYS, 0)
        self.scorer_loaded, self.scorer = False, None

    # -- parts built on first use -------------------------------------------------------------------------------
    def captioner(self, name: str) -> Any:
        if name not in self.built:
            from rsmoe.text.captioners import build_captioner

            spec = {k: v for k, v in dataclasses.asdict(self.specs[name]).items() if v is not None}
            self.built[name] = build_captioner(spec, self.info.classes, self.info.ignore_index)
        return self.built[name]

    def clip_scorer(self) -> Any:
        if not self.scorer_loaded:
            from rsmoe.text.quality import ClipScorer

            q = self.cfg.quality
            self.scorer = (None if q.clip in (None, "") else
                           ClipScorer.tiny(seed=q.seed) if q.clip == "tiny" else ClipScorer.from_pretrained(q.clip))
            self.scorer_loaded = True
        return self.scorer

    # -- the run ------------------------------------------------------------------------------------------------
    def run(self, store: CaptionStore, progress: bool) -> None:
        from tqdm.auto import tqdm

        bar = tqdm(self.rows, desc="captions", unit="tile", disable=not progress)
        for row in bar:
            self.caption_tile(store, self.read_tile(row))
            bar.set_postfix(done=self.totals["done"], skipped=self.totals["skipped"], failed=self.totals["failed"],
                            refresh=False)
        bar.close()
        self.totals["embedded"] = embed_captions(self.cfg, store, [r["image"] for r in self.rows], progress)

    def read_tile(self, row: dict[str, Any]) -> TileInputs:
        tile = read_raster(Path(self.cfg.dataset) / row["image"])
        mask = read_raster(Path(self.cfg.dataset) / row["mask"], squeeze=True)
        return TileInputs(row, tile, mask, {False: content_hash(tile), True: content_hash(tile, mask)})

    def caption_tile(self, store: CaptionStore, t: TileInputs) -> None:
        for spec in self.cfg.captioners:
            uses_labels = spec.backend == "statistics" or getattr(self.built.get(spec.name), "needs_label_map", False)
            if uses_labels and t.row["split"] not in self.cfg.label_splits:
                self.totals["not_applicable"] += len(self.cfg.prompts)
                continue
            for pid in self.cfg.prompts:
                self.totals["items"] += 1
                if store.done(t.row["image"], spec.name, pid, t.hashes[uses_labels]):
                    self.count(spec.name, "skipped")
                    continue
                self.caption_item(store, t, spec.name, pid, t.hashes[uses_labels])

    def caption_item(self, store: CaptionStore, t: TileInputs, name: str, pid: int, image_hash: str) -> None:
        """Generate (with the CLIP check and regeneration), then commit one (tile, captioner, prompt) item."""
        cap = self.captioner(name)
        if t.rgb is None:
            t.rgb = tile_rgb(t.tile, get_sensor(t.row["sensor"]).wavelengths, tuple(self.cfg.stretch))
        attempts = 1 if getattr(cap, "deterministic", False) else self.cfg.quality.max_attempts
        t0, before = time.perf_counter(), int(getattr(cap, "requests", 0))
        try:
            result = regenerate_until_passing(lambda attempt: self.generate(cap, t, pid, attempt),
                                              self.score_function(t), self.cfg.quality.tau, attempts)
        except Exception as e:  # noqa: BLE001 - recorded in the store; the run goes on
            used = int(getattr(cap, "requests", 0)) - before
            store.put_failure(t.row["image"], image_hash, name, pid, first_line(e), requests=used,
                              seconds=time.perf_counter() - t0, prompt=self.base_prompts[pid])
            self.count(name, "failed", used)
            self.log(f"captions: {t.row['image']} {name} prompt {pid}: failed ({first_line(e)})")
            return
        used = int(getattr(cap, "requests", 0)) - before
        store.put_caption(t.row["image"], image_hash, name, pid, result.text, prompt=result.prompt,
                          score=result.score, attempts=result.attempts, requests=used, passed=result.passed,
                          error=result.error, seconds=time.perf_counter() - t0)
        self.count(name, "done", used)
        self.totals["regenerated"] += int(result.attempts > 1)
        if result.passed is not None:
            self.totals["checked"] += 1
            self.totals["passed"] += int(result.passed)

    def generate(self, cap: Any, t: TileInputs, pid: int, attempt: int) -> tuple[str, str]:
        """(prompt, caption) of attempt ``attempt`` (the refined prompt from the second attempt on)."""
        text_prompt = self.base_prompts[pid] if attempt == 1 else refined_prompt(pid, self.info.classes, attempt)
        if getattr(cap, "needs_label_map", False):
            return text_prompt, cap.caption(t.rgb, text_prompt, label_map=t.mask, prompt_id=pid)
        return text_prompt, cap.caption(t.rgb, text_prompt)

    def score_function(self, t: TileInputs) -> Callable[[str], float] | None:
        """The CLIP similarity of a caption to the tile (the image embedding computed once per tile), or None."""
        scorer = self.clip_scorer()
        if scorer is None:
            return None
        if t.image_embedding is None:
            t.image_embedding = scorer.image_embedding(t.rgb)
        return lambda text: scorer.score(t.image_embedding, text)

    def count(self, name: str, outcome: str, requests: int = 0) -> None:
        self.totals[outcome] += 1
        self.per_captioner[name][outcome] += 1
        self.totals["requests"] += requests
        self.per_captioner[name]["requests"] += requests


def run_captions(
    config: str | Path | dict | CaptionsConfig,
    overrides: list[str] | tuple = (),
    progress: bool = True,
    captioners: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run a captions config (path, dict or :class:`CaptionsConfig`) and return a summary dict.

    ``captioners`` maps captioner names to ready objects, replacing those the config would build (tests, custom
    backends). Summary keys: ``items`` (captioner×prompt items considered), ``done`` (captioned ``ok`` by this
    run), ``skipped`` (already ``ok`` in the store), ``failed`` (recorded ``failed`` by this run),
    ``not_applicable`` (statistics items outside ``label_splits``), ``checked``/``passed``/``passed_rate`` (CLIP
    check of this run's captions), ``regenerated``, ``requests`` (backend calls), ``embedded``, ``seconds``,
    ``per_captioner``, ``store``.
    """
    from tqdm.auto import tqdm

    cfg = load_captions_config(config, overrides)
    started = time.perf_counter()
    run = CaptionRun(cfg, captioners, log or (lambda msg: tqdm.write(msg, file=sys.stderr)))
    store = CaptionStore(cfg.store)
    try:
        store.acquire_writer()
        run.run(store, progress)
    finally:
        store.close()
    t = run.totals
    return {**t, "passed_rate": (t["passed"] / t["checked"]) if t["checked"] else None, "images": len(run.rows),
            "seconds": time.perf_counter() - started, "per_captioner": run.per_captioner, "store": str(cfg.store)}


def embed_captions(cfg: CaptionsConfig, store: CaptionStore, image_ids: list[str], progress: bool) -> int:
    """Embed every ``ok`` caption of ``image_ids`` that lacks a vector from the configured encoder."""
    enc_cfg = cfg.encoder
    if enc_cfg.path in (None, ""):
        return 0
    from tqdm.auto import tqdm

    from rsmoe.text.encoders import TextEncoder

    section = {"path": enc_cfg.path, "name": enc_cfg.name}
    if enc_cfg.path == "tiny":
        section.update(seed=enc_cfg.seed, dim=enc_cfg.dim)
    else:
        section.update(pooling=enc_cfg.pooling, max_length=enc_cfg.max_length, batch_size=enc_cfg.batch_size)
    section = {k: v for k, v in section.items() if v is not None}
    name_hint = enc_cfg.name or (None if enc_cfg.path != "tiny" else f"tiny-clip-text-s{enc_cfg.seed}-d{enc_cfg.dim}")
    names = [c.name for c in cfg.captioners]
    if name_hint is not None and not store.missing_embeddings(name_hint, image_ids, names):
        return 0  # nothing to do: do not even load the encoder
    encoder = TextEncoder.from_config(section, device=enc_cfg.device)
    pending = store.missing_embeddings(encoder.name, image_ids, names)
    bar = tqdm(total=len(pending), desc=f"embed {encoder.name}", unit="caption", disable=not progress)
    step = max(1, enc_cfg.batch_size)
    for start in range(0, len(pending), step):
        chunk = pending[start:start + step]
        vectors = encoder.encode([text for *_, text in chunk])
        store.put_embeddings(encoder.name, [(i, c, p) for i, c, p, _ in chunk], vectors)
        bar.update(len(chunk))
    bar.close()
    return len(pending)


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------

def add_captions_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``rsmoe captions`` options to ``parser``."""
    parser.add_argument("--config", required=True, help="captions config YAML (configs/captions/…)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set quality.tau=0.6 or --set captioners.0.timeout=120")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def format_summary(s: dict[str, Any]) -> str:
    rate = "n/a" if s["passed_rate"] is None else f"{100 * s['passed_rate']:.1f}%"
    lines = [
        f"store {s['store']}: {s['images']} tiles, {s['items']} items — {s['done']} captioned, {s['skipped']} "
        f"already done, {s['failed']} failed; CLIP pass rate {rate} ({s['regenerated']} regenerated); "
        f"{s['embedded']} embedded; {s['seconds']:.1f} s",
    ]
    for name, c in s["per_captioner"].items():
        lines.append(f"  {name:<20} done {c['done']:>6}  skipped {c['skipped']:>6}  failed {c['failed']:>6}  "
                     f"requests {c['requests']:>6}")
    if s["failed"]:
        lines.append("  failed items stay in the store with their error; rerun the same command to retry them")
    return "\n".join(lines)


def run_captions_from_args(args: argparse.Namespace) -> int:
    """Run ``rsmoe captions``; returns 0 when every item is captioned, 1 when some failed (they are retried by a
    rerun). Config errors raise :class:`~rsmoe.errors.ConfigError` (a one-line message)."""
    summary = run_captions(args.config, getattr(args, "overrides", []) or [],
                           progress=not getattr(args, "no_progress", False))
    print(json.dumps(summary, indent=2) if getattr(args, "json", False) else format_summary(summary))
    return 1 if summary["failed"] else 0
