"""``spectralmoe-official``: the authors' mmsegmentation checkpoint → an rsmoe checkpoint — the DepthMoE adapter
key mapping, mmdet's Mask2Former head key mapping, and the metadata (mmengine ``meta``, the stored config text,
class names / palette)."""
from __future__ import annotations

import ast
import colorsys
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .loading import _check_keys, _first_line, _prepare_output, _short, _tensor_dict, load_torch_file


# ================================================================================================================
# SpectralMoE official (mmseg) → rsmoe checkpoint
# ================================================================================================================
# Adapter: the authors' DepthMoE module (SpectralMoE/models/backbones/depthmoe.py, read in the public code index)
# holds per-(layer, expert) ParameterLists, so its keys are experts_a.{l}.{e} (m×r), experts_b.{l}.{e} (r×d),
# w_gate.{l}.{j} / w_noise.{l}.{j} (d×E; j = 0 MSI/visual, 1 depth), scale (α, 0-dim), mlp_token2feat.* (t2f),
# mlp_delta_f.* (delta), transform.* / merge.* (query link), and two buffers mean=[0.], std=[1.] (the standard
# normal used for the load estimate; constants, dropped). The backbone's state_dict override keeps only keys
# containing "depthmoe", so the frozen ViT / PromptDA weights are not in the file.
ADAPTER_PREFIX = "backbone.depthmoe."
HEAD_PREFIX = "decode_head."
_ADAPTER_SIMPLE = {
    "scale": "alpha",
    "mlp_token2feat.weight": "t2f.weight",
    "mlp_token2feat.bias": "t2f.bias",
    "mlp_delta_f.weight": "delta.weight",
    "mlp_delta_f.bias": "delta.bias",
    "transform.weight": "query_link.transform.weight",
    "transform.bias": "query_link.transform.bias",
    "merge.weight": "query_link.merge.weight",
    "merge.bias": "query_link.merge.bias",
}
_ADAPTER_INDEXED = re.compile(r"^(experts_a|experts_b|w_gate|w_noise)\.(\d+)\.(\d+)$")
_ADAPTER_BUFFERS = {"mean": 0.0, "std": 1.0}

# Head: mmdet 3.x Mask2FormerHead (mmdet/models/dense_heads/mask2former_head.py) with MSDeformAttnPixelDecoder
# (mmdet/models/layers/msdeformattn_pixel_decoder.py: input_convs = ConvModule(conv, gn) from the coarsest input
# down, level_encoding, lateral_convs/output_convs ConvModules, mask_feature), Mask2FormerTransformerEncoder layers
# (deformable_detr_layers.py: self_attn = mmcv MultiScaleDeformableAttention, ffn = mmcv FFN whose Linear layers
# sit at ffn.layers.0.0 and ffn.layers.1, norms.0/1) and Mask2FormerTransformerDecoder (mask2former_layers.py:
# cross_attn → norms.0 → self_attn → norms.1 → ffn → norms.2; attentions wrap nn.MultiheadAttention as .attn;
# post_norm), all read in the public code index. mmseg's wrapper and the authors' DepthMoEMask2FormerHead add no
# parameters but delete query_embed (the query link replaces it). The older mmdet 2.x naming (attentions.0/1,
# ffns.0) is accepted too. rsmoe's head keeps mmdet's layouts (offsets M×L×P×2, level order, MLP 0/2/4), so this
# is a rename.
_HEAD_RENAMES: list[tuple[str, str]] = [
    (r"^pixel_decoder\.input_convs\.(\d+)\.conv\.(weight|bias)$", r"pixel_decoder.input_projs.\1.0.\2"),
    (r"^pixel_decoder\.input_convs\.(\d+)\.gn\.(weight|bias)$", r"pixel_decoder.input_projs.\1.1.\2"),
    (r"^pixel_decoder\.level_encoding\.weight$", r"pixel_decoder.level_embed.weight"),
    (r"^pixel_decoder\.encoder\.layers\.(\d+)\.(?:self_attn|attentions\.0)\."
     r"(sampling_offsets|attention_weights|value_proj|output_proj)\.(weight|bias)$",
     r"pixel_decoder.layers.\1.self_attn.\2.\3"),
    (r"^pixel_decoder\.encoder\.layers\.(\d+)\.(?:ffn|ffns\.0)\.layers\.0\.0\.(weight|bias)$",
     r"pixel_decoder.layers.\1.ffn.0.\2"),
    (r"^pixel_decoder\.encoder\.layers\.(\d+)\.(?:ffn|ffns\.0)\.layers\.1\.(weight|bias)$",
     r"pixel_decoder.layers.\1.ffn.2.\2"),
    (r"^pixel_decoder\.encoder\.layers\.(\d+)\.norms\.0\.(weight|bias)$", r"pixel_decoder.layers.\1.norm1.\2"),
    (r"^pixel_decoder\.encoder\.layers\.(\d+)\.norms\.1\.(weight|bias)$", r"pixel_decoder.layers.\1.norm2.\2"),
    (r"^pixel_decoder\.lateral_convs\.0\.conv\.weight$", r"pixel_decoder.lateral_conv.0.weight"),
    (r"^pixel_decoder\.lateral_convs\.0\.gn\.(weight|bias)$", r"pixel_decoder.lateral_conv.1.\1"),
    (r"^pixel_decoder\.output_convs\.0\.conv\.weight$", r"pixel_decoder.output_conv.0.weight"),
    (r"^pixel_decoder\.output_convs\.0\.gn\.(weight|bias)$", r"pixel_decoder.output_conv.1.\1"),
    (r"^pixel_decoder\.mask_feature\.(weight|bias)$", r"pixel_decoder.mask_feature.\1"),
    (r"^transformer_decoder\.layers\.(\d+)\.(?:cross_attn|attentions\.0)\.attn\."
     r"(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)$", r"layers.\1.cross_attn.\2"),
    (r"^transformer_decoder\.layers\.(\d+)\.(?:self_attn|attentions\.1)\.attn\."
     r"(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)$", r"layers.\1.self_attn.\2"),
    (r"^transformer_decoder\.layers\.(\d+)\.(?:ffn|ffns\.0)\.layers\.0\.0\.(weight|bias)$", r"layers.\1.ffn.0.\2"),
    (r"^transformer_decoder\.layers\.(\d+)\.(?:ffn|ffns\.0)\.layers\.1\.(weight|bias)$", r"layers.\1.ffn.2.\2"),
    (r"^transformer_decoder\.layers\.(\d+)\.norms\.0\.(weight|bias)$", r"layers.\1.norm1.\2"),
    (r"^transformer_decoder\.layers\.(\d+)\.norms\.1\.(weight|bias)$", r"layers.\1.norm2.\2"),
    (r"^transformer_decoder\.layers\.(\d+)\.norms\.2\.(weight|bias)$", r"layers.\1.norm3.\2"),
    (r"^transformer_decoder\.post_norm\.(weight|bias)$", r"decoder_norm.\1"),
    (r"^query_feat\.weight$", r"query_feat.weight"),
    (r"^query_embed\.weight$", r"query_pos.weight"),
    (r"^level_embed\.weight$", r"level_embed.weight"),
    (r"^cls_embed\.(weight|bias)$", r"class_embed.\1"),
    (r"^mask_embed\.([024])\.(weight|bias)$", r"mask_embed.\1.\2"),
]
_HEAD_UNSUPPORTED = {
    "decoder_input_projs.": "decoder_input_projs convolutions (enforce_decoder_input_project=True or decoder width "
                            "≠ feat_channels) have no counterpart in rsmoe's head",
    "querys2feat.": "replace_query_feat=True (query content from the query link) is not supported by rsmoe's head",
}


@dataclass
class OfficialImport:
    """The result of mapping an official state dict: rsmoe tensors (``adapter.*`` and ``head.*``), the official
    keys that were deliberately dropped, and notes for the user / the metadata."""

    tensors: dict[str, Tensor]
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def convert_spectralmoe_official_adapter(adapter: Mapping[str, Tensor], where: str = "checkpoint"
                                         ) -> tuple[dict[str, Tensor], list[str]]:
    """``backbone.depthmoe.*`` (prefix removed) → rsmoe SpectralMoE parameter names. Returns (tensors, notes)."""
    indexed: dict[str, dict[tuple[int, int], Tensor]] = {n: {} for n in ("experts_a", "experts_b", "w_gate",
                                                                          "w_noise")}
    out: dict[str, Tensor] = {}
    notes: list[str] = []
    unknown: list[str] = []
    for key, value in adapter.items():
        m = _ADAPTER_INDEXED.match(key)
        if m:
            indexed[m[1]][(int(m[2]), int(m[3]))] = value
        elif key in _ADAPTER_SIMPLE:
            out[_ADAPTER_SIMPLE[key]] = value
        elif key in _ADAPTER_BUFFERS:
            if value.numel() != 1 or float(value.reshape(-1)[0]) != _ADAPTER_BUFFERS[key]:
                notes.append(f"{ADAPTER_PREFIX}{key} is {value.tolist()}, expected [{_ADAPTER_BUFFERS[key]}] "
                             "(the standard normal of the load estimate); rsmoe uses the standard normal")
        else:
            unknown.append(ADAPTER_PREFIX + key)
    if unknown:
        raise ValueError(f"{where}: unrecognised adapter keys: {_short(unknown)}")
    if not indexed["experts_a"]:
        raise ValueError(f"{where}: no {ADAPTER_PREFIX}experts_a.* keys: not a SpectralMoE (DepthMoE) checkpoint")
    layers = 1 + max(l for l, _ in indexed["experts_a"])
    experts = 1 + max(e for _, e in indexed["experts_a"])
    for name, grid, what in (("experts_a", experts, "expert"), ("experts_b", experts, "expert"),
                             ("w_gate", None, "modality"), ("w_noise", None, "modality")):
        entries = indexed[name]
        if not entries:
            raise ValueError(f"{where}: missing {ADAPTER_PREFIX}{name}.* keys")
        cols = grid if grid is not None else 1 + max(j for _, j in entries)
        missing = [f"{ADAPTER_PREFIX}{name}.{l}.{j}" for l in range(layers) for j in range(cols)
                   if (l, j) not in entries]
        extra = [f"{ADAPTER_PREFIX}{name}.{l}.{j}" for (l, j) in entries if l >= layers or j >= cols]
        if missing or extra:
            raise ValueError(f"{where}: {name} is not a full {layers} layers × {cols} {what}s grid"
                             + (f"; missing {_short(missing)}" if missing else "")
                             + (f"; extra {_short(extra)}" if extra else ""))
        ref_key = (0, 0)
        ref = entries[ref_key]
        for (l, j), t in entries.items():
            if t.shape != ref.shape:
                hint = (" (per-expert ranks differ — lora_dims must all be equal for rsmoe)"
                        if name in ("experts_a", "experts_b") else "")
                raise ValueError(f"{where}: {ADAPTER_PREFIX}{name}.{l}.{j} has shape {tuple(t.shape)} but "
                                 f"{ADAPTER_PREFIX}{name}.0.0 has {tuple(ref.shape)}{hint}")
        stacked = torch.stack([torch.stack([entries[(l, j)] for j in range(cols)]) for l in range(layers)])
        out[f"experts.{name}" if name.startswith("experts") else name] = stacked
    if "alpha" not in out:
        notes.append("no depthmoe.scale in the checkpoint (zero_mlp_delta_f=True uses a constant scale 1): α set to 1")
        out["alpha"] = torch.tensor(1.0)
    elif out["alpha"].numel() == 1:
        out["alpha"] = out["alpha"].reshape(())
    if out["w_gate"].shape[1] != 2:
        notes.append(f"routers for {out['w_gate'].shape[1]} modalities (the public code has 2: visual, depth)")
    return out, notes


def convert_mmdet_mask2former_head(head: Mapping[str, Tensor], where: str = "checkpoint") -> dict[str, Tensor]:
    """``decode_head.*`` (prefix removed) of mmdet's Mask2FormerHead → rsmoe Mask2FormerHead names."""
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in head.items():
        for prefix, why in _HEAD_UNSUPPORTED.items():
            if key.startswith(prefix):
                raise ValueError(f"{where}: {HEAD_PREFIX}{key}: {why}")
        for pattern, repl in _HEAD_RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                if new in out:
                    raise ValueError(f"{where}: {HEAD_PREFIX}{key} maps onto {new} twice (mixed mmdet 2.x/3.x names)")
                out[new] = value
                break
        else:
            unknown.append(HEAD_PREFIX + key)
    if unknown:
        raise ValueError(f"{where}: unrecognised decode_head keys: {_short(unknown)}")
    return out


def official_key_for(rsmoe_key: str) -> str:
    """Best-effort official name of an rsmoe key (for error messages)."""
    if rsmoe_key.startswith("adapter."):
        sub = rsmoe_key[len("adapter."):]
        inverse = {v: k for k, v in _ADAPTER_SIMPLE.items()}
        if sub in inverse:
            return ADAPTER_PREFIX + inverse[sub]
        return ADAPTER_PREFIX + sub.replace("experts.", "") + ".*"
    if rsmoe_key.startswith("head."):
        return f"{HEAD_PREFIX}… ({rsmoe_key})"
    return rsmoe_key


def convert_spectralmoe_official_state_dict(state: Mapping[str, Tensor], where: str = "checkpoint"
                                            ) -> OfficialImport:
    """The authors' full mmseg state dict → rsmoe trainable tensors (``adapter.*``, ``head.*``).

    ``head.query_pos.weight`` — absent from the authors' head, which replaces it by the query link — is filled
    with the query link's output, so the head alone reproduces what runs."""
    state = dict(state)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    adapter = {k[len(ADAPTER_PREFIX):]: v for k, v in state.items() if k.startswith(ADAPTER_PREFIX)}
    head = {k[len(HEAD_PREFIX):]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    ignored = [k for k in state if not k.startswith((ADAPTER_PREFIX, HEAD_PREFIX))]
    stray = [k for k in ignored if not k.startswith(("backbone.", "data_preprocessor."))]
    if stray:
        raise ValueError(f"{where}: keys outside backbone.depthmoe.* / decode_head.*: {_short(stray)}")
    if not head:
        raise ValueError(f"{where}: no {HEAD_PREFIX}* keys (the Mask2Former head)")
    adapter_t, notes = convert_spectralmoe_official_adapter(adapter, where)
    head_t = convert_mmdet_mask2former_head(head, where)
    tensors = {f"adapter.{k}": v for k, v in adapter_t.items()}
    tensors.update({f"head.{k}": v for k, v in head_t.items()})
    if ignored:
        notes.append(f"ignored {len(ignored)} frozen-backbone / preprocessor key(s) (rsmoe takes the frozen weights "
                     "from the config)")
    if "head.query_pos.weight" not in tensors:
        tensors["head.query_pos.weight"] = _query_link_output(adapter_t)
        notes.append("head.query_pos: not in the authors' head (deleted there; the query link replaces it) — filled "
                     "with the query link's output")
    return OfficialImport(tensors=tensors, ignored=ignored, notes=notes)


@torch.no_grad()
def _query_link_output(adapter: Mapping[str, Tensor]) -> Tensor:
    from ..models.adapters.query_link import QueryLink

    w = adapter.get("query_link.transform.weight")
    if w is None or "query_link.merge.weight" not in adapter:
        raise ValueError("the checkpoint has no query link (transform.*, merge.*): cannot fill head.query_pos")
    link = QueryLink(int(w.shape[1]), int(w.shape[0]))
    link.load_state_dict({k[len("query_link."):]: v.float() for k, v in adapter.items()
                          if k.startswith("query_link.")}, strict=True)
    tokens = adapter["experts.experts_a"].float() @ adapter["experts.experts_b"].float()
    return link(tokens).contiguous()


# ---------------------------------------------------------------- the authors' config text stored by mmengine
def _literal(node: ast.AST) -> Any:
    """Literal value of a config AST node: constants, lists/tuples/dicts, ``dict(...)`` calls, unary minus.
    Anything else (names, other calls) becomes None — nothing is executed."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values) if k is not None}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand)
        return -value if isinstance(value, (int, float)) else None
    return None


def parse_mmengine_config_text(text: str) -> dict[str, Any]:
    """Top-level assignments of an mmengine ``pretty_text`` config, as plain literals (never executed)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return {}
    out: dict[str, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            out[stmt.targets[0].id] = _literal(stmt.value)
    return out


def _dig(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


@dataclass
class OfficialMeta:
    """What the checkpoint itself says besides tensors (mmengine ``meta``), all optional."""

    classes: list[str] | None = None
    palette: list[list[int]] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    wavelengths: list[float] | None = None
    in_chans: int | None = None
    moe: dict[str, Any] = field(default_factory=dict)
    backbone_type: str | None = None
    step: int = 0


def read_official_meta(obj: Any) -> OfficialMeta:
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    result = OfficialMeta()
    if not isinstance(meta, Mapping):
        return result
    dataset_meta = meta.get("dataset_meta")
    if isinstance(dataset_meta, Mapping):
        classes = dataset_meta.get("classes")
        if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
            result.classes = list(classes)
        palette = dataset_meta.get("palette")
        if isinstance(palette, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 3 for p in palette):
            result.palette = [[int(v) for v in p] for p in palette]
    for key in ("iter", "step"):
        if isinstance(meta.get(key), int):
            result.step = int(meta[key])
    cfg_text = meta.get("cfg")
    if isinstance(cfg_text, str):
        cfg = parse_mmengine_config_text(cfg_text)
        model = cfg.get("model") if isinstance(cfg.get("model"), Mapping) else {}
        mean, std = _dig(model, "data_preprocessor", "mean"), _dig(model, "data_preprocessor", "std")
        if isinstance(mean, list) and isinstance(std, list):
            result.mean, result.std = [float(v) for v in mean], [float(v) for v in std]
        backbone = model.get("backbone") if isinstance(model.get("backbone"), Mapping) else {}
        result.backbone_type = backbone.get("type") if isinstance(backbone.get("type"), str) else None
        if isinstance(backbone.get("wave_list"), list):
            result.wavelengths = [float(v) for v in backbone["wave_list"]]
        if isinstance(backbone.get("in_chans"), int):
            result.in_chans = int(backbone["in_chans"])
        moe = backbone.get("depthmoe_config")
        if isinstance(moe, Mapping):
            result.moe = {k: v for k, v in moe.items() if v is not None}
    return result


# ---------------------------------------------------------------- class names, palette, metadata
def default_palette(n: int) -> list[list[int]]:
    """n well-separated colours (golden-ratio hues)."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95 if i % 2 == 0 else 0.75)
        out.append([int(round(255 * r)), int(round(255 * g)), int(round(255 * b))])
    return out


def read_classes_file(path: str | os.PathLike) -> tuple[list[str], list[list[int]] | None]:
    """Class names (and optional palette) from ``.txt`` (one name per line), or ``.json``/``.yaml`` holding a
    list of names, a list of ``{name, color}`` entries, or a mapping with ``classes`` (+ ``palette``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classes file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip()], None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot parse ({_first_line(exc)})") from None
    palette = None
    if isinstance(data, Mapping):
        palette = data.get("palette")
        data = data.get("classes")
    if isinstance(data, list) and data and all(isinstance(e, Mapping) for e in data):
        palette = [list(e["color"]) for e in data] if all("color" in e for e in data) else None
        data = [e.get("name") for e in data]
    if not isinstance(data, list) or not all(isinstance(c, str) for c in data):
        raise ValueError(f"{path}: expected a list of class names (or a mapping with 'classes')")
    if palette is not None:
        if len(palette) != len(data) or not all(isinstance(p, (list, tuple)) and len(p) == 3 for p in palette):
            raise ValueError(f"{path}: palette must have one [r, g, b] per class ({len(data)})")
        palette = [[int(v) for v in p] for p in palette]
    return list(data), palette


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


class _Tensors:
    """What :func:`rsmoe.engine.checkpoints.save_checkpoint` needs from a model: the trainable tensors."""

    def __init__(self, tensors: dict[str, Tensor]):
        self._tensors = tensors

    def trainable_state_dict(self) -> dict[str, Tensor]:
        return self._tensors


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
    ignore_index: int | None = None,
    force: bool = False,
    quiet: bool = False,
) -> Path:
    """The authors' checkpoint → rsmoe checkpoint for ``config`` (a :class:`rsmoe.config.Config`).

    Checks every trainable tensor of the model the config builds (names and shapes, on the meta device — no
    weights are read). Metadata sources, first found wins: class names ``classes_file`` → the checkpoint's
    ``meta.dataset_meta`` → ``data_root`` → ``num_classes`` (placeholder names) → the class count of
    ``cls_embed``; wavelengths ``wavelengths`` → ``sensor`` → ``data_root`` (first source domain) → the authors'
    ``wave_list`` → RGB when the authors' config has 3 input bands; mean/std ``mean``/``std`` → ``data_root``
    → the authors' ``data_preprocessor`` → 0/1 (unknown). Unknowns go to ``import_unknown``.
    """
    from ..engine.checkpoints import save_checkpoint
    from ..params import meta_model
    from ..sensors import get_sensor

    src, out = Path(src), Path(out_path)
    where = str(src)
    loaded = load_torch_file(src, "SpectralMoE checkpoint")
    state = _tensor_dict(loaded, src, keys=("state_dict", "model"))
    official = read_official_meta(loaded)
    imported = convert_spectralmoe_official_state_dict(state, where)
    notes, unknown = list(imported.notes), []

    a = config.adapter
    if a.type != "spectralmoe":
        raise ValueError(f"{where}: the config's adapter.type is {a.type!r}; a SpectralMoE checkpoint needs "
                         "adapter.type: spectralmoe")
    if not config.depth.enabled:
        raise ValueError(f"{where}: the checkpoint has depth routers; the config needs depth.enabled: true")
    if config.head.type != "mask2former" or not a.query_link:
        raise ValueError(f"{where}: the checkpoint has a Mask2Former head fed by the query link; the config needs "
                         "head.type: mask2former and adapter.query_link: true")
    for key, want in (("expert_logits", "official"), ("fusion", "official"), ("combine", "official")):
        if getattr(a, key) != want:
            notes.append(f"adapter.{key} is {getattr(a, key)!r}: outputs will differ from the authors' code "
                         f"(which computes {want!r})")
    moe = official.moe
    if moe:
        gating = moe.get("gating", "softmax")
        if gating != a.gating:
            notes.append(f"the authors' config used gating {gating!r} but this config has {a.gating!r}")
        if a.gating == "laplace" and a.distance_p != 2.0:
            notes.append(f"adapter.distance_p is {a.distance_p}; the authors' code uses the Euclidean distance (2)")
        for theirs, ours in (("top_k", a.top_k), ("num_experts", a.num_experts), ("token_length", a.num_tokens)):
            if theirs in moe and moe[theirs] != ours:
                raise ValueError(f"{where}: the authors' config has {theirs}={moe[theirs]}, this config {ours}")
        if "noisy_gating" in moe and bool(moe["noisy_gating"]) != a.noisy:
            notes.append(f"the authors' config has noisy_gating={moe['noisy_gating']}, this config noisy={a.noisy}")
    else:
        unknown.append("gating/top_k/noise: not recorded in the checkpoint — taken from the config (the published "
                       "configs use laplace gating with the Euclidean distance, top-1, noisy)")

    # ---- class names / palette
    info = None
    if data_root is not None:
        from ..data.prepared import load_dataset_info

        info = load_dataset_info(data_root)
    head_classes = int(imported.tensors["head.class_embed.weight"].shape[0]) - 1
    palette = None
    if classes_file is not None:
        names, palette = read_classes_file(classes_file)
    elif official.classes is not None:
        names, palette = official.classes, official.palette
    elif info is not None:
        names, palette = list(info.classes), [list(p) for p in info.palette]
    elif num_classes is not None:
        names = [f"class_{i}" for i in range(num_classes)]
        unknown.append("class names (placeholders class_0…)")
    else:
        names = [f"class_{i}" for i in range(head_classes)]
        unknown.append("class names (placeholders; count from decode_head.cls_embed)")
    if num_classes is not None and num_classes != len(names):
        raise ValueError(f"{where}: --num-classes {num_classes} but {len(names)} class names were found")
    if len(names) != head_classes:
        raise ValueError(f"{where}: {len(names)} class names but decode_head.cls_embed predicts {head_classes} "
                         "classes (+ no-object)")
    if palette is None or len(palette) != len(names):
        palette = default_palette(len(names))
        unknown.append("palette (generated)")

    # ---- bands
    band_names: list[str] = []
    sensor_key = None
    if wavelengths is not None:
        wl = [float(w) for w in wavelengths]
    elif sensor is not None:
        s = get_sensor(sensor)
        wl, band_names, sensor_key = list(s.wavelengths), list(s.band_names), sensor
    elif info is not None:
        domain = config.data.source_domains[0] if config.data.source_domains else next(iter(info.sensors))
        sensor_key = info.sensors.get(domain)
        if sensor_key is None:
            raise ValueError(f"{where}: domain {domain!r} is not in {data_root}/dataset.yaml")
        s = get_sensor(sensor_key)
        wl, band_names = list(s.wavelengths), list(s.band_names)
    elif official.wavelengths is not None:
        wl = official.wavelengths
        notes.append("band wavelengths from the authors' config (wave_list)")
    elif official.in_chans == 3:
        s = get_sensor("RGB")
        wl, band_names, sensor_key = list(s.wavelengths), list(s.band_names), "RGB"
    else:
        chans = f" ({official.in_chans} bands)" if official.in_chans else ""
        raise ValueError(f"{where}: band wavelengths unknown{chans}: pass --sensor, --wavelengths or --data (the "
                         "band order the model was trained with; the published Five-Billion-Pixels models take "
                         "NIR,R,G,B: --wavelengths 0.83 0.665 0.56 0.49)")
    if official.in_chans is not None and official.in_chans != len(wl):
        raise ValueError(f"{where}: the authors' config has in_chans={official.in_chans}, got {len(wl)} wavelengths")

    # ---- normalisation
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise ValueError("--mean and --std go together")
        mean_l, std_l = [float(v) for v in mean], [float(v) for v in std]
    elif info is not None:
        mean_l, std_l = list(info.mean), list(info.std)
    elif official.mean is not None:
        mean_l, std_l = official.mean, official.std
        notes.append("mean/std from the authors' data_preprocessor (in the units of their input files)")
    else:
        mean_l, std_l = [0.0] * len(wl), [1.0] * len(wl)
        unknown.append("normalisation mean/std (set to 0/1)")
    if len(mean_l) != len(wl) or len(std_l) != len(wl):
        raise ValueError(f"{where}: mean/std have {len(mean_l)}/{len(std_l)} values for {len(wl)} bands")
    ignore = ignore_index if ignore_index is not None else (info.ignore_index if info is not None else 255)

    # ---- exact check against the model the config builds, then write
    model = meta_model(config, len(names), wl)
    expected = {k: tuple(v.shape) for k, v in model.trainable_state_dict().items()}
    _check_keys(where, imported.tensors, expected, names=official_key_for)
    tensors = {k: imported.tensors[k].detach().to(torch.float32).contiguous() for k in expected}

    meta_cls = _imported_meta_cls()
    extra = {
        "import_format": "spectralmoe-official",
        "import_source": src.name,
        "import_notes": json.dumps(notes),
        "import_unknown": json.dumps(unknown),
    }
    meta = meta_cls(config=config, class_names=list(names), palette=[list(p) for p in palette], mean=mean_l,
                    std=std_l, wavelengths=wl, band_names=band_names, sensor=sensor_key, ignore_index=int(ignore),
                    step=official.step, extra=extra)
    _prepare_output(out, directory=False, force=force)
    save_checkpoint(_Tensors(tensors), meta, out)
    if not quiet:
        for line in notes:
            print(f"note: {line}", file=sys.stderr)
        for line in unknown:
            print(f"unknown: {line}", file=sys.stderr)
    return out
