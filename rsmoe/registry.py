"""Name → implementation tables for config values (``head.type``, ``adapter.type``, ``backbone.kind`` …).

One style everywhere: a :class:`Registry` maps a config name to a ``"module:attribute"`` string, imported the first
time the name is used, so reading a config or printing ``--help`` never imports torch or a model file. An unknown
name is a :class:`~rsmoe.errors.ConfigError` that lists the known ones.
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import ConfigError


class Registry:
    """``Registry("head.type", {"fpn": "rsmoe.models.heads.fpn:FPNHead", …})``; ``get(name)`` imports and returns
    the attribute."""

    def __init__(self, what: str, entries: dict[str, str]):
        self.what = what
        self.entries = dict(entries)

    def names(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def check(self, name: str) -> str:
        """``name`` if known, else a :class:`ConfigError` naming the known values."""
        if name not in self.entries:
            raise ConfigError(f"{self.what}: got {name!r}, expected one of {self.names()}")
        return name

    def get(self, name: str) -> Any:
        module, _, attr = self.entries[self.check(name)].partition(":")
        return getattr(importlib.import_module(module), attr)


__all__ = ["Registry"]
