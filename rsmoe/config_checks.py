"""The checks behind :meth:`rsmoe.config.Config.validate` and :func:`check_against_dataset`, in one place.

Each failure is a one-line :class:`~rsmoe.errors.ConfigError` that names the key, the value seen and what is
expected. The allowed values of the option keys come from the modules that implement them (one home per table),
imported here only when a config is checked.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import ConfigError

PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def positive(key: str, value: Any, minimum: float = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{key}: must be ≥ {minimum}, got {value!r}")


def fraction(key: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    if not (low <= value <= high):
        raise ConfigError(f"{key}: must be in [{low}, {high}], got {value!r}")


def one_of(key: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}: got {value!r}, expected one of {allowed}")


def check_config(cfg: Any) -> None:
    """Every data-independent check of a :class:`~rsmoe.config.Config`."""
    from .models.build import MODELS

    MODELS.check(cfg.model)
    if not cfg.name or not cfg.output_dir:
        raise ConfigError(f"name and output_dir must be non-empty, got {cfg.name!r} and {cfg.output_dir!r}")
    check_backbone(cfg)
    check_adapter(cfg.adapter)
    check_head(cfg)
    check_data(cfg.data)
    check_eval(cfg.eval)
    check_train(cfg.train)
    if cfg.model == "mpers":
        check_mpers(cfg.mpers)
    if cfg.train.activation_checkpointing and cfg.model != "segmentor":
        raise ConfigError(f"train.activation_checkpointing: only model: segmentor checkpoints its blocks, "
                          f"got model: {cfg.model}; set it to false")


def check_backbone(cfg: Any) -> None:
    b = cfg.backbone
    from .models.backbones import BACKBONES

    BACKBONES.check(b.kind)
    one_of("backbone.band_init", b.band_init, ("cyclic", "wavelength"))
    if b.band_channels is not None and (not b.band_channels or any(c not in (0, 1, 2) for c in b.band_channels)):
        raise ConfigError(f"backbone.band_channels: one RGB channel (0 R, 1 G, 2 B) per band, got {b.band_channels}")
    if b.taps is not None and (any(t < 0 for t in b.taps) or list(b.taps) != sorted(set(b.taps))):
        raise ConfigError(f"backbone.taps: expected ascending, distinct, non-negative block indices, got {b.taps}")


def check_adapter(a: Any) -> None:
    from .models.adapters.fusion import FUSIONS
    from .models.adapters.routing import GATINGS
    from .models.adapters.token_experts import COMBINES, EXPERT_LOGITS
    from .models.segmentor import ADAPTERS

    one_of("adapter.type", a.type, ADAPTERS)
    positive("adapter.num_experts", a.num_experts)
    positive("adapter.num_tokens", a.num_tokens, 2)  # token 1 only normalises: m = 1 would refine nothing
    positive("adapter.rank", a.rank)
    if not 1 <= a.top_k <= a.num_experts:
        raise ConfigError(f"adapter.top_k: must be in 1..num_experts ({a.num_experts}), got {a.top_k}")
    one_of("adapter.gating", a.gating, GATINGS)
    positive("adapter.distance_p", a.distance_p, 1e-9)
    one_of("adapter.expert_logits", a.expert_logits, EXPERT_LOGITS)
    one_of("adapter.fusion", a.fusion, [f for f in FUSIONS if f != "none"])
    one_of("adapter.combine", a.combine, COMBINES)
    if not math.isfinite(a.alpha_init):
        raise ConfigError(f"adapter.alpha_init: must be finite, got {a.alpha_init}")
    positive("adapter.loss_weight", a.loss_weight, 0)


def check_head(cfg: Any) -> None:
    from .models.heads import HEADS

    HEADS.check(cfg.head.type)
    positive("head.channels", cfg.head.channels)
    check_options("head.options", HEADS.get(cfg.head.type), cfg.head.options,
                  reserved=("in_channels", "num_classes", "channels", "ignore_index"))


def check_options(key: str, cls: type, options: dict, reserved: Sequence[str] = ()) -> None:
    """The keyword ``options`` for ``cls``'s constructor must be arguments it takes (and not ones rsmoe sets)."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = [name for name in params if name != "self" and name not in reserved]
    unknown = [name for name in options if name not in known]
    if unknown:
        raise ConfigError(f"{key}: unknown option(s) {unknown} for {cls.__name__}; known: {known}")


def check_data(d: Any) -> None:
    positive("data.batch_size", d.batch_size)
    positive("data.eval_batch_size", d.eval_batch_size)
    positive("data.num_workers", d.num_workers, 0)
    a = d.augment
    if a.resize_scale is not None:
        if len(a.resize_scale) != 2 or not 0 < a.resize_scale[0] <= a.resize_scale[1]:
            raise ConfigError(f"data.augment.resize_scale: expected [low, high] with 0 < low ≤ high, got "
                              f"{a.resize_scale}")
        if a.crop is None:
            raise ConfigError("data.augment.resize_scale needs data.augment.crop: a batch needs tiles of one size")
    if a.resize_choices is not None:
        if a.resize_scale is not None:
            raise ConfigError("data.augment: set resize_scale or resize_choices, not both")
        if not a.resize_choices or min(a.resize_choices) < 1:
            raise ConfigError(f"data.augment.resize_choices: expected positive sizes, got {a.resize_choices}")
        if a.crop is None:
            raise ConfigError("data.augment.resize_choices needs data.augment.crop: a batch needs tiles of one size")
    positive("data.augment.resize_base", a.resize_base)
    if a.resize_max is not None and a.resize_max < max(a.resize_choices or [a.resize_base]):
        raise ConfigError(f"data.augment.resize_max ({a.resize_max}) must be ≥ the short side it caps "
                          f"({max(a.resize_choices or [a.resize_base])})")
    if a.crop is not None:
        positive("data.augment.crop", a.crop)
    fraction("data.augment.cat_max_ratio", a.cat_max_ratio, 1e-9, 1.0)
    fraction("data.augment.hflip", a.hflip)
    fraction("data.augment.vflip", a.vflip)


def check_eval(ev: Any) -> None:
    one_of("eval.mode", ev.mode, ("whole", "slide"))
    positive("eval.window", ev.window)
    positive("eval.stride", ev.stride)


def check_train(t: Any) -> None:
    positive("train.iterations", t.iterations)
    positive("train.lr", t.lr, 1e-30)
    positive("train.weight_decay", t.weight_decay, 0)
    if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):
        raise ConfigError(f"train.betas: expected two values in [0, 1), got {t.betas}")
    positive("train.eps", t.eps, 1e-30)
    positive("train.poly_power", t.poly_power, 0)
    positive("train.val_interval", t.val_interval, 0)
    positive("train.log_every", t.log_every)
    positive("train.devices", t.devices)
    one_of("train.precision", t.precision, PRECISIONS)
    one_of("train.lr_schedule", t.lr_schedule, ("poly", "multistep"))
    if t.lr_schedule == "multistep":
        if not t.lr_milestones or list(t.lr_milestones) != sorted(set(t.lr_milestones)) or t.lr_milestones[0] < 1:
            raise ConfigError(f"train.lr_milestones: ascending iterations ≥ 1 for the multistep schedule, got "
                              f"{t.lr_milestones}")
        positive("train.lr_gamma", t.lr_gamma, 1e-30)
    one_of("train.accelerator", t.accelerator, ACCELERATORS)
    positive("train.checkpoint_every", t.checkpoint_every)
    if t.resume is not None and not str(t.resume).strip():
        raise ConfigError("train.resume: empty path; give a last.ckpt or null")


def check_mpers(m: Any) -> None:
    from .models.mpers.model import DECODER_HEADS, EVAL_CAPTIONS

    one_of("mpers.decoder", m.decoder, DECODER_HEADS)
    one_of("mpers.eval_captions", m.eval_captions, EVAL_CAPTIONS)
    one_of("mpers.train_statistics", m.train_statistics, ("live", "store"))
    one_of("mpers.adapter_attention", m.adapter_attention, ("dilate", "mhsa", "none"))
    for key in ("num_prompts", "linguistic_heads", "gate_hidden", "dilation", "adapter_heads", "adapter_blocks"):
        positive(f"mpers.{key}", getattr(m, key))
    if m.kernel_size < 1 or m.kernel_size % 2 == 0:
        raise ConfigError(f"mpers.kernel_size: must be an odd number ≥ 1, got {m.kernel_size}")
    if m.text_dim is not None:
        positive("mpers.text_dim", m.text_dim)
    for key in ("lqga_stages", "adapter_stages"):
        if any(s not in (1, 2, 3, 4) for s in getattr(m, key)):
            raise ConfigError(f"mpers.{key}: stages are 1..4, got {getattr(m, key)}")
    if m.lqga_stages and not m.captioners:
        raise ConfigError("mpers.lqga_stages need at least one caption source in mpers.captioners")
    if m.lqga_stages and m.eval_captions == "store" and not [c for c in m.captioners if c != "statistics"]:
        raise ConfigError("mpers.eval_captions 'store' uses MLLM captions only (never label-derived ones) but "
                          f"captioners {m.captioners} name none; use eval_captions: statistics-self")


def check_input_sizes(cfg: Any, multiple: int) -> None:
    """Training crops and evaluation windows must be multiples of the model's input multiple (the backbone's patch
    size): the model cannot pad inside a batch."""
    crop = cfg.data.augment.crop
    if crop is not None and crop % multiple:
        raise ConfigError(f"data.augment.crop: {crop} is not a multiple of the backbone's patch size {multiple}")
    if cfg.eval.mode == "slide" and cfg.eval.window % multiple:
        raise ConfigError(f"eval.window: {cfg.eval.window} is not a multiple of the backbone's patch size {multiple}")


def check_against_dataset(cfg: Any, domains: Sequence[str], class_names: Sequence[str]) -> None:
    """The checks that need the prepared dataset: source/target domains exist, excluded classes exist."""
    known = list(domains)
    if not cfg.data.source_domains:
        raise ConfigError(f"data.source_domains is empty: name the domain(s) to train on; known domains: {known}")
    for key in ("source_domains", "target_domains"):
        unknown = [d for d in getattr(cfg.data, key) if d not in known]
        if unknown:
            raise ConfigError(f"data.{key}: unknown domain(s) {unknown} in {cfg.data.root}; known domains: {known}")
    unknown = [c for c in cfg.eval.exclude_from_means if c not in class_names]
    if unknown:
        raise ConfigError(f"eval.exclude_from_means: {unknown} are not among the classes {list(class_names)}")


__all__ = ["ACCELERATORS", "PRECISIONS", "check_against_dataset", "check_config", "check_input_sizes", "check_options"]
