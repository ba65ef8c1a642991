"""Typed run configuration: YAML files plus dotted command-line overrides; unknown keys are errors.

One merge rule, for ``_base_`` files and ``--set`` overrides alike (:func:`merge`): mappings merge key by key at
every depth; any other value (a number, a string, a list) replaces what was there; a mapping that contains
``_replace_: true`` replaces the mapping below it instead of merging into it (e.g. a DOFA config that inherits from
a DINOv3 one sets ``backbone.config: {_replace_: true, size: large}``).

A YAML file may start from others with ``_base_: [relative/path.yaml, ...]`` (merged in order, then the file's own
keys on top; a file that includes itself, directly or not, is an error naming the cycle). ``--set
adapter.rank=32`` overrides one value (parsed as YAML, so ``[1, 2]``, ``null``, ``true``, ``{a: 1}`` work; a
number in the path indexes a list: ``--set captioners.0.model=...``); ``--set head=mask2former`` is short for
``--set head.type=mask2former``. :meth:`Config.validate` checks the values; :func:`rsmoe.config_checks.check_against_dataset`
checks them against a prepared dataset (domains, class names).
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


@dataclass
class BackboneConfig:
    """The frozen vision model. ``pretrained``: a local transformers directory or original checkpoint; without it
    the weights are random, drawn deterministically from ``seed`` (tests, the demo, parameter counts)."""

    kind: str = "dinov3"  # dinov3 | dinov2 | dofa
    pretrained: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # transformers config fields for random weights
    band_init: str = "cyclic"  # cyclic | wavelength (docs/spectralmoe.md §10)
    band_channels: list[int] | None = None  # explicit RGB channel per band (0 R, 1 G, 2 B); overrides band_init
    seed: int = 0
    taps: list[int] | None = None  # 0-based blocks; default [7, 11, 15, 23] for 24 blocks, [3, 5, 7, 11] for 12


@dataclass
class DepthConfig:
    """The frozen depth model whose per-block tokens steer SpectralMoE (Depth Anything V2 / Prompt Depth Anything)."""

    enabled: bool = False
    pretrained: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    seed: int = 1


@dataclass
class AdapterConfig:
    """The trainable plug-in (docs/spectralmoe.md §3–§7). ``type``: spectralmoe | rein | none (frozen backbone)."""

    type: str = "spectralmoe"
    num_experts: int = 6
    num_tokens: int = 100
    rank: int = 16
    top_k: int = 1
    gating: str = "laplace"  # softmax | gaussian | laplace (laplace: every public config)
    distance_p: float = 2.0
    noisy: bool = True
    expert_logits: str = "official"  # official | dot
    fusion: str = "official"  # official | cross_attention | add
    combine: str = "official"  # official | weighted | switch (router probability scales Δ: a task gradient)
    alpha_init: float = 1e-3
    query_link: bool = True  # only with head.type mask2former, the head that takes query embeddings
    loss_weight: float = 1.0  # weight of the router loss added to the task loss


@dataclass
class HeadConfig:
    """The trainable decode head. ``type``: fpn | mask2former; ``options``: extra constructor arguments."""

    type: str = "fpn"
    channels: int = 256
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class AugmentConfig:
    """Training augmentation (``rsmoe.data.transforms``; docs/spectralmoe.md §11): RandomResize → RandomCrop → RandomFlip →
    PhotometricDistortion → pad to the crop. ``resize_scale``: range ``[low, high]`` of the ratio r; the short
    side becomes ``resize_base`` × r, the long side at most ``resize_max`` × r (null: no resize; a resize needs
    ``crop`` so that a batch has one tile size); ``resize_choices``: instead of a ratio, the short side is one of
    these sizes, the long side at most ``resize_max`` (mmseg's RandomChoiceResize, the public configs); ``crop``: crop size (null: whole tiles); ``cat_max_ratio``: crop
    retry threshold; ``hflip``/``vflip``: flip probabilities; ``photometric``: brightness/contrast (+ saturation/hue
    for 3 bands)."""

    resize_scale: list[float] | None = None
    resize_choices: list[int] | None = None  # short side drawn from these sizes (the public configs' rule)
    resize_base: int = 512
    resize_max: int | None = 1024
    crop: int | None = None
    cat_max_ratio: float = 0.75
    hflip: float = 0.5
    vflip: float = 0.0
    photometric: bool = False


@dataclass
class DataConfig:
    """A prepared dataset (``rsmoe prepare`` / ``rsmoe synth``) and its domain split."""

    root: str | None = None
    source_domains: list[str] = field(default_factory=list)
    target_domains: list[str] = field(default_factory=list)
    train_split: str = "train"
    val_split: str = "val"  # evaluated on the source domains
    test_split: str = "test"  # evaluated on the target domains
    batch_size: int = 8
    eval_batch_size: int = 8
    num_workers: int = 0
    cache: bool = False  # keep decoded tiles in memory
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class EvalConfig:
    """How the domains are evaluated. ``mode``: ``whole`` (one forward per tile) or ``slide`` (``window``-sized
    windows every ``stride`` pixels, logits averaged where they overlap). ``exclude_from_means``: class names left
    out of mIoU/mAcc/mF1 but counted in OA (the ISPRS convention: ``[clutter]``)."""

    mode: str = "whole"  # whole | slide
    window: int = 512
    stride: int = 341
    exclude_from_means: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    """Iteration-based AdamW with a per-iteration schedule: ``poly`` (lr·(1 − t/T)^poly_power, the SpectralMoE
    recipe, docs/spectralmoe.md §11) or ``multistep`` (lr × lr_gamma at each of ``lr_milestones`` iterations, the
    MPerS recipe, docs/mpers.md §7)."""

    iterations: int = 1000
    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    poly_power: float = 0.9
    seed: int = 42
    val_interval: int = 0  # iterations between validations; 0 = only at the end
    log_every: int = 50
    accelerator: str = "auto"
    devices: int = 1
    precision: str = "32-true"
    resume: str | None = None  # a last.ckpt to continue from
    checkpoint_every: int = 2000  # iterations between last.ckpt saves (about 10 minutes of a GPU run); + the last
    lr_schedule: str = "poly"  # poly | multistep
    lr_milestones: list[int] = field(default_factory=list)  # multistep: iterations where lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    activation_checkpointing: bool = False  # recompute each frozen block + plug-in call in backward (less memory)


@dataclass
class MPersConfig:
    """MPerS (``model: mpers``; docs/mpers.md, :class:`rsmoe.models.mpers.MPerS`). The backbone section gives the frozen
    DINOv3 (taps default to [5, 11, 17, 23] of 24 blocks, [2, 5, 8, 11] of 12); the adapter/depth/head sections
    are not used.

    Captions: ``captioners`` names the M caption sources (one DMTE expert each, the order of the store lookup);
    ``statistics`` is the label-map captioner. ``caption_store``: the SQLite store of ``rsmoe captions`` (MLLM
    captions; null = none). ``train_statistics``: where the training captions of the ``statistics`` slot come from —
    ``live`` (written from the ground truth of the augmented crop the model sees, embedded on the fly) or ``store``.
    ``eval_captions``: ``statistics-self`` (two passes: the model's own first-pass prediction is captioned),
    ``store`` (only image-derived store captions) or ``none``; evaluation never captions ground truth.
    ``text_encoder``: a local text-encoder folder or ``tiny`` (random tiny CLIP, seed ``text_encoder_seed``);
    ``text_dim``: d_t (null = the encoder's; the tiny encoder is built with it, 32 if null).
    """

    text_encoder: str = "tiny"
    text_encoder_seed: int = 0
    text_encoder_name: str | None = None  # the store's embedding key; null = the encoder's own name
    text_dim: int | None = None
    captioners: list[str] = field(default_factory=lambda: ["statistics"])
    caption_store: str | None = None
    train_statistics: str = "live"  # live | store
    eval_captions: str = "statistics-self"  # statistics-self | store | none
    num_prompts: int = 3
    linguistic_heads: int = 8
    shared_attention: bool = True
    gate_hidden: int = 128
    lqga_stages: list[int] = field(default_factory=lambda: [4])
    neck_channels: list[int] = field(default_factory=lambda: [512, 256])
    ldpe_widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    adapter_attention: str = "dilate"  # dilate | mhsa | none
    dilation: int = 1
    kernel_size: int = 3
    adapter_heads: int = 8
    adapter_blocks: int = 1
    adapter_stages: list[int] = field(default_factory=lambda: [4])
    adapter_branches: list[str] = field(default_factory=lambda: ["dino", "ldpe"])
    adapter_dilations: list[int] = field(default_factory=list)  # one rate per head group; [] = `dilation` for all
    adapter_norm_eps: float = 1e-5  # LayerNorm eps of the adapter blocks (the full DilateFormer uses 1e-6)
    adapter_qkv_bias: bool = True
    adapter_pretrained: dict[str, str] = field(default_factory=dict)  # adapter key → `rsmoe convert dilateformer`
    decoder: str = "unet"  # unet | fpn | pixelup
    decoder_channels: list[int] = field(default_factory=lambda: [256, 128, 64])


@dataclass
class Config:
    name: str = "run"
    output_dir: str = "runs/run"
    model: str = "segmentor"  # segmentor (backbone + adapter + head) | mpers (the `mpers` section)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    mpers: MPersConfig = field(default_factory=MPersConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def validate(self) -> "Config":
        """Check every value that can be checked without data; a one-line :class:`ConfigError` naming the key,
        the value and what is expected. Returns the config."""
        from .config_checks import check_config

        check_config(self)
        return self




REPLACE = "_replace_"


def merge(base: Any, top: Any) -> Any:
    """``top`` merged onto ``base`` by the one rule of the module docstring (neither argument is modified)."""
    if not isinstance(top, dict):
        return top
    if top.get(REPLACE) is True or not isinstance(base, dict):
        return {k: merge(None, v) for k, v in top.items() if k != REPLACE}
    out = dict(base)
    for key, value in top.items():
        if key != REPLACE:
            out[key] = merge(out.get(key), value)
    return out


def read_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """A YAML file with its ``_base_`` files merged in."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain[_chain.index(resolved):], resolved))
        raise ConfigError(f"{path}: _base_ files include each other in a cycle ({cycle})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for base in bases:
        merged = merge(merged, read_yaml(path.parent / base, (*_chain, resolved)))
    return merge(merged, data)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return build_dataclass(tp, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def build_dataclass(cls: type, data: dict, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, type-checking every value; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a", "b", "c"], value parsed as YAML); a one-line :class:`ConfigError` otherwise."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r}: expected key=value")
    key, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {assignment!r}: the value is not valid YAML ({str(exc).splitlines()[0]}); "
                          "quote it") from None
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {assignment!r}: empty key part in {key!r}")
    return parts, value


def apply_override(data: dict, assignment: str, type_sections: tuple[str, ...] = ()) -> dict:
    """Apply ``a.b.c=value`` to nested ``data`` (in place; returned) by the merge rule. A number in the path
    indexes a list. ``section=value`` with a section named in ``type_sections`` sets ``section.type``."""
    parts, value = parse_override(assignment)
    if len(parts) == 1 and parts[0] in type_sections and not isinstance(value, dict):
        parts = [parts[0], "type"]
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict):
            if not isinstance(node.get(part, {}), (dict, list)):
                raise ConfigError(f"override {assignment!r}: {'.'.join(parts[:depth + 1])} is a value, not a section")
            node = node.setdefault(part, {})
        else:
            raise ConfigError(f"override {assignment!r}: {'.'.join(parts[:depth])} has no entry {part!r}")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"override {assignment!r}: {last} is not an index of a {len(node)}-item list")
        node[int(last)] = merge(node[int(last)], value)
    else:
        node[last] = merge(node.get(last), value)
    return data


def config_sections() -> tuple[str, ...]:
    """The sections of :class:`Config` that have a ``type`` (the ``--set head=…`` shortcut)."""
    hints = typing.get_type_hints(Config)
    return tuple(f.name for f in dataclasses.fields(Config)
                 if dataclasses.is_dataclass(hints[f.name]) and "type" in {g.name for g in dataclasses.fields(hints[f.name])})


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The :class:`Config` of a YAML file (or the defaults) with ``--set`` overrides applied, validated."""
    data = read_yaml(path) if path else {}
    for assignment in overrides:
        apply_override(data, assignment, config_sections())
    return config_from_dict(data).validate()


def config_from_dict(data: dict) -> Config:
    return build_dataclass(Config, data, "")


def default_taps(num_layers: int) -> list[int]:
    """docs/spectralmoe.md §7: [7, 11, 15, 23] for 24 blocks, [3, 5, 7, 11] for 12; otherwise the same fractions of depth."""
    if num_layers == 24:
        return [7, 11, 15, 23]
    if num_layers == 12:
        return [3, 5, 7, 11]
    fractions = (8 / 24, 12 / 24, 16 / 24, 1.0)
    return sorted({max(0, round(f * num_layers) - 1) for f in fractions})
