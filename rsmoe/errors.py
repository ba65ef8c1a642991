"""The one family of user-facing errors.

Every problem a user can fix (a bad config value, a missing or corrupt file, a dataset that does not match its
manifest, a checkpoint of another model, a scene the model cannot read) raises a subclass of :class:`RsmoeError`
with a one-line message that names the file or value and what was expected. The command line catches exactly this
class and prints ``rsmoe <command>: error: <message>`` with exit status 2; anything else is a bug in rsmoe and keeps
its traceback.

The subclasses also derive from ``ValueError`` so that library callers who catch ``ValueError`` keep working.
"""
from __future__ import annotations


class RsmoeError(Exception):
    """Base class of every user-facing rsmoe error (one line, printed by the CLI without a traceback).

    The message is collapsed to a single line when the error is made."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(one_line(message), *args)


class ConfigError(RsmoeError, ValueError):
    """A run config, ablation grid or command-line override that cannot be used."""


class DataError(RsmoeError, ValueError):
    """A prepared dataset, tile, manifest row or raw release that is missing, corrupt or inconsistent."""


class MissingFileError(RsmoeError, FileNotFoundError):
    """A file or folder the user named (or that a dataset/checkpoint refers to) does not exist."""


class CheckpointError(RsmoeError, ValueError):
    """A checkpoint or weight file that cannot be read, or that belongs to another model."""


class PredictError(RsmoeError, ValueError):
    """A scene or option of ``rsmoe predict`` that cannot be used."""


class OutputError(RsmoeError, OSError):
    """An output file or folder that cannot be written: read-only, full, a file where a folder is expected, a
    folder that does not exist."""


class TrainingError(RsmoeError, ArithmeticError):
    """Training cannot go on: a non-finite loss or weights (learning rate too high, or bad values in the data)."""


class CaptionError(RsmoeError, RuntimeError):
    """A caption could not be produced (MLLM backend, caption store); ``requests`` is how many backend calls were
    spent on it."""

    def __init__(self, message: object = "", requests: int = 1) -> None:
        super().__init__(message)
        self.requests = requests


def one_line(message: object) -> str:
    """``message`` as a single line (newlines and runs of blanks collapsed), for error messages."""
    return " ".join(str(message).split())


__all__ = ["CaptionError", "CheckpointError", "ConfigError", "DataError", "MissingFileError", "OutputError", "PredictError",
           "RsmoeError", "TrainingError", "one_line"]
