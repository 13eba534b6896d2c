"""Lazy imports of the heavy optional dependencies of the retrieval package.

``import engine.retrieval`` stays cheap (numpy only); faiss, torch and open_clip load on first
use, and a missing one raises :class:`~engine.errors.MissingDependencyError` naming the pip
package to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from engine.errors import MissingDependencyError

__all__ = ["import_faiss", "import_open_clip", "import_torch"]

_PIP_NAMES = {
    "faiss": "faiss-cpu==1.15.1",
    "open_clip": "open_clip_torch==3.3.0",
    "torch": "torch==2.14.1",
}


def _import(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"the retrieval knowledge base needs {module!r}, which failed to import ({exc}); "
            f"install it with: pip install {_PIP_NAMES[module]}"
        ) from exc


def import_faiss() -> ModuleType:
    """The ``faiss`` module (faiss-cpu or faiss-gpu)."""
    return _import("faiss")


def import_open_clip() -> ModuleType:
    """The ``open_clip`` module (package ``open_clip_torch``)."""
    return _import("open_clip")


def import_torch() -> ModuleType:
    """The ``torch`` module."""
    return _import("torch")
