"""``spectralmoe-official``: the authors' mmsegmentation checkpoint → an rsmoe checkpoint.

Four steps, one function each: **read** the file (tensors renamed by :mod:`rsmoe.convert.spectralmoe_keys`,
metadata by :mod:`rsmoe.convert.mmengine_meta`); **validate** the rsmoe config against what the checkpoint holds;
**compute** the metadata an rsmoe checkpoint needs — class names and palette, the input bands, the normalisation
statistics — from the user's options, a prepared dataset or the checkpoint itself; **write** the tensors that the
config's model trains, with that metadata, atomically.

Band order of the authors' statistics. Their ``data_preprocessor`` mean/std follow *their* input band order: the
``wave_list`` of their config where it is recorded (their DOFA configs), otherwise the order their dataset files
store — NIR, R, G, B for the Five-Billion-Pixels / GID models (``Image__8bit_NirRGB``; their GID configs say
``in_chans=4  # (NIR, R, G, B)``), which nothing in a DINOv3 checkpoint records. When the statistics come from
the checkpoint but the input bands come from elsewhere (``--sensor``, ``--wavelengths``, ``--data``), they are
reordered to the input bands by wavelength (:func:`match_band_order`); when the authors' order is unknown
(``--official-wavelengths`` gives it) or the bands do not pair one to one, the import is refused.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from ..io.atomic import atomic_path
from ..io.torch_files import check_keys, extract_state_dict, read_torch_file
from ..sensors import RGB_CENTRES_UM, nearest_band
from .classes import default_palette, read_classes_file
from .mmengine_meta import OfficialMeta, read_official_meta
from .output import check_output
from .spectralmoe_keys import OfficialImport, convert_spectralmoe_official_state_dict, official_key_for

#: Largest distance (µm) at which a band of the authors' input is taken for the same band of the target sensor.
BAND_MATCH_TOLERANCE_UM = 0.06


@dataclass
class ImportLog:
    """What the user is told: ``notes`` (decisions and differences) and ``unknown`` (values guessed or left at a
    neutral default); both are stored in the checkpoint's metadata and printed."""

    notes: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


@dataclass
class Bands:
    """The input bands of the imported model: centre wavelengths (µm), names and sensor key (may be empty), and
    where they came from (``official`` = the checkpoint itself, in the authors' own order)."""

    wavelengths: list[float]
    names: list[str] = field(default_factory=list)
    sensor: str | None = None
    official: bool = False


# ---------------------------------------------------------------------------------------------------- read
def read_official(src: Path) -> tuple[OfficialImport, OfficialMeta]:
    """The renamed tensors and the metadata of the authors' checkpoint file."""
    loaded = read_torch_file(src, "SpectralMoE checkpoint")
    state = extract_state_dict(loaded, src)
    return convert_spectralmoe_official_state_dict(state, str(src)), read_official_meta(loaded)


# ---------------------------------------------------------------------------------------------------- validate
def check_config(config: Any, official: OfficialMeta, where: str, log: ImportLog) -> None:
    """Refuse a config whose model cannot hold the checkpoint; note settings that change its outputs."""
    a = config.adapter
    if a.type != "spectralmoe":
        raise ConfigError(f"{where}: the config's adapter.type is {a.type!r}; a SpectralMoE checkpoint needs "
                          "adapter.type: spectralmoe")
    if not config.depth.enabled:
        raise ConfigError(f"{where}: the checkpoint has depth routers; the config needs depth.enabled: true")
    if config.head.type != "mask2former" or not a.query_link:
        raise ConfigError(f"{where}: the checkpoint has a Mask2Former head fed by the query link; the config needs "
                          "head.type: mask2former and adapter.query_link: true")
    for key in ("expert_logits", "fusion", "combine"):
        if getattr(a, key) != "official":
            log.notes.append(f"adapter.{key} is {getattr(a, key)!r}: outputs will differ from the authors' code "
                             "(which computes 'official')")
    moe = official.moe
    if not moe:
        log.unknown.append("gating/top_k/noise: not recorded in the checkpoint — taken from the config (the "
                           "published configs use laplace gating with the Euclidean distance, top-1, noisy)")
        return
    gating = moe.get("gating", "softmax")
    if gating != a.gating:
        log.notes.append(f"the authors' config used gating {gating!r} but this config has {a.gating!r}")
    if a.gating == "laplace" and a.distance_p != 2.0:
        log.notes.append(f"adapter.distance_p is {a.distance_p}; the authors' code uses the Euclidean distance (2)")
    for theirs, ours in (("top_k", a.top_k), ("num_experts", a.num_experts), ("token_length", a.num_tokens)):
        if theirs in moe and moe[theirs] != ours:
            raise ConfigError(f"{where}: the authors' config has {theirs}={moe[theirs]}, this config {ours}")
    if "noisy_gating" in moe and bool(moe["noisy_gating"]) != a.noisy:
        log.notes.append(f"the authors' config has noisy_gating={moe['noisy_gating']}, this config noisy={a.noisy}")


# ---------------------------------------------------------------------------------------------------- compute
def resolve_classes(head_classes: int, official: OfficialMeta, info: Any, classes_file: str | os.PathLike | None,
                    num_classes: int | None, where: str, log: ImportLog) -> tuple[list[str], list[list[int]]]:
    """Class names and palette: ``classes_file`` → the checkpoint's ``dataset_meta`` → the prepared dataset →
    placeholders for ``num_classes`` / the head's class count. Must match the head (``head_classes``)."""
    palette = None
    if classes_file is not None:
        names, palette = read_classes_file(classes_file)
    elif official.classes is not None:
        names, palette = official.classes, official.palette
    elif info is not None:
        names, palette = list(info.classes), [list(p) for p in info.palette]
    elif num_classes is not None:
        names = [f"class_{i}" for i in range(num_classes)]
        log.unknown.append("class names (placeholders class_0…)")
    else:
        names = [f"class_{i}" for i in range(head_classes)]
        log.unknown.append("class names (placeholders; count from decode_head.cls_embed)")
    if num_classes is not None and num_classes != len(names):
        raise ConfigError(f"{where}: --num-classes {num_classes} but {len(names)} class names were found")
    if len(names) != head_classes:
        raise ConfigError(f"{where}: {len(names)} class names but decode_head.cls_embed predicts {head_classes} "
                          "classes (+ no-object)")
    if palette is None or len(palette) != len(names):
        palette = default_palette(len(names))
        log.unknown.append("palette (generated)")
    return list(names), [list(p) for p in palette]


def resolve_bands(config: Any, official: OfficialMeta, info: Any, sensor: str | None,
                  wavelengths: Sequence[float] | None, where: str, log: ImportLog) -> Bands:
    """The input bands: ``wavelengths`` → ``sensor`` → the prepared dataset (first source domain) → the authors'
    ``wave_list`` → RGB when the authors' model takes 3 bands."""
    from ..sensors import get_sensor as registry_sensor

    def get_sensor(name: str):
        try:
            return registry_sensor(name)
        except KeyError as exc:
            raise ConfigError(exc.args[0]) from None

    if wavelengths is not None:
        bands = Bands([float(w) for w in wavelengths])
    elif sensor is not None:
        s = get_sensor(sensor)
        bands = Bands(list(s.wavelengths), list(s.band_names), sensor)
    elif info is not None:
        domain = config.data.source_domains[0] if config.data.source_domains else next(iter(info.sensors))
        if info.sensors.get(domain) is None:
            raise ConfigError(f"{where}: domain {domain!r} is not in the prepared dataset's dataset.yaml")
        s = get_sensor(info.sensors[domain])
        bands = Bands(list(s.wavelengths), list(s.band_names), info.sensors[domain])
    elif official.wavelengths is not None:
        bands = Bands(list(official.wavelengths), official=True)
        log.notes.append("band wavelengths from the authors' config (wave_list)")
    elif official.in_chans == 3:
        s = get_sensor("RGB")
        bands = Bands(list(s.wavelengths), list(s.band_names), "RGB", official=True)
    else:
        chans = f" ({official.in_chans} bands)" if official.in_chans else ""
        raise ConfigError(f"{where}: band wavelengths unknown{chans}: pass --sensor, --wavelengths or --data (the "
                          "band order the model will be fed; e.g. --sensor GF-2)")
    if official.in_chans is not None and official.in_chans != len(bands.wavelengths):
        raise ConfigError(f"{where}: the authors' config has in_chans={official.in_chans}, got "
                          f"{len(bands.wavelengths)} wavelengths")
    return bands


def match_band_order(source_um: Sequence[float], target_um: Sequence[float],
                     tolerance_um: float = BAND_MATCH_TOLERANCE_UM) -> list[int] | None:
    """For each target band, the index of the same band among ``source_um``: each target band's nearest source
    band, accepted only when the pairing is one to one, mutual (the source band's nearest target band is that
    band) and within ``tolerance_um``. None when the two band sets do not pair up."""
    if len(source_um) != len(target_um):
        return None
    order = [nearest_band(source_um, t) for t in target_um]
    if len(set(order)) != len(order):
        return None
    for i, j in enumerate(order):
        if nearest_band(target_um, source_um[j]) != i or abs(source_um[j] - target_um[i]) > tolerance_um:
            return None
    return order


def official_band_order(official: OfficialMeta, given: Sequence[float] | None) -> list[float] | None:
    """Wavelengths (µm) of the authors' input bands in their order: ``given`` (``--official-wavelengths``) → their
    ``wave_list`` → R, G, B for a 3-band model; None when unknown."""
    if given is not None:
        return [float(w) for w in given]
    if official.wavelengths is not None:
        return list(official.wavelengths)
    if official.in_chans == 3:
        return list(RGB_CENTRES_UM)
    return None


def _official_statistics(bands: Bands, official: OfficialMeta, official_wavelengths: Sequence[float] | None,
                         where: str, log: ImportLog) -> tuple[list[float], list[float]]:
    """The authors' mean/std in the order of ``bands`` (see the module docstring)."""
    mean, std = list(official.mean or []), list(official.std or [])
    log.notes.append("mean/std from the authors' data_preprocessor (in the units of their input files)")
    theirs = official_band_order(official, official_wavelengths)
    if bands.official and official_wavelengths is None:
        return mean, std
    target = ", ".join(f"{w:g}" for w in bands.wavelengths) + (f" ({bands.sensor})" if bands.sensor else "")
    if theirs is None:
        raise ConfigError(f"{where}: the authors' mean/std follow their input band order, which the checkpoint does "
                          f"not record: pass --official-wavelengths (the Five-Billion-Pixels/GID models: 0.83 0.665 "
                          f"0.56 0.49, i.e. NIR,R,G,B) or --mean/--std in the order of the bands {target}")
    order = match_band_order(theirs, bands.wavelengths)
    if order is None or len(theirs) != len(mean):
        raise ConfigError(f"{where}: cannot pair the authors' bands ({', '.join(f'{w:g}' for w in theirs)} µm) with "
                          f"the input bands {target} one to one; pass --mean/--std in the input band order")
    if order != list(range(len(order))):
        log.notes.append(f"the authors' mean/std reordered from their band order ({', '.join(f'{w:g}' for w in theirs)}"
                         f" µm) to the input order ({target})")
    return [mean[j] for j in order], [std[j] for j in order]


def with_official_kernel_channels(config: Any, bands: Bands, official: OfficialMeta,
                                  official_wavelengths: Sequence[float] | None, log: ImportLog) -> Any:
    """A copy of ``config`` whose ``backbone.band_channels`` give each input band the RGB kernel channel the
    authors' cyclic rule gave it in *their* band order (band j of theirs ← channel j mod 3), so that the imported
    adapters see the patch embedding they were trained on; unchanged when the order is unknown or the backbone
    builds its kernel from wavelengths (DOFA)."""
    import copy

    if config.backbone.kind == "dofa" or config.backbone.band_init != "cyclic" or config.backbone.band_channels:
        return config
    theirs = official_band_order(official, official_wavelengths)
    order = None if theirs is None else match_band_order(theirs, bands.wavelengths)
    if order is None:
        if len(bands.wavelengths) != 3:
            log.unknown.append("the authors' band order, so the patch kernel is cycled in the input band order "
                               "(pass --official-wavelengths)")
        return config
    channels = [j % 3 for j in order]
    if channels == [i % 3 for i in range(len(channels))]:
        return config
    config = copy.deepcopy(config)
    config.backbone.band_channels = channels
    log.notes.append(f"backbone.band_channels {channels}: the authors' cyclic kernel assignment in their band order")
    return config


def resolve_normalisation(bands: Bands, official: OfficialMeta, info: Any, mean: Sequence[float] | None,
                          std: Sequence[float] | None, official_wavelengths: Sequence[float] | None, where: str,
                          log: ImportLog) -> tuple[list[float], list[float]]:
    """Per-band mean/std in the input band order: ``mean``/``std`` → the prepared dataset → the authors'
    ``data_preprocessor`` (reordered to the input bands) → 0/1 (unknown)."""
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise ConfigError("--mean and --std go together")
        mean_l, std_l = [float(v) for v in mean], [float(v) for v in std]
    elif info is not None:
        mean_l, std_l = list(info.mean), list(info.std)
    elif official.mean is not None and official.std is not None:
        mean_l, std_l = _official_statistics(bands, official, official_wavelengths, where, log)
    else:
        mean_l, std_l = [0.0] * len(bands.wavelengths), [1.0] * len(bands.wavelengths)
        log.unknown.append("normalisation mean/std (set to 0/1)")
    if len(mean_l) != len(bands.wavelengths) or len(std_l) != len(bands.wavelengths):
        raise ConfigError(f"{where}: mean/std have {len(mean_l)}/{len(std_l)} values for "
                          f"{len(bands.wavelengths)} bands")
    return mean_l, std_l


# ---------------------------------------------------------------------------------------------------- write
def _imported_meta_cls():
    from ..engine.checkpoints import CheckpointMeta

    @dataclass
    class ImportedMeta(CheckpointMeta):
        """CheckpointMeta plus provenance keys (``import_*``) in the safetensors metadata."""

        extra: dict[str, str] = field(default_factory=dict)

        def to_strings(self) -> dict[str, str]:
            strings = super().to_strings()
            strings.update(self.extra)
            return strings

    return ImportedMeta


class _TrainableTensors:
    """What :func:`rsmoe.engine.checkpoints.save_checkpoint` needs from a model: its trainable tensors."""

    def __init__(self, tensors: dict[str, Tensor]):
        self.tensors = tensors

    def trainable_state_dict(self) -> dict[str, Tensor]:
        return self.tensors


def write_import(out: Path, tensors: dict[str, Tensor], meta_fields: Mapping[str, Any], provenance: dict[str, str]
                 ) -> Path:
    """An rsmoe checkpoint (the engine's format) with ``import_*`` provenance keys, written atomically."""
    from ..engine.checkpoints import save_checkpoint

    meta = _imported_meta_cls()(**meta_fields, extra=provenance)
    with atomic_path(out) as tmp:
        save_checkpoint(_TrainableTensors(tensors), meta, tmp)
    return out


def model_tensors(config: Any, imported: OfficialImport, num_classes: int, wavelengths: list[float], where: str
                  ) -> dict[str, Tensor]:
    """Exactly the trainable tensors of the model ``config`` builds (checked by name and shape on the meta device,
    no weights drawn), as contiguous float32."""
    from ..params import meta_model

    model = meta_model(config, num_classes, wavelengths)
    expected = {k: tuple(v.shape) for k, v in model.trainable_state_dict().items()}
    check_keys(where, imported.tensors, expected, names=official_key_for)
    return {k: imported.tensors[k].detach().to(torch.float32).contiguous() for k in expected}


def convert_spectralmoe_official(
    src: str | os.PathLike,
    out_path: str | os.PathLike,
    config: Any,
    *,
    classes_file: str | os.PathLike | None = None,
    num_classes: int | None = None,
    data_root: str | os.PathLike | None = None,
    sensor: str | None = None,
    wavelengths: Sequence[float] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    official_wavelengths: Sequence[float] | None = None,
    ignore_index: int | None = None,
    force: bool = False,
    quiet: bool = False,
) -> Path:
    """The authors' checkpoint → rsmoe checkpoint for ``config`` (a :class:`rsmoe.config.Config`); see the module
    docstring and the ``resolve_*`` functions for where each piece of metadata comes from. Unknowns go to the
    metadata key ``import_unknown``; notes and unknowns are printed unless ``quiet``."""
    src, out = Path(src), Path(out_path)
    where = str(src)
    check_output(out, force=force)
    imported, official = read_official(src)
    log = ImportLog(notes=list(imported.notes))
    check_config(config, official, where, log)
    info = None
    if data_root is not None:
        from ..data.prepared import load_dataset_info

        info = load_dataset_info(data_root)
    head_classes = int(imported.tensors["head.class_embed.weight"].shape[0]) - 1
    names, palette = resolve_classes(head_classes, official, info, classes_file, num_classes, where, log)
    bands = resolve_bands(config, official, info, sensor, wavelengths, where, log)
    config = with_official_kernel_channels(config, bands, official, official_wavelengths, log)
    mean_l, std_l = resolve_normalisation(bands, official, info, mean, std, official_wavelengths, where, log)
    ignore = ignore_index if ignore_index is not None else (info.ignore_index if info is not None else 255)
    tensors = model_tensors(config, imported, len(names), bands.wavelengths, where)
    meta_fields = dict(config=config, class_names=names, palette=palette, mean=mean_l, std=std_l,
                       wavelengths=bands.wavelengths, band_names=bands.names, sensor=bands.sensor,
                       ignore_index=int(ignore), step=official.step)
    provenance = {"import_format": "spectralmoe-official", "import_source": src.name,
                  "import_notes": json.dumps(log.notes), "import_unknown": json.dumps(log.unknown)}
    write_import(out, tensors, meta_fields, provenance)
    if not quiet:
        for line in log.notes:
            print(f"note: {line}", file=sys.stderr)
        for line in log.unknown:
            print(f"unknown: {line}", file=sys.stderr)
    return out


__all__ = ["BAND_MATCH_TOLERANCE_UM", "Bands", "ImportLog", "check_config", "convert_spectralmoe_official",
           "match_band_order", "model_tensors", "official_band_order", "read_official", "resolve_bands",
           "resolve_classes", "resolve_normalisation", "write_import"]
