"""Backbone registry: name -> loader. Unknown names raise ConfigError listing the known ones."""

from __future__ import annotations

from engine.config import BACKBONE_NAMES, EngineConfig
from engine.errors import ConfigError
from engine.model.backbones.base import Backbone, EncodedImages, ImageBatch
from engine.model.loading import Placement

__all__ = ["Backbone", "EncodedImages", "ImageBatch", "backbone_class", "load_backbone"]


def backbone_class(name: str) -> type[Backbone]:
    """The :class:`Backbone` subclass registered under ``name``."""
    if name == "paper":
        from engine.model.backbones.paper import PaperBackbone

        return PaperBackbone
    if name == "qwen2.5-vl":
        from engine.model.backbones.qwen25vl import Qwen25VLBackbone

        return Qwen25VLBackbone
    if name == "qwen3-vl":
        from engine.model.backbones.qwen3vl import Qwen3VLBackbone

        return Qwen3VLBackbone
    raise ConfigError(f"unknown backbone {name!r}; known backbones: {', '.join(BACKBONE_NAMES)}")


def load_backbone(cfg: EngineConfig, placement: Placement) -> Backbone:
    """Load the configured backbone's weights with ``placement``'s device and quantization."""
    return backbone_class(cfg.backbone).load(cfg, placement)
