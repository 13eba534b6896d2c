"""Exceptions raised by the engine.

One root, :class:`EngineError`; each subclass also inherits the matching builtin so callers that
only know Python's exceptions still catch them. Messages say what was wrong (with the value seen)
and what to do next; ``app/`` shows them to the analyst verbatim.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CorpusError",
    "DataFormatError",
    "EngineError",
    "InputError",
    "KnowledgeBaseError",
    "ManifestMismatchError",
    "MissingDependencyError",
    "OutOfMemoryError",
    "WeightsNotFoundError",
]


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""


class ConfigError(EngineError, ValueError):
    """A configuration value is invalid (the message names the field and the allowed values)."""


class WeightsNotFoundError(EngineError, FileNotFoundError):
    """Model or adapter weights are missing at the given path."""


class MissingDependencyError(EngineError, ImportError):
    """An optional dependency (bitsandbytes, faiss, open_clip, CUDA) is not available."""


class KnowledgeBaseError(EngineError, OSError):
    """A semantic knowledge base on disk is missing, incomplete or corrupt."""


class ManifestMismatchError(KnowledgeBaseError):
    """A knowledge base was built with another embedding model than the one asked for."""


class CorpusError(EngineError, ValueError):
    """A description corpus is empty, unreadable or badly encoded."""


class InputError(EngineError, ValueError):
    """A request to the engine is malformed (image shape/dtype, task, region box, labels)."""


class OutOfMemoryError(EngineError, MemoryError):
    """The accelerator ran out of memory even after retrying at a smaller image size."""


class DataFormatError(EngineError, ValueError):
    """A dataset file does not follow the format its loader expects."""
