"""Model code: backbones, multi-level visual prompter, semantic experts, LoRA, the composed VLM.

Imports torch and transformers; ``engine/__init__.py`` does not import this package eagerly.
"""

from engine.model.backbones import (
    Backbone,
    EncodedImages,
    ImageBatch,
    backbone_class,
    load_backbone,
)
from engine.model.experts import ExpertMLP, SemanticExperts, attach_experts
from engine.model.inputs import IGNORE_INDEX, Sample, VLMBatch, build_batch
from engine.model.loading import Placement, resolve_placement
from engine.model.prompter import MultiLevelVisualPrompter, PrompterInputs
from engine.model.roles import IMAGE, SEMANTIC, TEXT, TokenRoles, semantic_role
from engine.model.vlm import PARAMETER_GROUPS, SemanticVLM

__all__ = [
    "IGNORE_INDEX",
    "IMAGE",
    "PARAMETER_GROUPS",
    "SEMANTIC",
    "TEXT",
    "Backbone",
    "EncodedImages",
    "ExpertMLP",
    "ImageBatch",
    "MultiLevelVisualPrompter",
    "Placement",
    "PrompterInputs",
    "Sample",
    "SemanticExperts",
    "SemanticVLM",
    "TokenRoles",
    "VLMBatch",
    "attach_experts",
    "backbone_class",
    "build_batch",
    "load_backbone",
    "resolve_placement",
    "semantic_role",
]
