"""GeoLens engine: the semantic-augmented remote-sensing vision-language model.

The engine sees an RGB uint8 array, a task and a question; it never imports rasterio, gradio or
``tiles``. Heavy dependencies (torch, transformers, faiss, open_clip) are imported lazily by the
modules that need them, so ``import engine`` stays cheap.
"""

from engine.errors import (
    ConfigError,
    CorpusError,
    DataFormatError,
    EngineError,
    InputError,
    KnowledgeBaseError,
    ManifestMismatchError,
    MissingDependencyError,
    OutOfMemoryError,
    WeightsNotFoundError,
)
from engine.types import Answer, BoxPx, Evidence, Level, Task, Timing

__all__ = [
    "Answer",
    "BoxPx",
    "ConfigError",
    "CorpusError",
    "DataFormatError",
    "EngineError",
    "Evidence",
    "InputError",
    "KnowledgeBaseError",
    "Level",
    "ManifestMismatchError",
    "MissingDependencyError",
    "OutOfMemoryError",
    "Task",
    "Timing",
    "WeightsNotFoundError",
]
