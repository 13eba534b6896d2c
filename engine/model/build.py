"""Build the :class:`SemanticVLM` an :class:`engine.config.EngineConfig` asks for.

* With ``adapter_path``: the adapter's manifest fixes the architecture (level layers, prompter,
  experts, LoRA, image positions); the base is loaded, checked against the manifest's
  signature, the modules are attached and the weights copied in.
* ``qwen2.5-vl`` and ``qwen3-vl`` without an adapter: the pretrained model alone (zero-shot).
* ``paper`` without an adapter: fresh modules from the config (random projector and prompter:
  the answers are meaningless until trained; a warning says so). Used by training and tests.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from engine.config import EngineConfig
from engine.errors import ConfigError
from engine.model.adapter import check_base, load_adapter_weights, read_manifest
from engine.model.backbones import load_backbone
from engine.model.loading import Placement
from engine.model.vlm import SemanticVLM

__all__ = ["build_vlm", "new_trainable_vlm"]

logger = logging.getLogger(__name__)


def build_vlm(cfg: EngineConfig, placement: Placement) -> SemanticVLM:
    """The inference model for ``cfg`` (eval mode, everything frozen)."""
    if cfg.adapter_path is not None:
        manifest = read_manifest(cfg.adapter_path)
        if manifest.backbone != cfg.backbone:
            raise ConfigError(
                f"adapter {str(cfg.adapter_path)!r} is for backbone {manifest.backbone!r} but the "
                f"config asks for {cfg.backbone!r}; use --backbone {manifest.backbone}"
            )
        backbone = load_backbone(
            dataclasses.replace(cfg, level_layers=manifest.level_layers), placement
        )
        check_base(manifest, backbone)
        vlm = SemanticVLM.with_adapter_modules(
            backbone, manifest.prompter, manifest.experts, manifest.lora, placement.module_dtype
        )
        load_adapter_weights(vlm, cfg.adapter_path)
        return vlm.eval()
    backbone = load_backbone(cfg, placement)
    if backbone.answers_zero_shot:
        return SemanticVLM(backbone).eval()
    logger.warning(
        "backbone 'paper' without an adapter: projector, prompter and experts are untrained, so "
        "answers are meaningless; train an adapter or use backbone 'qwen2.5-vl' zero-shot"
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # untrained modules, but reproducible from run to run
        vlm = SemanticVLM.with_adapter_modules(
            backbone, cfg.prompter, cfg.experts, None, placement.module_dtype
        )
    return vlm.eval()


def new_trainable_vlm(cfg: EngineConfig, placement: Placement) -> SemanticVLM:
    """A base with fresh adapter modules from ``cfg`` (LoRA only when ``cfg.lora`` is set, for
    training); all groups frozen."""
    backbone = load_backbone(cfg, placement)
    return SemanticVLM.with_adapter_modules(
        backbone, cfg.prompter, cfg.experts, cfg.lora, placement.module_dtype
    )
