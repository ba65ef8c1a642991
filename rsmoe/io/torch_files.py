"""Reading PyTorch weight files (``.pth`` / ``.pt`` / ``.ckpt``) safely, finding the state dict inside them, and
checking its keys and shapes against a model; reading ``.safetensors`` weights with their metadata.

Every torch file rsmoe reads — the public checkpoints the converters take, DINOv3 / DOFA files named by
``backbone.pretrained`` — goes through :func:`read_torch_file` and :func:`extract_state_dict`, so a file that one
of them accepts is accepted by all of them.

**Safe reading.** Files are read with ``torch.load(weights_only=True)`` on the CPU: no code from the file runs.
Training checkpoints written by mmengine, Lightning or the DINO trainers also pickle logging objects
(``HistoryBuffer``, numpy scalars, …) that ``weights_only`` refuses. Those globals — and only those, as listed by
``torch.serialization.get_unsafe_globals_in_checkpoint`` — are bound to an inert placeholder class that stores its
arguments and runs nothing.

**The state-dict rule.** A loaded object is a state dict when some of its values are tensors. Otherwise the first
of :data:`WRAPPER_KEYS` whose value is a mapping is opened, repeatedly (``{"model": {"state_dict": …}}`` works):
``state_dict`` (mmengine, Lightning), ``model`` (timm, MAE, DINOv3 release files), ``module``, ``teacher`` (DINO
training checkpoints, as the DINOv2/DINOv3 evaluation code reads them with ``checkpoint_key="teacher"``). Then
non-tensor entries are dropped, a ``module.`` prefix on every key (DistributedDataParallel) is removed, and — when
the caller names a ``prefix`` such as ``"backbone."`` and some keys carry it — only those keys are kept, with the
prefix removed (a DINO teacher holds ``backbone.*`` beside its projection heads).

Every problem is a one-line :class:`~rsmoe.errors.CheckpointError` naming the file.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError

if TYPE_CHECKING:  # torch is imported where it is used, so that importing rsmoe.io stays cheap
    from torch import Tensor

#: Keys under which training frameworks nest the state dict, in the order they are tried.
WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model", "module", "teacher")
#: How deep :func:`extract_state_dict` looks for nested wrappers.
MAX_NESTING = 4


def short_list(items: Sequence[str], limit: int = 6) -> str:
    """``a, b, c, … (+N more)``: at most ``limit`` items of a list, for one-line messages."""
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f", … (+{len(items) - limit} more)" if len(items) > limit else "")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ('' if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


# ---------------------------------------------------------------------------------------------------- reading
class _Inert:
    """Stand-in for a global a checkpoint pickles but ``weights_only`` refuses (logging objects and the like).

    It records what the unpickler hands it and does nothing else; one subclass is made per global name."""

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


def read_torch_file(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """The object stored in a torch file, read with ``weights_only=True`` on the CPU; globals that
    ``weights_only`` refuses become inert placeholders (see the module docstring). ``what`` names the file in
    errors ("DOFA checkpoint"). Raises a one-line :class:`CheckpointError`."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 - weights_only raises UnpicklingError or RuntimeError
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # noqa: BLE001 - e.g. the legacy (non-zip) format: nothing more can be done safely
            unsafe = []
        if not unsafe:
            raise CheckpointError(f"{path}: cannot read as a weights-only torch checkpoint "
                                  f"({type(first).__name__}: {first_line(first)})") from None
        try:
            with torch.serialization.safe_globals([(_placeholder(n), n) for n in unsafe]):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as second:  # noqa: BLE001
            raise CheckpointError(f"{path}: cannot read as a weights-only torch checkpoint, even with placeholders "
                                  f"for {short_list(unsafe)} ({type(second).__name__}: {first_line(second)})"
                                  ) from None


def extract_state_dict(obj: Any, where: str | os.PathLike, prefix: str | None = None) -> dict[str, "Tensor"]:
    """The tensor state dict inside a loaded checkpoint, by the rule of the module docstring.

    ``where`` names the file in errors; ``prefix`` (e.g. ``"backbone."``): keep only the keys under it, stripped,
    when some key carries it (otherwise the dict is returned as is)."""
    from torch import Tensor

    state = obj
    for _ in range(MAX_NESTING):
        if not isinstance(state, Mapping) or any(isinstance(v, Tensor) for v in state.values()):
            break
        inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{where}: expected a state dict, got {type(state).__name__}")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{where}: no tensors found (top-level keys: {short_list([str(k) for k in state])}; "
                              f"looked inside {', '.join(WRAPPER_KEYS)})")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    if prefix and any(k.startswith(prefix) for k in tensors):
        tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return tensors


def read_state_dict(path: str | os.PathLike, what: str = "checkpoint", prefix: str | None = None
                    ) -> dict[str, "Tensor"]:
    """:func:`read_torch_file` then :func:`extract_state_dict`: the tensors of a torch weight file."""
    return extract_state_dict(read_torch_file(path, what), path, prefix=prefix)


def read_safetensors(path: str | os.PathLike, what: str = "weights", format_tag: str | None = None
                     ) -> tuple[dict[str, "Tensor"], dict[str, str]]:
    """(tensors, string metadata) of a ``.safetensors`` file (which holds no code, so nothing needs guarding);
    with ``format_tag``, the metadata's ``format`` must equal it. One-line :class:`CheckpointError` otherwise."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: "
                              f"{first_line(exc)})") from None
    if format_tag is not None and meta.get("format") != format_tag:
        raise CheckpointError(f"{path}: not a {what} file (metadata format {meta.get('format')!r}, expected "
                              f"{format_tag!r})")
    return tensors, meta


# ---------------------------------------------------------------------------------------------------- checking
@dataclass
class KeyReport:
    """How a state dict differs from what a model expects: keys with another shape (one line each, naming both
    shapes), keys the model needs but the file lacks, keys the file has but the model does not."""

    mismatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.mismatched or self.missing or self.unexpected)

    def message(self, what: str = "") -> str:
        """The differences on one line (``what`` qualifies the shape mismatch, e.g. "for DOFA-base")."""
        parts = []
        if self.mismatched:
            parts.append(f"shape mismatch{' ' + what if what else ''}: {short_list(self.mismatched)}")
        if self.missing:
            parts.append(f"missing {len(self.missing)} key(s): {short_list(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)} key(s): {short_list(self.unexpected)}")
        return "; ".join(parts)


def compare_keys(tensors: Mapping[str, Any], expected: Mapping[str, Sequence[int]],
                 names: Callable[[str], str] = lambda k: k) -> KeyReport:
    """Compare a state dict (anything with ``.shape``) with the expected key → shape table; ``names`` maps a key
    back to the source naming for the messages."""
    report = KeyReport()
    for key, want in expected.items():
        if key in tensors and tuple(tensors[key].shape) != tuple(want):
            report.mismatched.append(f"{names(key)}: checkpoint {tuple(tensors[key].shape)} vs model {tuple(want)}")
    report.missing = [names(k) for k in expected if k not in tensors]
    report.unexpected = [names(k) for k in tensors if k not in expected]
    return report


def check_keys(where: str | os.PathLike, tensors: Mapping[str, Any], expected: Mapping[str, Sequence[int]],
               names: Callable[[str], str] = lambda k: k, what: str = "") -> None:
    """Exactly the expected keys with the expected shapes, or a one-line :class:`CheckpointError`."""
    report = compare_keys(tensors, expected, names)
    if report:
        raise CheckpointError(f"{where}: {report.message(what)}")


__all__ = ["MAX_NESTING", "WRAPPER_KEYS", "KeyReport", "check_keys", "compare_keys", "extract_state_dict",
           "first_line", "read_safetensors", "read_state_dict", "read_torch_file", "short_list"]
