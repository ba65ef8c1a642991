"""Class names and colours for an imported checkpoint: a classes file given by the user, or generated colours."""
from __future__ import annotations

import colorsys
import json
import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import ConfigError
from ..io.torch_files import first_line


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
        raise ConfigError(f"classes file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip()], None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot parse ({first_line(exc)})") from None
    palette = None
    if isinstance(data, Mapping):
        palette = data.get("palette")
        data = data.get("classes")
    if isinstance(data, list) and data and all(isinstance(e, Mapping) for e in data):
        palette = [list(e["color"]) for e in data] if all("color" in e for e in data) else None
        data = [e.get("name") for e in data]
    if not isinstance(data, list) or not all(isinstance(c, str) for c in data):
        raise ConfigError(f"{path}: expected a list of class names (or a mapping with 'classes')")
    if palette is not None:
        if len(palette) != len(data) or not all(isinstance(p, (list, tuple)) and len(p) == 3 for p in palette):
            raise ConfigError(f"{path}: palette must have one [r, g, b] per class ({len(data)})")
        palette = [[int(v) for v in p] for p in palette]
    return list(data), palette


__all__ = ["default_palette", "read_classes_file"]
