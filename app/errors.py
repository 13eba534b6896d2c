"""Exceptions raised by ``app``.

One root, :class:`AppError`; each subclass also inherits the matching builtin. Messages quote the
bad value and say what to do next: the UI shows them to the analyst verbatim (as ``gr.Error``),
``launch.py`` prints them and exits with status 2.
"""

from __future__ import annotations

__all__ = [
    "AppConfigError",
    "AppError",
    "AssetNotFoundError",
    "NoModelError",
    "ResultsStoreError",
    "UserInputError",
]


class AppError(Exception):
    """Root of every error ``app`` raises on purpose."""


class AppConfigError(AppError, ValueError):
    """A launch flag or GEOLENS_* environment variable is invalid (names the flag and the fix)."""


class UserInputError(AppError, ValueError):
    """Something the analyst did in the UI cannot be served (no raster, no region, bad labels)."""


class NoModelError(AppError, RuntimeError):
    """A request needs the model but the app runs without one."""


class ResultsStoreError(AppError, OSError):
    """The results file in the workspace cannot be read or written."""


class AssetNotFoundError(AppError, FileNotFoundError):
    """A file the app ships under ``assets/`` is missing (a broken checkout)."""
