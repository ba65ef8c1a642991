"""What the authors' mmsegmentation checkpoint says besides its tensors: mmengine's ``meta`` (iteration, the
dataset's class names and palette) and the training config text it stores (``meta.cfg``: normalisation, input
bands, the DepthMoE settings). The config text is parsed as Python syntax and only literals are kept; nothing in
it is executed."""
from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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
    """What the checkpoint itself says besides tensors, all optional.

    ``classes`` / ``palette``: mmengine's ``meta.dataset_meta``; ``mean`` / ``std``: the config's
    ``data_preprocessor`` (in the authors' input band order and the units of their input files); ``wavelengths``:
    the backbone's ``wave_list`` (µm, the authors' input band order; only DOFA configs record it); ``in_chans``:
    the backbone's input band count; ``moe``: the ``depthmoe_config`` settings; ``step``: ``meta.iter``."""

    classes: list[str] | None = None
    palette: list[list[int]] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    wavelengths: list[float] | None = None
    in_chans: int | None = None
    moe: dict[str, Any] = field(default_factory=dict)
    backbone_type: str | None = None
    step: int = 0


def _read_dataset_meta(dataset_meta: Any, result: OfficialMeta) -> None:
    if not isinstance(dataset_meta, Mapping):
        return
    classes = dataset_meta.get("classes")
    if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        result.classes = list(classes)
    palette = dataset_meta.get("palette")
    if isinstance(palette, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 3 for p in palette):
        result.palette = [[int(v) for v in p] for p in palette]


def _read_model_config(cfg_text: Any, result: OfficialMeta) -> None:
    if not isinstance(cfg_text, str):
        return
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


def read_official_meta(obj: Any) -> OfficialMeta:
    """The :class:`OfficialMeta` of a loaded mmengine checkpoint (empty when it has no ``meta``)."""
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    result = OfficialMeta()
    if not isinstance(meta, Mapping):
        return result
    _read_dataset_meta(meta.get("dataset_meta"), result)
    for key in ("iter", "step"):
        if isinstance(meta.get(key), int):
            result.step = int(meta[key])
    _read_model_config(meta.get("cfg"), result)
    return result


__all__ = ["OfficialMeta", "parse_mmengine_config_text", "read_official_meta"]
