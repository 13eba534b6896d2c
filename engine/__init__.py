"""GeoLens engine: the semantic-augmented remote-sensing vision-language model.

The engine sees an RGB uint8 array, a task and a question; it never imports rasterio, gradio or
``tiles``. Heavy dependencies (torch, transformers, faiss, open_clip) are imported lazily by the
modules that need them, so ``import engine`` stays cheap: the configs below are plain dataclasses,
and ``Engine`` plus the stream events are loaded on first access (PEP 562 ``__getattr__``).

Typical use::

    from engine import Engine, EngineConfig, Final, TextDelta

    engine = Engine.from_config(EngineConfig(backbone="qwen2.5-vl", model_path="/models/qwen2.5-vl-3b"))
    answer = engine.run(crop_rgb_uint8, "ground", question="storage tank")   # -> Answer
    for event in engine.stream(crop_rgb_uint8, "ask", question="What is here?"):
        ...  # TextDelta pieces (maybe a Reset), then Final(answer)
"""

from engine.config import (
    EngineConfig,
    ExpertConfig,
    GenerationConfig,
    ImageConfig,
    LoraConfig,
    PrompterConfig,
    QuantConfig,
    RetrievalConfig,
)
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

_LAZY = {
    "Engine": "engine.engine",
    "SemanticRetriever": "engine.engine",
    "TextDelta": "engine.generation",
    "Reset": "engine.generation",
    "Final": "engine.generation",
    "StreamEvent": "engine.generation",
}


def __getattr__(name: str):
    """Load ``Engine`` and the stream events (they import torch) on first access."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = [
    "Answer",
    "BoxPx",
    "ConfigError",
    "CorpusError",
    "DataFormatError",
    "Engine",
    "EngineConfig",
    "EngineError",
    "Evidence",
    "ExpertConfig",
    "Final",
    "GenerationConfig",
    "ImageConfig",
    "InputError",
    "KnowledgeBaseError",
    "Level",
    "LoraConfig",
    "ManifestMismatchError",
    "MissingDependencyError",
    "OutOfMemoryError",
    "PrompterConfig",
    "QuantConfig",
    "Reset",
    "RetrievalConfig",
    "SemanticRetriever",
    "StreamEvent",
    "Task",
    "TextDelta",
    "Timing",
    "WeightsNotFoundError",
]
