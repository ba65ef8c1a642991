"""Safe ``.pth``/``.ckpt`` loading (``weights_only=True``, inert placeholders for refused globals) and the
helpers shared by every converter: state-dict unwrapping, output preparation, one-line key/shape errors."""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


# ================================================================================================================
# Safe loading
# ================================================================================================================
class _Inert:
    """Stand-in for a global a checkpoint pickles but ``weights_only`` refuses (logging objects and the like).

    It records what the unpickler hands it and does nothing else; subclasses are made per global name."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Inert":
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: D107 - nothing to do
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<placeholder for {type(self).__qualname__}>"


def _placeholder(name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (_Inert,), {"__qualname__": name, "__module__": __name__})


def load_torch_file(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; globals that ``weights_only`` refuses become inert
    placeholders (see the module docstring). Raises a one-line ``FileNotFoundError`` / ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 - weights_only raises UnpicklingError or RuntimeError
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # noqa: BLE001 - e.g. the legacy (non-zip) format: nothing more we can do safely
            unsafe = []
        if not unsafe:
            raise ValueError(f"{path}: cannot read as a weights-only torch checkpoint "
                             f"({type(first).__name__}: {_first_line(first)})") from None
        try:
            with torch.serialization.safe_globals([(_placeholder(n), n) for n in unsafe]):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as second:  # noqa: BLE001
            raise ValueError(f"{path}: cannot read as a weights-only torch checkpoint, even with placeholders "
                             f"for {_short(unsafe)} ({type(second).__name__}: {_first_line(second)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _short(items: Sequence[str], limit: int = 6) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f", … (+{len(items) - limit} more)" if len(items) > limit else "")


def _tensor_dict(obj: Any, path: Path, keys: Sequence[str] = ("state_dict", "model", "module")) -> dict[str, Tensor]:
    """The tensor state dict inside a loaded checkpoint (bare, or under one of ``keys``); ``module.`` stripped."""
    state = obj
    if isinstance(state, Mapping) and not any(isinstance(v, Tensor) for v in state.values()):
        for key in keys:
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ValueError(f"{path}: no tensors found (top-level keys: {_short([str(k) for k in state])})")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _prepare_output(out: Path, *, directory: bool, force: bool) -> None:
    if out.exists():
        if directory and out.is_dir() and not any(out.iterdir()):
            return
        if not force:
            raise FileExistsError(f"{out} already exists; pass --force to overwrite")
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)


def _shape_error(where: str, key: str, got: Sequence[int], want: Sequence[int]) -> ValueError:
    return ValueError(f"{where}: shape mismatch for {key}: checkpoint {tuple(got)} vs model {tuple(want)}")


def _check_keys(where: str, tensors: Mapping[str, Tensor], expected: Mapping[str, Sequence[int]],
                names: Callable[[str], str] = lambda k: k) -> None:
    """Exactly the expected keys with the expected shapes, or a one-line error (``names`` maps a key back to the
    source naming for the message)."""
    for key, want in expected.items():
        if key in tensors and tuple(tensors[key].shape) != tuple(want):
            raise _shape_error(where, names(key), tensors[key].shape, want)
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_short([names(k) for k in missing])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_short([names(k) for k in unexpected])}")
        raise ValueError(f"{where}: " + "; ".join(parts))
