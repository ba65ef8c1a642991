"""The one error a release preparer raises for a wrong or incomplete release."""
from __future__ import annotations

from rsmoe.errors import DataError


class PrepareError(DataError):
    """A wrong or incomplete release or preparation option: one line naming the file, folder or option and what
    was expected (``rsmoe prepare`` prints it as ``rsmoe prepare: error: …`` with exit status 2)."""


__all__ = ["PrepareError"]
