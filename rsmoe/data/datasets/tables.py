"""Shipped and user-given tables (CSV, YAML) and list-valued options of the preparers.

The shipped tables live in ``rsmoe/resources`` (:func:`resource`); a user passes their own in the same format. Every
reader raises :class:`~rsmoe.data.datasets.errors.PrepareError` naming the file and the columns it needs.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import yaml

from .errors import PrepareError

RESOURCES = Path(__file__).resolve().parents[2] / "resources"


def resource(name: str) -> Path:
    """A data table shipped in ``rsmoe/resources``."""
    return RESOURCES / name


def read_csv_rows(path: str | Path, required: Sequence[str], what: str) -> list[dict[str, str]]:
    """The non-empty rows of a CSV (keys and values stripped); a one-line error names the file and the missing
    columns."""
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"{path}: {what} not found (a CSV with columns {','.join(required)})")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in cols]
        if missing:
            raise PrepareError(f"{path}: {what} needs the columns {','.join(required)}; missing {','.join(missing)}")
        rows = []
        for row in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str) or v is None}
            if any(row.values()):
                rows.append(row)
    return rows


def read_yaml_file(path: str | Path, what: str) -> Any:
    """The parsed content of a YAML file; a missing file or a syntax error is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise PrepareError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None


def as_list(value: Any) -> list[str]:
    """A list of strings from a list, a tuple or a comma-separated string (``None``/'' → [])."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v).strip() for v in value if str(v).strip()]


__all__ = ["RESOURCES", "as_list", "read_csv_rows", "read_yaml_file", "resource"]
